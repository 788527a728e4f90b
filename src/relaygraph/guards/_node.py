"""The base of every guard node: a LangChain `Runnable` with sync and async paths that
returns ``Command(goto=…, update=…)`` and declares where it can route.

Route checking at compile time: each guard instance carries a ``__call__`` whose return
annotation is ``Command[Literal[<its routes>]]``. ``StateGraph.add_node`` reads that
annotation (exactly as it does for a plain function node), records the routes as the
node's destinations, draws them in ``get_graph()``, and ``compile()`` then rejects a
route that is not a node (``Found edge ending at unknown node `crm```). `validate_guards`
checks the same with relaygraph messages, plus scorer paths against the state schema.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from langchain_core.runnables import Runnable, RunnableConfig
from langgraph.constants import END, START
from langgraph.types import Command

from relaygraph._clock import Clock
from relaygraph._errors import ConfigurationError
from relaygraph._graph import RoutingNode, declare_destinations, missing_channels

T = TypeVar("T")

def check_route(param: str, value: Any, *, allow_end: bool = True) -> str:
    """Validate one route parameter (a node name or ``END``)."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(f"{param} must be a node name, got {value!r}")
    if value == START:
        raise ConfigurationError(f"{param} cannot be START ({START!r}); name a node")
    if value == END and not allow_end:
        raise ConfigurationError(f"{param} cannot be END; name a node")
    return value


def check_clock(clock: Any) -> Clock:
    """Validate an injected clock."""
    if not callable(clock):
        raise ConfigurationError(f"clock must be a callable returning seconds, got {clock!r}")
    return clock  # type: ignore[no-any-return]


async def _await(value: Awaitable[T]) -> T:
    return await value


def resolve_sync(value: T | Awaitable[T]) -> T:
    """Resolve a maybe-awaitable from synchronous code (a sync graph calling an async hook)."""
    if not inspect.isawaitable(value):
        return value
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(_await(value))
    # This thread already runs a loop (a sync graph invoked from async code): use another.
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, _await(value)).result()


async def resolve_async(value: T | Awaitable[T]) -> T:
    """Resolve a maybe-awaitable from async code."""
    if inspect.isawaitable(value):
        return await value
    return value


class GuardNode(RoutingNode, Runnable[Any, Command]):
    """Base class of relaygraph's guard nodes. Subclasses implement `_run` and `_arun`."""

    #: label used in ``guard_log`` when neither ``name`` nor the graph node name is known
    kind = "guard"

    def __init__(self, *, name: str | None, clock: Clock) -> None:
        if name is not None and (not isinstance(name, str) or not name.strip()):
            raise ConfigurationError(f"name must be a non-empty string or None, got {name!r}")
        self.name = name
        self.clock = check_clock(clock)
        self._declare_destinations()

    # -- routes --------------------------------------------------------------------------
    def _routes(self) -> dict[str, str]:
        """``parameter -> node`` for every route this guard can take."""
        raise NotImplementedError

    @property
    def destinations(self) -> tuple[str, ...]:
        """The nodes this guard can route to (pass to ``add_node(destinations=…)`` if you
        wrap the guard in something that hides it from LangGraph)."""
        return tuple(dict.fromkeys(self._routes().values()))

    def _declare_destinations(self) -> None:
        declare_destinations(self, self.destinations)

    def validate(self, builder: Any, node: str | None = None) -> None:
        """Check this guard against a ``StateGraph`` builder before it is compiled.

        Raises:
            ConfigurationError: a route names no node of the graph, or a scorer path is
                not a field of the state schema.
        """
        nodes = set(getattr(builder, "nodes", {}) or {})
        label = f"{type(self).__name__} {node or self.name or ''}".rstrip()
        for param, target in self._routes().items():
            if target != END and target not in nodes:
                known = ", ".join(sorted(n for n in nodes if not n.startswith("__")))
                raise ConfigurationError(
                    f"{label}: {param}={target!r} is not a node of the graph "
                    f"(nodes: {known or 'none'}); add the node or fix the route name"
                )
        channels = getattr(builder, "channels", None)
        if isinstance(channels, dict):
            for key in self._channels():
                if key not in channels:
                    raise ConfigurationError(
                        f"{label}: the graph's state has no {key!r} channel, so the guard's "
                        f"writes to it would be dropped (and retries never counted); add "
                        f"relaygraph.graphs.RelayState to the state schema's bases"
                    )
        self._validate_schema(getattr(builder, "state_schema", None), label)

    def _channels(self) -> tuple[str, ...]:
        """State keys this guard writes (and reads back)."""
        return ("guard_log",)

    def _validate_schema(self, schema: Any, label: str) -> None:
        """Hook for subclasses that read state paths."""

    def wrap(self, agent: Any, *, name: str | None = None) -> Any:
        """Run this guard inside ``agent``'s step instead of as its own node.

        Returns a `GuardedAgent`; add it under the agent's node name.
        """
        from relaygraph.guards._wrap import GuardedAgent

        return GuardedAgent(agent, self, name=name)

    # -- running -------------------------------------------------------------------------
    def label(self, config: RunnableConfig | None) -> str:
        """The guard's name in ``guard_log``: ``name``, else the graph node's name."""
        if self.name:
            return self.name
        node = ((config or {}).get("metadata") or {}).get("langgraph_node")
        return node if isinstance(node, str) and node else self.kind

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Command:
        """Score the state and return the routing `Command`."""
        self._check_counted_channels(config)
        return self._run(input, config)

    async def ainvoke(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Command:
        """Async twin of `invoke`: async scorers, checks and stores are awaited."""
        self._check_counted_channels(config)
        return await self._arun(input, config)

    def _counted_channels(self) -> tuple[str, ...]:
        """State keys this guard counts its retries from: without them it would loop."""
        return ()

    def _check_counted_channels(self, config: RunnableConfig | None) -> None:
        # A graph whose state lacks guard_log silently drops the guard's decisions, so
        # the retry budget would never be spent and the guard would send the agent back
        # until LangGraph's recursion limit. Refuse to run instead of looping.
        missing = missing_channels(config, self._counted_channels())
        if missing:
            label = f"{type(self).__name__} {self.label(config)}"
            raise ConfigurationError(
                f"{label}: the graph's state has no {missing[0]!r} channel, so the guard "
                "cannot count its retries and would retry forever; add "
                "relaygraph.graphs.RelayState to the state schema's bases"
            )

    def _run(self, state: Any, config: RunnableConfig | None) -> Command:
        raise NotImplementedError

    async def _arun(self, state: Any, config: RunnableConfig | None) -> Command:
        raise NotImplementedError

    def get_name(self, suffix: str | None = None, *, name: str | None = None) -> str:
        """Runnable name used in traces."""
        base = name or self.name or type(self).__name__
        return f"{base}{suffix}" if suffix else base


def validate_guards(builder: Any) -> None:
    """Check every relaygraph guard in a ``StateGraph`` builder; call it before ``compile()``.

    ``compile()`` already rejects unknown route names (guards declare their destinations);
    this adds relaygraph's messages and checks scorer paths against the state schema.

    Raises:
        ConfigurationError: naming the guard node, the parameter and the bad value.
    """
    for node, spec in _guard_specs(builder.nodes.items()):
        spec.validate(builder, node)


def _guard_specs(items: Iterable[tuple[str, Any]]) -> Iterable[tuple[str, GuardNode]]:
    for node, spec in items:
        runnable = getattr(spec, "runnable", spec)
        if isinstance(runnable, GuardNode):
            yield node, runnable


def state_get(state: Any, key: str, default: Any = None) -> Any:
    """Read a top-level state key from a dict state or a pydantic/dataclass state."""
    if isinstance(state, dict):
        return state.get(key, default)
    return getattr(state, key, default)

