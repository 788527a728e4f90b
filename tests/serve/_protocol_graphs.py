"""Graphs the protocol tests serve (the server subprocess imports them by spec)."""

from __future__ import annotations

import asyncio

from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict


class CounterState(TypedDict, total=False):
    n: int
    stop: int


async def _tick(state: CounterState) -> CounterState:
    if state.get("stop", 0) < 0:
        raise ValueError(f"stop must be >= 0, got {state['stop']}")
    await asyncio.sleep(0.01)  # paces the loop so a run stays busy; no test waits on it
    return {"n": state.get("n", 0) + 1}


def _again(state: CounterState) -> str:
    return "tick" if state.get("n", 0) < state.get("stop", 0) else END


def counter_graph() -> StateGraph:
    """``tick`` adds one to ``n`` until ``n >= stop`` (at least one tick per run).

    A run with a large ``stop`` keeps the thread busy until it is cancelled; a run with
    ``stop = 0`` ticks once on top of whatever state it finds, so ``n`` tells which earlier
    checkpoints a run started from. A negative ``stop`` makes ``tick`` fail.
    """
    b = StateGraph(CounterState)
    b.add_node("tick", _tick)
    b.add_edge(START, "tick")
    b.add_conditional_edges("tick", _again)
    return b


def nested_graph() -> StateGraph:
    """The counter as a subgraph node ``inner`` of an outer graph."""
    b = StateGraph(CounterState)
    b.add_node("inner", counter_graph().compile())
    b.add_edge(START, "inner")
    return b
