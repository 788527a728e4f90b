"""`GuardedAgent`: an agent and the guard after it, run as one graph step.

A guard as its own node costs a LangGraph step (and a checkpoint) per verdict, which on
a fast deterministic workload is as much as the agent's own step. Wrapping the agent
runs the guard on the agent's output inside the agent's step: one step, one
checkpoint, the same `GuardDecision` in ``guard_log`` and the same routes.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Mapping
from typing import Any

from langchain_core.runnables import Runnable, RunnableConfig
from langgraph.types import Command

from relaygraph._errors import ConfigurationError, RelaygraphError
from relaygraph.guards._node import GuardNode, resolve_sync


def overlay(state: Any, update: Mapping[str, Any]) -> Any:
    """The state as the guard should see it after ``update``.

    Keys the agent wrote replace their values, except lists, whose new items are appended
    (what the usual append reducers, ``add_messages`` included, do for new items). The
    graph still applies the real reducers to the real update.
    """
    if not update:
        return state
    if isinstance(state, Mapping):
        merged = dict(state)
        for key, value in update.items():
            old = merged.get(key)
            if isinstance(old, list) and isinstance(value, list):
                merged[key] = old + value
            else:
                merged[key] = value
        return merged
    copy = getattr(state, "model_copy", None)
    if callable(copy):
        changes = {}
        for key, value in update.items():
            old = getattr(state, key, None)
            both_lists = isinstance(old, list) and isinstance(value, list)
            changes[key] = old + value if both_lists else value
        return copy(update=changes)
    raise RelaygraphError(
        f"GuardedAgent cannot overlay an update on a {type(state).__name__} state; "
        "use a TypedDict or pydantic state, or a separate guard node"
    )


def _combine(agent_update: Mapping[str, Any], guard_update: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(agent_update)
    for key, value in guard_update.items():
        if key in out and isinstance(out[key], list) and isinstance(value, list):
            out[key] = out[key] + value
        elif key in out and isinstance(out[key], dict) and isinstance(value, dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


def _as_update(result: Any, agent: str) -> dict[str, Any]:
    if result is None:
        return {}
    if isinstance(result, Command):
        if result.goto:
            raise RelaygraphError(
                f"agent {agent} returned Command(goto={result.goto!r}); a guarded agent must "
                "return a state update and leave routing to its guard"
            )
        result = result.update or {}
    if isinstance(result, Mapping):
        return dict(result)
    dump = getattr(result, "model_dump", None)
    if callable(dump):
        return dict(dump(exclude_unset=True))
    raise RelaygraphError(
        f"agent {agent} returned {type(result).__name__}; return a dict of state updates"
    )


class GuardedAgent(GuardNode):
    """Runs ``agent`` and then ``guard`` on its output, in the same graph step.

    The guard sees the state with the agent's update laid over it (see `overlay`), and
    the node returns ``Command(goto=<guard's route>, update=<agent's update + the guard's
    decision>)``. A retry routes back to this node: name it in the guard's ``on_retry``.

    Args:
        agent: a node function (sync or async; ``(state)`` or ``(state, config)``) or a
            ``Runnable``, returning a state update.
        guard: the guard to apply to its output (`ConfidenceGuard`, `BudgetGuard`, …).
        name: shown in traces (the guard's decisions use the guard's name, else the node's).

    Example:
        >>> builder.add_node("resolver", GuardedAgent(resolver, ConfidenceGuard(
        ...     score="case.confidence", threshold=0.8, on_pass="crm",
        ...     on_retry="resolver", on_escalate="review")))   # doctest: +SKIP
    """

    kind = "guarded_agent"

    def __init__(self, agent: Any, guard: GuardNode, *, name: str | None = None) -> None:
        if not isinstance(guard, GuardNode):
            raise ConfigurationError(
                f"guard must be a relaygraph guard (ConfidenceGuard, BudgetGuard, …), "
                f"got {guard!r:.60}"
            )
        if not (isinstance(agent, Runnable) or callable(agent)):
            raise ConfigurationError(f"agent must be a callable or a Runnable, got {agent!r:.60}")
        self.agent = agent
        self.guard = guard
        self._agent_name = getattr(agent, "__name__", None) or type(agent).__name__
        call = type(agent).__call__ if not inspect.isfunction(agent) else agent
        self._is_async = inspect.iscoroutinefunction(agent) or inspect.iscoroutinefunction(call)
        self._takes_config = False
        if not isinstance(agent, Runnable):
            try:
                params = inspect.signature(agent).parameters
            except (TypeError, ValueError):
                params = {}  # type: ignore[assignment]
            self._takes_config = "config" in params
        super().__init__(name=name, clock=guard.clock)

    def _routes(self) -> dict[str, str]:
        return self.guard._routes()

    def _validate_schema(self, schema: Any, label: str) -> None:
        self.guard._validate_schema(schema, label)

    def _channels(self) -> tuple[str, ...]:
        return self.guard._channels()

    def _counted_channels(self) -> tuple[str, ...]:
        return self.guard._counted_channels()

    def _args(self, state: Any, config: RunnableConfig | None) -> tuple[Any, ...]:
        return (state, config) if self._takes_config else (state,)

    def _run(self, state: Any, config: RunnableConfig | None) -> Command:
        if isinstance(self.agent, Runnable):
            result = self.agent.invoke(state, config)
        else:
            result = resolve_sync(self.agent(*self._args(state, config)))
        update = _as_update(result, self._agent_name)
        verdict = self.guard._run(overlay(state, update), config)
        return Command(goto=verdict.goto, update=_combine(update, verdict.update or {}))

    async def _arun(self, state: Any, config: RunnableConfig | None) -> Command:
        if isinstance(self.agent, Runnable):
            result = await self.agent.ainvoke(state, config)
        elif self._is_async:
            result = await self.agent(*self._args(state, config))
        else:
            result = await asyncio.to_thread(self.agent, *self._args(state, config))
            if inspect.isawaitable(result):
                result = await result
        update = _as_update(result, self._agent_name)
        verdict = await self.guard._arun(overlay(state, update), config)
        return Command(goto=verdict.goto, update=_combine(update, verdict.update or {}))
