"""``track_agent()``: usage, cost and a run record inside an agent node's own update."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.runnables import Runnable, RunnableConfig
from langgraph.types import Command

from relaygraph._clock import Clock, iso, system_clock
from relaygraph._errors import ConfigurationError
from relaygraph.observe._langsmith import annotate_run
from relaygraph.observe._pricing import Pricing
from relaygraph.state import AgentRun, Usage, UsageTable

#: Channels written by relaygraph itself; not counted as what an agent "received".
BOOKKEEPING_KEYS = frozenset({"guard_log", "handoffs", "reviews", "usage", "agent_runs"})

_DEFAULT_PRICING = Pricing()


def _coerce(node: Any, name: str) -> Runnable:
    try:  # LangGraph's own coercion injects config/runtime/store like a plain node
        from langgraph._internal._runnable import coerce_to_runnable
    except ImportError:  # pragma: no cover - LangGraph moved it
        from langchain_core.runnables import RunnableLambda

        return node if isinstance(node, Runnable) else RunnableLambda(node, name=name)
    return coerce_to_runnable(node, name=name, trace=False)


def _state_items(state: Any) -> Mapping[str, Any]:
    if isinstance(state, Mapping):
        return state
    if hasattr(state, "model_dump"):
        return {k: getattr(state, k) for k in type(state).model_fields}
    if hasattr(state, "__dict__"):
        return vars(state)
    return {}


def _present(value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, list | tuple | dict | set | str) and len(value) == 0:
        return False
    return True


def _messages_in(value: Any) -> Iterable[BaseMessage]:
    if isinstance(value, BaseMessage):
        yield value
    elif isinstance(value, list | tuple):
        for item in value:
            if isinstance(item, BaseMessage):
                yield item


def _known_messages(state: Mapping[str, Any]) -> dict[str, BaseMessage]:
    known: dict[str, BaseMessage] = {}
    for value in state.values():
        for msg in _messages_in(value):
            if msg.id:
                known[msg.id] = msg
    return known


def _model_name(msg: AIMessage) -> str | None:
    meta = msg.response_metadata or {}
    for key in ("model_name", "model", "model_id"):
        if meta.get(key):
            return str(meta[key])
    return None


def _update_of(result: Any) -> tuple[Mapping[str, Any] | None, Any]:
    """The state update inside a node result, and a function-free description of it."""
    if isinstance(result, Command):
        upd = result.update
        if upd is None:
            return {}, result
        if isinstance(upd, Mapping):
            return upd, result
        if isinstance(upd, list | tuple):
            return dict(upd), result
        return None, result
    if result is None:
        return {}, result
    if isinstance(result, Mapping):
        return result, result
    return None, result


def _with_records(result: Any, extra: dict[str, Any]) -> Any:
    if isinstance(result, Command):
        upd = result.update
        if upd is None:
            new_upd: Any = dict(extra)
        elif isinstance(upd, Mapping):
            new_upd = {**upd, **extra}
        else:
            new_upd = [*list(upd), *extra.items()]
        return Command(graph=result.graph, update=new_upd, resume=result.resume,
                       goto=result.goto)
    if result is None:
        return dict(extra)
    return {**result, **extra}


class TrackedAgent(Runnable[Any, Any]):
    """An agent node wrapped by :func:`track_agent` (sync and async)."""

    def __init__(self, node: Any, *, name: str, pricing: Pricing, timer: Callable[[], float],
                 clock: Clock) -> None:
        self.node = node
        self.name = name
        self.agent = name
        self.pricing = pricing
        self._inner = _coerce(node, name)
        self._timer = timer
        self._clock = clock

    def __repr__(self) -> str:
        return f"track_agent({self.node!r}, name={self.agent!r})"

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        """Run the agent and add its usage and run record to its update."""
        start = self._timer()
        result = self._inner.invoke(input, config, **kwargs)
        return self._record(input, result, self._timer() - start, config)

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None,
                      **kwargs: Any) -> Any:
        """Async twin of :meth:`invoke`."""
        start = self._timer()
        result = await self._inner.ainvoke(input, config, **kwargs)
        return self._record(input, result, self._timer() - start, config)

    def _record(self, state: Any, result: Any, elapsed: float,
                config: RunnableConfig | None) -> Any:
        update, _ = _update_of(result)
        if update is None:
            return result  # not a state update we can extend (e.g. a custom object)
        received = _state_items(state)
        seen = _known_messages(received)
        usage: dict[str, Usage] = {}
        tool_calls: list[str] = []
        models: list[str] = []
        for value in update.values():
            for msg in _messages_in(value):
                if not isinstance(msg, AIMessage):
                    continue
                if msg.id and msg.id in seen and seen[msg.id] == msg:
                    continue  # handed back unchanged from the input: counted before
                tool_calls.extend(tc["name"] for tc in msg.tool_calls)
                meta = msg.usage_metadata
                model = _model_name(msg)
                if meta is None and model is None:
                    continue  # not a model call (a scripted or hand-written message)
                model = model or "unknown"
                if model not in models:
                    models.append(model)
                tin = int(meta["input_tokens"]) if meta else 0
                tout = int(meta["output_tokens"]) if meta else 0
                cur = usage.setdefault(model, Usage(calls=0, input_tokens=0, output_tokens=0,
                                                    cost=0.0))
                cur["calls"] += 1
                cur["input_tokens"] += tin
                cur["output_tokens"] += tout
                cur["cost"] += self.pricing.cost(model, tin, tout)
        node = str(((config or {}).get("metadata") or {}).get("langgraph_node") or self.agent)
        run = AgentRun(
            agent=self.agent,
            node=node,
            input_keys=sorted(k for k, v in received.items()
                              if k not in BOOKKEEPING_KEYS and _present(v)),
            output_keys=sorted(str(k) for k in update),
            tool_calls=tool_calls,
            models=models,
            calls=sum(u["calls"] for u in usage.values()),
            input_tokens=sum(u["input_tokens"] for u in usage.values()),
            output_tokens=sum(u["output_tokens"] for u in usage.values()),
            cost=sum(u["cost"] for u in usage.values()),
            latency_ms=round(elapsed * 1000.0, 3),
            at=iso(self._clock()),
            pricing_as_of=str(self.pricing.as_of),
        )
        extra: dict[str, Any] = {"agent_runs": [run]}
        if usage:
            table: UsageTable = {self.agent: usage}
            extra["usage"] = table
        annotate_run(
            {"agent": self.agent, "models": models, "input_tokens": run["input_tokens"],
             "output_tokens": run["output_tokens"], "cost": run["cost"],
             "tool_calls": tool_calls, "latency_ms": run["latency_ms"]},
            tags=[f"relaygraph:agent:{self.agent}"],
        )
        return _with_records(result, extra)


def track_agent(node: Any, *, name: str | None = None, pricing: Pricing | None = None,
                timer: Callable[[], float] = time.perf_counter,
                clock: Clock = system_clock) -> TrackedAgent:
    """Wrap an agent node so that its usage, cost and a run record go into its own update.

    The wrapped node returns what the agent returned plus an ``agent_runs`` record
    (:class:`~relaygraph.graphs.AgentRun`: input keys, output keys, tool calls, models,
    tokens, cost, latency) and, when it called a model, ``usage[agent][model]``
    increments. Because the records travel in the node's own update, they are checkpointed
    with it: a node interrupted and resumed, or retried, is counted once per completed run.

    Tokens come from ``AIMessage.usage_metadata`` of the new AI messages the agent returns;
    the model name from ``response_metadata`` (``model_name`` or ``model``).

    Args:
        node: a sync or async function ``(state[, config]) -> update``, or a Runnable.
        name: the agent name used in ``usage`` and ``agent_runs`` (default: the function's
            name).
        pricing: price table for the cost (default: :class:`~relaygraph.observe.Pricing`
            with its built-in prices).
        timer: monotonic seconds for latency (inject a fake in tests).
        clock: wall clock for the ``at`` timestamp.

    Example:
        >>> builder.add_node("resolver", track_agent(resolver, name="resolver"))  # doctest: +SKIP
    """
    if node is None or not (callable(node) or isinstance(node, Runnable)):
        raise ConfigurationError(
            f"track_agent() needs a node function or Runnable, got {node!r}"
        )
    if name is None:
        name = getattr(node, "name", None) or getattr(node, "__name__", None)
        if not isinstance(name, str) or not name or name == "<lambda>":
            raise ConfigurationError(
                f"track_agent() could not infer an agent name from {node!r}; pass name='...'"
            )
    if not isinstance(name, str) or not name:
        raise ConfigurationError(f"name must be a non-empty string, got {name!r}")
    if pricing is not None and not isinstance(pricing, Pricing):
        raise ConfigurationError(
            f"pricing must be a relaygraph.observe.Pricing, got {type(pricing).__name__}"
        )
    return TrackedAgent(node, name=name, pricing=pricing or _DEFAULT_PRICING, timer=timer,
                        clock=clock)
