"""Graphs the live-server tests serve (imported by the server subprocess by spec)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.types import interrupt


class GateState(TypedDict, total=False):
    n: int
    answer: str


async def _wait_for_gate(state: GateState) -> GateState:
    # blocks until the test creates the gate file: a run that is "in progress" for as long
    # as the test needs, without timing assumptions
    gate = Path(os.environ["RELAYGRAPH_TEST_GATE"])
    for _ in range(3000):
        if os.path.exists(gate):  # noqa: ASYNC240 - a test gate, polled
            break
        await asyncio.sleep(0.01)
    return {"n": state.get("n", 0) + 1}


def gate_graph() -> StateGraph:
    """``wait`` (until the gate file exists) → ``ask`` (an interrupt) → end."""
    b = StateGraph(GateState)
    b.add_node("wait", _wait_for_gate)
    b.add_node("ask", lambda s: {"answer": interrupt({"question": "go on?"})})
    b.add_edge(START, "wait")
    b.add_edge("wait", "ask")
    b.add_edge("ask", END)
    return b


async def _tick(state: GateState) -> GateState:
    await asyncio.sleep(0.02)
    return {"n": state.get("n", 0) + 1}


def _again(state: GateState) -> str:
    return "tick" if state.get("n", 0) < 10_000 else END


def loop_graph() -> StateGraph:
    """``tick`` loops 10,000 times (about 200 s): only a run timeout or a drain stops it."""
    b = StateGraph(GateState)
    b.add_node("tick", _tick)
    b.add_edge(START, "tick")
    b.add_conditional_edges("tick", _again)
    return b
