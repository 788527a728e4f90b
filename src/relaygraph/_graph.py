"""Helpers for relaygraph nodes that run inside a user's ``StateGraph``.

- `declare_destinations` lets ``StateGraph.add_node`` see where a node that returns
  ``Command(goto=…)`` can route, so ``compile()`` rejects a route to a node that does not
  exist and ``get_graph()`` draws the routes.
- `missing_channels` tells a running node which state keys the graph has no channel for,
  so a node whose writes would be dropped can refuse to run.
"""

from __future__ import annotations

import types
from collections.abc import Iterable
from typing import Any, Literal

from langchain_core.runnables import RunnableConfig
from langgraph.types import Command

# LangGraph passes every node a reader of the graph's channels under this configurable key
# (langgraph._internal._constants.CONFIG_KEY_READ); reading a key with no channel raises
# KeyError, which is how a node learns at run time that its writes would be dropped.
_CONFIG_KEY_READ = "__pregel_read"


class RoutingNode:
    """Mixin for a Runnable node that routes with ``Command(goto=…)``.

    ``StateGraph.add_node`` reads a node's return annotation from its class's ``__call__``;
    this one runs the node (``self.invoke``), and `declare_destinations` gives each
    instance the annotation naming its routes.
    """

    def __call__(self, state: Any, config: RunnableConfig | None = None) -> Any:
        """Run the node synchronously (``self.invoke``)."""
        return self.invoke(state, config)  # type: ignore[attr-defined]


def declare_destinations(node: Any, destinations: Iterable[str | None]) -> tuple[str, ...]:
    """Annotate ``node`` so that ``StateGraph.add_node`` records where it routes.

    Gives the instance a ``__call__`` whose return annotation is
    ``Command[Literal[<destinations>]]``, which ``add_node`` reads exactly as it does for a
    plain function node. The node's class must define ``__call__`` too (``add_node`` reads
    the signature from the class): mix in `RoutingNode`. Routes that are None are left
    out; with none left the node is not annotated and the graph's edges decide.

    Returns:
        The destinations, without duplicates, in order.
    """
    dests = tuple(dict.fromkeys(d for d in destinations if d is not None))
    if not dests:
        return dests

    def __call__(self: Any, state: Any, config: RunnableConfig | None = None) -> Any:
        return self.invoke(state, config)

    __call__.__annotations__ = {"return": Command[Literal[dests]]}  # type: ignore[valid-type]
    # An instance attribute shadows the class's __call__ for getattr(), which is where
    # StateGraph.add_node looks for the return annotation.
    node.__call__ = types.MethodType(__call__, node)
    return dests


def missing_channels(config: RunnableConfig | None, keys: Iterable[str]) -> list[str]:
    """The ``keys`` that the running graph has no state channel for.

    Empty outside a graph run (a node invoked directly has nothing to compare with).
    """
    read = ((config or {}).get("configurable") or {}).get(_CONFIG_KEY_READ)
    if not callable(read):
        return []
    missing = []
    for key in keys:
        try:
            read(key, False)
        except KeyError:
            missing.append(key)
        except Exception:  # noqa: BLE001 - an unexpected reader: do not block the run
            continue
    return missing
