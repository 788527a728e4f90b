"""Guards reused outside ``pipeline()``: no unbounded retries, and mixins beside LangGraph's."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.graph import END, START, MessagesState, StateGraph
from typing_extensions import TypedDict

from relaygraph import ConfigurationError
from relaygraph.graphs import RelayState
from relaygraph.guards import ConfidenceGuard, GuardedAgent, validate_guards


class NoLog(TypedDict, total=False):
    confidence: float


def _unsure_agent(calls: list[int]) -> Any:
    def agent(state: Any) -> dict[str, Any]:
        calls.append(1)
        return {"confidence": 0.1}

    return agent


def _guard(**kw: Any) -> ConfidenceGuard:
    return ConfidenceGuard(score="confidence", threshold=0.8, on_pass=END, on_retry="agent",
                           max_retries=2, **kw)


def _no_log_graph(calls: list[int]) -> Any:
    b = StateGraph(NoLog)
    b.add_node("agent", _unsure_agent(calls))
    b.add_node("check", _guard())
    b.add_edge(START, "agent")
    b.add_edge("agent", "check")
    return b.compile()


def test_a_guard_in_a_state_without_guard_log_refuses_to_run_instead_of_looping() -> None:
    calls: list[int] = []
    with pytest.raises(ConfigurationError, match="no 'guard_log' channel.*retry forever"):
        _no_log_graph(calls).invoke({}, {"recursion_limit": 1000})
    assert len(calls) == 1  # stopped at the first verdict, not at the recursion limit


async def test_the_async_path_refuses_as_well() -> None:
    calls: list[int] = []
    with pytest.raises(ConfigurationError, match="no 'guard_log' channel"):
        await _no_log_graph(calls).ainvoke({}, {"recursion_limit": 1000})
    assert len(calls) == 1


def test_a_guarded_agent_without_guard_log_refuses_too() -> None:
    calls: list[int] = []
    b = StateGraph(NoLog)
    b.add_node("agent", GuardedAgent(_unsure_agent(calls), _guard()))
    b.add_edge(START, "agent")
    with pytest.raises(ConfigurationError, match="no 'guard_log' channel"):
        b.compile().invoke({}, {"recursion_limit": 1000})
    assert calls == []  # refused before the agent ran


def test_the_missing_key_is_caught_at_build_time_when_the_schema_is_known() -> None:
    with pytest.raises(ConfigurationError, match="has no 'guard_log' key"):
        _guard(schema=NoLog)
    b = StateGraph(NoLog)
    b.add_node("agent", _unsure_agent([]))
    b.add_node("check", _guard())
    b.add_edge(START, "agent")
    with pytest.raises(ConfigurationError, match="no 'guard_log' channel"):
        validate_guards(b)


def test_a_guard_that_cannot_retry_still_runs_without_guard_log() -> None:
    b = StateGraph(NoLog)
    b.add_node("agent", lambda s: {"confidence": 0.9})
    b.add_node("check", ConfidenceGuard(score="confidence", threshold=0.8, on_pass=END))
    b.add_edge(START, "agent")
    b.add_edge("agent", "check")
    assert b.compile().invoke({}) == {"confidence": 0.9}


class Chat(MessagesState, RelayState):
    """relaygraph's mixin beside LangGraph's own (both typing_extensions TypedDicts)."""

    confidence: float


def test_relay_state_mixes_with_messages_state_and_counts_retries() -> None:
    calls: list[int] = []

    def agent(state: Any) -> dict[str, Any]:
        calls.append(1)
        return {"confidence": 0.1, "messages": [AIMessage(f"try {len(calls)}")]}

    b = StateGraph(Chat)
    b.add_node("agent", agent)
    b.add_node("check", _guard(schema=Chat))
    b.add_edge(START, "agent")
    b.add_edge("agent", "check")
    out = b.compile().invoke({"messages": [HumanMessage("hi")]})
    assert len(calls) == 3  # the first run and max_retries=2 retries, then a halt
    assert [g["route"] for g in out["guard_log"]] == ["retry", "retry", "halt"]
    assert [m.content for m in out["messages"]] == ["hi", "try 1", "try 2", "try 3"]
