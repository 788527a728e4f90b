"""``pipeline()``: wiring, routes taken for the right reasons, configuration errors."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

import pytest
from langchain_core.messages import AIMessage, AnyMessage, BaseMessage, HumanMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import StateGraph
from langgraph.graph.message import add_messages
from pydantic import Field

from relaygraph import ConfigurationError
from relaygraph.graphs import Agent, Guard, Handoff, RelayState, Review, pipeline
from relaygraph.nodes import Contract, HandoffState, Verbatim, contract_serializer


class Ticket(Contract):
    """What the fixer needs."""

    ticket_id: Annotated[str, Verbatim()] = Field(description="ticket id as written")
    problem: str
    confidence: float = Field(ge=0, le=1)


class TicketState(HandoffState, total=False):
    messages: Annotated[list[AnyMessage], add_messages]
    ticket: Ticket | None
    fix: str | None


def _config(thread: str) -> dict[str, Any]:
    return {"configurable": {"thread_id": thread}}


def _saver() -> InMemorySaver:
    return InMemorySaver(serde=contract_serializer(Ticket))


def _triage(state: dict[str, Any]) -> dict[str, Any]:
    return {"messages": [AIMessage("triaged", name="triage")]}


def _fixer(state: dict[str, Any]) -> dict[str, Any]:
    return {"fix": f"fixed {state['ticket'].ticket_id}",
            "messages": [AIMessage("fixed", name="fixer")]}


def _compressor(confidences: Sequence[float], ticket_id: str = "T-77"):
    calls = {"n": 0}

    def compress(messages: list[BaseMessage], contract: type, feedback: Any) -> dict[str, Any]:
        conf = confidences[min(calls["n"], len(confidences) - 1)]
        calls["n"] += 1
        return {"ticket_id": ticket_id, "problem": "printer on fire", "confidence": conf}

    compress.calls = calls  # type: ignore[attr-defined]
    return compress


def _build(compressor: Any, *, schema: Any = TicketState, review: bool = False) -> StateGraph:
    stages: list[Any] = [
        Agent("triage", _triage, track=False),
        Handoff("to_fixer", Ticket, source="messages", target="ticket", compressor=compressor,
                max_repairs=0),
        Guard("check", score="ticket.confidence", threshold=0.8, max_retries=1),
        Agent("fixer", _fixer, track=False),
    ]
    if review:
        stages.append(Review("review", subject="ticket"))
    return pipeline(*stages, state_schema=schema)


INPUT = {"messages": [HumanMessage("Ticket T-77: the printer is on fire.")]}


def test_confident_case_runs_straight_through() -> None:
    graph = _build(_compressor([0.95])).compile(checkpointer=_saver())
    out = graph.invoke(INPUT, _config("ok"))
    assert out["fix"] == "fixed T-77"
    assert isinstance(out["ticket"], Ticket)
    assert [g["route"] for g in out["guard_log"]] == ["pass"]
    assert out["handoffs"][0]["failure"] is None
    assert graph.get_state(_config("ok")).next == ()


def test_unsure_case_is_retried_then_escalated_to_review_which_continues() -> None:
    comp = _compressor([0.5, 0.6])
    graph = _build(comp).compile(checkpointer=_saver())
    config = _config("unsure")
    graph.invoke(INPUT, config)
    snap = graph.get_state(config)
    assert snap.next == ("check_review",)
    assert [g["route"] for g in snap.values["guard_log"]] == ["retry", "escalate"]
    assert comp.calls["n"] == 2  # the retry went back through triage and the handoff
    request = snap.interrupts[0].value
    assert request["kind"] == "human_review" and request["subject"] == "ticket"
    assert request["agent"] == "triage"

    from relaygraph.serve._reviews import submit_review

    submit_review(graph, config, {"action": "edit", "edits": {"confidence": 0.9},
                                  "reviewer": "ops"})
    final = graph.get_state(config).values
    assert final["fix"] == "fixed T-77"
    assert final["ticket"].confidence == 0.9
    assert final["reviews"][-1]["decision"] == "edit"


def test_rejected_escalation_ends_the_run_without_the_next_agent() -> None:
    graph = _build(_compressor([0.1])).compile(checkpointer=_saver())
    config = _config("reject")
    graph.invoke(INPUT, config)
    from relaygraph.serve._reviews import submit_review

    submit_review(graph, config, {"action": "reject", "reason": "not a real ticket"})
    snap = graph.get_state(config)
    assert snap.next == () and "fix" not in snap.values


def test_failed_handoff_goes_to_its_review_never_to_the_next_agent() -> None:
    # the compressor invents a ticket id that is not in the transcript
    graph = _build(_compressor([0.99], ticket_id="T-99")).compile(checkpointer=_saver())
    config = _config("bad-handoff")
    graph.invoke(INPUT, config)
    snap = graph.get_state(config)
    assert snap.next == ("to_fixer_review",)
    report = snap.values["handoffs"][-1]
    assert report["failure"] and report["verbatim"]["ticket_id"]["passed"] is False
    assert snap.values["ticket"] is None
    assert "guard_log" not in snap.values or snap.values["guard_log"] == []
    request = snap.interrupts[0].value
    assert request["actions"] == ["edit", "reject"]  # nothing to approve
    assert "ticket_id" in request["handoff"]["failure"]

    from relaygraph.nodes import InvalidReviewDecision
    from relaygraph.serve._reviews import submit_review

    with pytest.raises(InvalidReviewDecision):
        submit_review(graph, config, {"action": "approve"})
    assert graph.get_state(config).next == ("to_fixer_review",)
    submit_review(graph, config, {"action": "reject", "reason": "no such ticket"})
    final = graph.get_state(config)
    assert final.next == () and "fix" not in final.values


def test_explicit_review_stage_and_default_schema() -> None:
    builder = _build(_compressor([0.95]), schema=None, review=True)
    graph = builder.compile(checkpointer=_saver())
    config = _config("final-review")
    graph.invoke(INPUT, config)
    assert graph.get_state(config).next == ("review",)
    from relaygraph.serve._reviews import submit_review

    submit_review(graph, config, {"action": "approve"})
    values = graph.get_state(config).values
    assert values["reviews"][-1]["decision"] == "approve"
    assert graph.get_state(config).next == ()


async def test_async_invoke() -> None:
    graph = _build(_compressor([0.95])).compile(checkpointer=_saver())
    out = await graph.ainvoke(INPUT, _config("async"))
    assert out["fix"] == "fixed T-77"


def test_tracked_agents_record_usage() -> None:
    def model_agent(state: dict[str, Any]) -> dict[str, Any]:
        return {"messages": [AIMessage("hi", name="triage", response_metadata={
            "model_name": "m"}, usage_metadata={"input_tokens": 10, "output_tokens": 2,
                                                "total_tokens": 12})]}

    from relaygraph.observe import Pricing

    builder = pipeline(Agent("triage", model_agent,
                             options={"pricing": Pricing({"m": (1.0, 2.0)})}))
    out = builder.compile().invoke({"messages": [HumanMessage("x")]})
    usage = out["usage"]["triage"]["m"]
    assert (usage["calls"], usage["input_tokens"], usage["output_tokens"]) == (1, 10, 2)
    assert usage["cost"] == pytest.approx((10 * 1.0 + 2 * 2.0) / 1e6)


@pytest.mark.parametrize(
    ("stages", "match"),
    [
        ((), "at least one stage"),
        ((Agent("a", _triage), Agent("a", _triage)), "both be called 'a'"),
        ((Agent("x_review", _triage), Guard("x", score="s", threshold=0.5)), "x_review"),
        ((Guard("g", score="ticket.confidence", threshold=0.5),), "no agent before it"),
        (("not a stage",), "stages are Agent, Handoff, Guard, Budget or Review"),
        ((Agent("__end__", _triage),), "invalid stage name"),
    ],
)
def test_configuration_errors(stages: tuple[Any, ...], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        pipeline(*stages)


def test_routes_wired_by_pipeline_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="on_success is wired by pipeline"):
        Handoff("h", Ticket, target="t", on_success="x")
    with pytest.raises(ConfigurationError, match="on_pass is wired by pipeline"):
        Guard("g", on_pass="x")
    with pytest.raises(ConfigurationError, match="on_approve is wired by pipeline"):
        Review("r", subject="s", on_approve="x")


def test_state_schema_without_relay_keys_is_refused() -> None:
    from typing import TypedDict

    class Plain(TypedDict, total=False):
        messages: list[AnyMessage]

    with pytest.raises(ConfigurationError, match="lacks the keys"):
        _build(_compressor([0.9]), schema=Plain)

    class OnlyRelay(RelayState, total=False):
        messages: list[AnyMessage]

    with pytest.raises(ConfigurationError, match="HandoffState"):
        _build(_compressor([0.9]), schema=OnlyRelay)


def test_underlying_node_errors_surface_at_build_time() -> None:
    with pytest.raises(ConfigurationError):
        pipeline(Agent("a", _triage, track=False),
                 Guard("g", score="x.confidence", threshold=1.7))
