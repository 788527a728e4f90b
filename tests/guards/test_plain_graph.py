"""Guards in a StateGraph that relaygraph did not build; decisions in checkpoint history."""

from __future__ import annotations

import operator
from collections.abc import Iterator
from typing import Annotated, Any, TypedDict

import pytest
import sqlalchemy as sa
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph

from relaygraph.checkpointers import SQLAlchemySaver
from relaygraph.guards import BudgetGuard, ConfidenceGuard


class PlainState(TypedDict, total=False):
    """A user's own schema: only plain LangGraph reducers, no relaygraph mixin."""

    draft: dict[str, Any]
    attempts: int
    guard_log: Annotated[list[dict[str, Any]], operator.add]
    guard_feedback: Annotated[dict[str, str], lambda a, b: {**(a or {}), **(b or {})}]


def writer(state: PlainState) -> dict[str, Any]:
    n = state.get("attempts", 0)
    return {"draft": {"confidence": [0.4, 0.9][n]}, "attempts": n + 1}


def build(checkpointer: Any, clock: Any) -> Any:
    b = StateGraph(PlainState)
    b.add_node("writer", writer)
    b.add_node("budget", BudgetGuard(max_tokens=1000, on_pass="check", clock=clock))
    b.add_node("check", ConfidenceGuard(score="draft.confidence", threshold=0.7,
                                        on_pass=END, on_retry="writer", clock=clock))
    b.add_edge(START, "writer")
    b.add_edge("writer", "budget")
    return b.compile(checkpointer=checkpointer)


@pytest.fixture(params=["memory", "sqlalchemy"])
def checkpointer(request, sqlite_backend) -> Iterator[Any]:
    if request.param == "memory":
        yield InMemorySaver()
        return
    engine = sa.create_engine(sqlite_backend.url)
    saver = SQLAlchemySaver(engine)
    saver.setup()
    yield saver
    engine.dispose()


def test_decisions_are_in_checkpoint_history(checkpointer, clock):
    graph = build(checkpointer, clock)
    config = {"configurable": {"thread_id": "t1"}}
    out = graph.invoke({"attempts": 0}, config)
    assert [(d["guard"], d["route"]) for d in out["guard_log"]] == [
        ("budget", "pass"), ("check", "retry"), ("budget", "pass"), ("check", "pass"),
    ]
    history = list(graph.get_state_history(config))[::-1]  # oldest first
    # each guard step's checkpoint holds exactly the decisions made so far
    seen = [
        (snap.metadata["step"], len(snap.values.get("guard_log", [])), snap.next)
        for snap in history
    ]
    assert seen == [
        (-1, 0, ("__start__",)),
        (0, 0, ("writer",)),
        (1, 0, ("budget",)),
        (2, 1, ("check",)),
        (3, 2, ("writer",)),
        (4, 2, ("budget",)),
        (5, 3, ("check",)),
        (6, 4, ()),
    ]
    retry_snap = history[4]
    assert retry_snap.values["guard_log"][-1]["reason"] == "score 0.4 < threshold 0.7"
    assert retry_snap.values["guard_feedback"] == {"writer": "score 0.4 < threshold 0.7"}
    assert history[-1].values["guard_feedback"] == {"writer": ""}


async def test_async_decisions_in_history(clock):
    graph = build(InMemorySaver(), clock)
    config = {"configurable": {"thread_id": "t2"}}
    await graph.ainvoke({"attempts": 0}, config)
    states = [s async for s in graph.aget_state_history(config)]
    routes = [d["route"] for d in states[0].values["guard_log"]]
    assert routes == ["pass", "retry", "pass", "pass"]


class MinimalState(TypedDict, total=False):
    draft: dict[str, Any]
    guard_log: Annotated[list[dict[str, Any]], operator.add]


def test_state_without_feedback_key_when_no_retry(clock):
    """A graph without retries needs only the guard_log channel."""
    b = StateGraph(MinimalState)
    b.add_node("check", ConfidenceGuard(score="draft.confidence", threshold=0.5, on_pass=END,
                                        clock=clock))
    b.add_edge(START, "check")
    out = b.compile().invoke({"draft": {"confidence": 0.2}})
    assert [d["route"] for d in out["guard_log"]] == ["halt"]


def test_missing_channels_are_reported_before_compile(clock):
    from relaygraph import ConfigurationError
    from relaygraph.guards import validate_guards

    class NoLog(TypedDict, total=False):
        draft: dict[str, Any]

    def untyped_writer(state):  # an annotated one would add PlainState's channels
        return {"draft": {"confidence": 0.1}}

    b = StateGraph(NoLog)
    b.add_node("writer", untyped_writer)
    b.add_node("check", ConfidenceGuard(score="draft.confidence", threshold=0.7,
                                        on_pass=END, on_retry="writer", clock=clock))
    b.add_edge(START, "writer")
    b.add_edge("writer", "check")
    with pytest.raises(ConfigurationError, match="state has no 'guard_log' channel"):
        validate_guards(b)
    b2 = StateGraph(MinimalState)  # guard_log but no guard_feedback, and a retry route
    b2.add_node("writer", untyped_writer)
    b2.add_node("check", ConfidenceGuard(score="draft.confidence", threshold=0.7,
                                         on_pass=END, on_retry="writer", clock=clock))
    b2.add_edge(START, "writer")
    with pytest.raises(ConfigurationError, match="no 'guard_feedback' channel"):
        validate_guards(b2)
