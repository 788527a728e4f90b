"""A fan-out graph for reconcile tests: researchers write drafts, ``merge`` reconciles.

``researcher(agent)`` returns one draft (a ``{"source", "contract", "provenance"}``
record); ``merge`` is the reconcile node, routing to ``writer`` (which sets ``report`` to
``report_of(brief)``) or to ``halt``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from langgraph.graph import END, START, StateGraph
from langgraph.types import Send
from typing_extensions import TypedDict


class Task(TypedDict):
    agent: str


def fan_out_graph(state: type, agents: Sequence[str], researcher: Callable[[str], Any],
                  merge: Any, report_of: Callable[[Any], str]) -> StateGraph:
    def fan_out(_: Any) -> list[Send]:
        return [Send("researcher", {"agent": a}) for a in agents]

    def research(task: Task) -> dict[str, Any]:
        return {"drafts": [researcher(task["agent"])]}

    def writer(s: Any) -> dict[str, Any]:
        assert s["brief"] is not None
        return {"report": report_of(s["brief"])}

    builder = StateGraph(state)
    builder.add_node("researcher", research)
    builder.add_node("merge", merge, destinations=("writer", "halt"))
    builder.add_node("writer", writer)
    builder.add_node("halt", lambda s: {"report": "halted"})
    builder.add_conditional_edges(START, fan_out, ["researcher"])
    builder.add_edge("researcher", "merge")
    builder.add_edge("writer", END)
    builder.add_edge("halt", END)
    return builder
