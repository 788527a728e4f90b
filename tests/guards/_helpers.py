"""Helpers for guard tests: a small resolver graph and ways to run it."""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from typing import Annotated, Any

from langgraph.graph import START, StateGraph

from relaygraph.graphs import RelayState


class CaseState(RelayState):
    case: dict[str, Any]
    calls: Annotated[list[str], operator.add]


def resolver_graph(
    guard: Any,
    scores: Sequence[Any],
    *,
    gate: Any = None,
    checkpointer: Any = None,
) -> Any:
    """resolver -> check(guard) -> crm | resolver | review.

    The resolver's n-th call writes ``case.confidence = scores[n]`` and records the
    feedback it was given; with ``gate`` the graph starts at a gate before the resolver.
    """

    def resolver(state: CaseState) -> dict[str, Any]:
        n = sum(1 for c in state.get("calls", []) if c.startswith("resolver"))
        feedback = (state.get("guard_feedback") or {}).get("resolver", "")
        return {
            "case": {"confidence": scores[n], "amount": 10 * (n + 1)},
            "calls": [f"resolver:{feedback}" if feedback else "resolver"],
        }

    def named(name: str) -> Callable[[CaseState], dict[str, Any]]:
        return lambda state: {"calls": [name]}

    b = StateGraph(CaseState)
    b.add_node("resolver", resolver)
    b.add_node("check", guard)
    b.add_node("crm", named("crm"))
    b.add_node("review", named("review"))
    if gate is not None:
        b.add_node("gate", gate)
        b.add_edge(START, "gate")
    else:
        b.add_edge(START, "resolver")
    b.add_edge("resolver", "check")
    return b.compile(checkpointer=checkpointer)


async def run(graph: Any, mode: str, inp: Any = None, config: Any = None) -> dict[str, Any]:
    inp = {"calls": []} if inp is None else inp
    if mode == "sync":
        return graph.invoke(inp, config)  # type: ignore[no-any-return]
    return await graph.ainvoke(inp, config)  # type: ignore[no-any-return]


def routes(out: dict[str, Any]) -> list[str]:
    return [d["route"] for d in out.get("guard_log", [])]
