"""GuardedAgent: an agent and its guard in one graph step."""

from __future__ import annotations

import operator
from typing import Annotated, Any

import pytest
from langchain_core.runnables import RunnableLambda
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, StateGraph
from langgraph.types import Command
from pydantic import BaseModel

from relaygraph import ConfigurationError, RelaygraphError
from relaygraph.graphs import RelayState, append_records
from relaygraph.guards import ConfidenceGuard, GuardedAgent, validate_guards

from ._helpers import run


class S(RelayState):
    case: dict[str, Any]
    calls: Annotated[list[str], operator.add]


def guard(clock: Any, **kw: Any) -> ConfidenceGuard:
    base: dict[str, Any] = dict(score="case.confidence", threshold=0.8, on_pass="crm",
                                on_retry="resolver", on_escalate="review", clock=clock)
    return ConfidenceGuard(**{**base, **kw})


def build(agent: Any, g: ConfidenceGuard, checkpointer: Any = None) -> Any:
    b = StateGraph(S)
    b.add_node("resolver", g.wrap(agent))
    b.add_node("crm", lambda s: {"calls": ["crm"]})
    b.add_node("review", lambda s: {"calls": ["review"]})
    b.add_edge(START, "resolver")
    validate_guards(b)
    return b.compile(checkpointer=checkpointer)


def scripted(scores: list[float]) -> Any:
    def resolver(state: S) -> dict[str, Any]:
        n = len([c for c in state.get("calls", []) if c.startswith("resolver")])
        fb = (state.get("guard_feedback") or {}).get("resolver", "")
        return {"case": {"confidence": scores[n]},
                "calls": [f"resolver:{fb}" if fb else "resolver"]}

    return resolver


async def test_pass_retry_escalate_in_one_step_each(clock, mode):
    saver = InMemorySaver()
    graph = build(scripted([0.5, 0.6]), guard(clock), saver)
    config = {"configurable": {"thread_id": mode}}
    out = await run(graph, mode, {"calls": []}, config)
    assert [d["route"] for d in out["guard_log"]] == ["retry", "escalate"]
    assert [d["guard"] for d in out["guard_log"]] == ["resolver", "resolver"]
    assert out["calls"] == ["resolver", "resolver:score 0.5 < threshold 0.8", "review"]
    # one checkpoint per agent step: the guard did not add steps
    steps = [s.metadata["step"] for s in graph.get_state_history(config)]
    assert max(steps) == 3  # resolver, resolver, review
    out = await run(build(scripted([0.9]), guard(clock)), mode)
    assert out["calls"] == ["resolver", "crm"]


async def test_async_agent_and_runnable_agent(clock, mode):
    async def aresolver(state: S) -> dict[str, Any]:
        return {"case": {"confidence": 0.95}, "calls": ["resolver"]}

    out = await run(build(aresolver, guard(clock)), mode)
    assert [d["route"] for d in out["guard_log"]] == ["pass"]
    runnable = RunnableLambda(lambda s: {"case": {"confidence": 0.1}, "calls": ["resolver"]})
    out = await run(build(runnable, guard(clock, max_retries=0)), mode)
    assert [d["route"] for d in out["guard_log"]] == ["escalate"]


async def test_agent_taking_config(clock, mode):
    def resolver(state: S, config: Any) -> dict[str, Any]:
        return {"case": {"confidence": 0.9}, "calls": [config["metadata"]["langgraph_node"]]}

    out = await run(build(resolver, guard(clock)), mode)
    assert out["calls"] == ["resolver", "crm"]


async def test_guard_sees_the_agents_update_appended(clock, mode):
    def resolver(state: S) -> Command:
        return Command(update={"case": {"confidence": 0.9}, "calls": ["resolver"]})

    seen: list[list[str]] = []

    def score(state: Any) -> float:
        seen.append(list(state["calls"]))
        return state["case"]["confidence"]

    out = await run(build(resolver, guard(clock, score=score)), mode,
                    {"calls": ["earlier"]})
    assert seen == [["earlier", "resolver"]]
    assert out["calls"] == ["earlier", "resolver", "crm"]


async def test_agent_that_routes_itself_is_an_error(clock, mode):
    def resolver(state: S) -> Command:
        return Command(goto="crm", update={})

    with pytest.raises(RelaygraphError, match="must return a state update"):
        await run(build(resolver, guard(clock)), mode)


class PState(BaseModel):
    case: dict[str, float] = {}
    guard_log: Annotated[list[dict[str, Any]], append_records] = []


async def test_pydantic_state(clock, mode):
    b = StateGraph(PState)
    g = ConfidenceGuard(score="case.confidence", threshold=0.8, on_pass="__end__", clock=clock)
    b.add_node("agent", GuardedAgent(lambda s: {"case": {"confidence": 0.85}}, g))
    b.add_edge(START, "agent")
    out = await run(b.compile(), mode, {})
    assert [d["route"] for d in out["guard_log"]] == ["pass"]


def test_configuration(clock):
    with pytest.raises(ConfigurationError, match="guard must be a relaygraph guard"):
        GuardedAgent(lambda s: {}, "guard")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="agent must be a callable"):
        GuardedAgent(42, guard(clock))
    b = StateGraph(S)
    b.add_node("resolver", guard(clock, on_pass="crn").wrap(scripted([1.0])))
    b.add_edge(START, "resolver")
    with pytest.raises(ValueError, match="unknown node"):
        b.compile()
