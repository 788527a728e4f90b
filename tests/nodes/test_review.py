"""HumanReview unit behaviour: requests, decisions, routes, policy, async, several reviews."""

from __future__ import annotations

from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command
from pydantic import BaseModel, ConfigDict

from relaygraph import ConfigurationError
from relaygraph.graphs import RelayState
from relaygraph.nodes import (
    AutonomyPolicy,
    HumanReview,
    InvalidReviewDecision,
    NotWaitingForReview,
    ReviewDecision,
    asubmit_review,
    parse_decision,
    pending_reviews,
    submit_review,
)


class Ticket(BaseModel):
    model_config = ConfigDict(extra="forbid")
    queue: str
    priority: int


class S(RelayState, total=False):
    ticket: dict
    note: str
    out: list[str]


def _guard(score: float, route: str, at: str, reason: str | None = None) -> dict[str, Any]:
    rec = {"guard": "g", "score": score, "threshold": 0.8, "failed_checks": ["c1"],
           "route": route, "breaker_state": None, "at": at}
    if reason:
        rec["reason"] = reason
    return rec


def _report(contract: str, at: str, passed: bool) -> dict[str, Any]:
    return {"contract": contract, "source_tokens": 10, "brief_tokens": 5, "ratio": 0.5,
            "fields": ["queue"], "verbatim": {"queue": {"passed": passed, "value": "billing"}},
            "repairs": 1, "failure": None, "at": at}


def _graph(review: HumanReview, *, after: dict[str, Any] | None = None):
    def agent(state: S) -> dict[str, Any]:
        return {"ticket": {"queue": "billing", "priority": 2},
                "guard_log": [_guard(0.9, "pass", "1"), _guard(0.4, "escalate", "2", "low")],
                "handoffs": [_report("Ticket", "1", True), _report("Other", "2", False)],
                **(after or {})}

    def done(state: S) -> dict[str, Any]:
        return {"note": "done"}

    def back(state: S) -> dict[str, Any]:
        return {"note": "back"}

    b = StateGraph(S)
    b.add_node("agent", agent)
    b.add_node("check_ticket", review)
    b.add_node("done", done)
    b.add_node("back", back)
    b.add_edge(START, "agent")
    b.add_edge("agent", "check_ticket")
    return b.compile(checkpointer=InMemorySaver())


CFG = {"configurable": {"thread_id": "t"}}


def test_request_uses_the_latest_guard_decision_and_the_matching_handoff() -> None:
    graph = _graph(HumanReview("ticket", contract=Ticket, on_approve="done", on_reject="back",
                               agent="triage", kind="ticket"))
    out = graph.invoke({}, CFG)
    [intr] = out["__interrupt__"]
    req = intr.value
    assert req["node"] == "check_ticket"
    assert req["contract"] == "Ticket"
    assert req["confidence"] == 0.4 and req["guard_route"] == "escalate"
    assert req["guard_reason"] == "low" and req["failed_checks"] == ["c1"]
    # the latest report *of this contract*, not the latest report overall
    assert req["provenance"] == {"queue": {"passed": True, "value": "billing"}}
    assert req["handoff"] == {"contract": "Ticket", "repairs": 1, "failure": None,
                              "ratio": 0.5, "at": "1"}
    assert pending_reviews(graph.get_state(CFG)) == [(intr.id, "check_ticket", req)]


def test_edit_of_a_dict_subject_validated_against_the_contract() -> None:
    graph = _graph(HumanReview("ticket", contract=Ticket, on_approve="done", on_reject="back",
                               on_edit="back"))
    graph.invoke({}, CFG)
    with pytest.raises(InvalidReviewDecision, match="priority: Input should be a valid integer"):
        submit_review(graph, CFG, {"action": "edit", "edits": {"priority": "urgent"}})
    out = submit_review(graph, CFG, ReviewDecision.edit({"priority": 1}, reviewer="ana"))
    assert out["ticket"] == {"queue": "billing", "priority": 1}
    assert out["note"] == "back"  # on_edit route


def test_edit_without_a_contract_only_touches_existing_keys() -> None:
    graph = _graph(HumanReview("ticket", on_approve="done", on_reject="back"))
    graph.invoke({}, CFG)
    with pytest.raises(InvalidReviewDecision, match=r"unknown fields \['prio'\]"):
        submit_review(graph, CFG, {"action": "edit", "edits": {"prio": 1}})
    out = submit_review(graph, CFG, {"action": "edit", "edits": {"priority": 5}})
    assert out["ticket"]["priority"] == 5 and out["note"] == "done"


def test_restricted_actions() -> None:
    graph = _graph(HumanReview("ticket", on_approve="done", on_reject="back",
                               actions=("approve", "reject")))
    out = graph.invoke({}, CFG)
    assert out["__interrupt__"][0].value["actions"] == ["approve", "reject"]
    with pytest.raises(InvalidReviewDecision, match="action 'edit' is not allowed here"):
        submit_review(graph, CFG, {"action": "edit", "edits": {"priority": 1}})
    # the same refused action as a raw resume value re-asks
    out = graph.invoke(Command(resume={"action": "edit", "edits": {"priority": 1}}), CFG)
    assert "not allowed" in out["__interrupt__"][0].value["error"]
    out = submit_review(graph, CFG, ReviewDecision.reject("duplicate", reviewer="bo"))
    assert out["note"] == "back"
    assert out["guard_feedback"] == {"ticket": "rejected by reviewer: duplicate"}


def test_without_routes_the_edges_decide_and_feedback_can_be_off() -> None:
    review = HumanReview("ticket", feedback_key=None)

    def agent(state: S) -> dict[str, Any]:
        return {"ticket": {"queue": "q", "priority": 1}}

    b = StateGraph(S)
    b.add_node("agent", agent)
    b.add_node("review", review)
    b.add_edge(START, "agent")
    b.add_edge("agent", "review")
    b.add_edge("review", END)
    graph = b.compile(checkpointer=InMemorySaver())
    graph.invoke({}, CFG)
    out = submit_review(graph, CFG, {"action": "reject", "comment": "no"})
    [rec] = out["reviews"]
    assert rec["decision"] == "reject" and rec["reason"] == "no" and rec["node"] == "review"
    assert out.get("guard_feedback", {}) == {}


async def test_async_graph_with_policy_skip_and_asubmit() -> None:
    policy = AutonomyPolicy(min_approvals=1, target=0.0, floor=0.0, rng=lambda: 0.9)
    graph = _graph(HumanReview("ticket", on_approve="done", on_reject="back", policy=policy,
                               agent="triage"))
    cfg1 = {"configurable": {"thread_id": "a1"}}
    out = await graph.ainvoke({}, cfg1)
    assert out["__interrupt__"][0].value["policy_reason"].startswith("review: full review")
    out = await asubmit_review(graph, cfg1, {"action": "approve", "reviewer": "ana"})
    assert out["note"] == "done" and out["reviews"][0]["decision"] == "approve"
    cfg2 = {"configurable": {"thread_id": "a2"}}
    out = await graph.ainvoke({}, cfg2)
    assert "__interrupt__" not in out
    [rec] = out["reviews"]
    assert rec["decision"] == "skipped" and rec["policy_reason"].startswith("skip:")
    assert out["note"] == "done"
    with pytest.raises(NotWaitingForReview):
        await asubmit_review(graph, cfg2, {"action": "approve"})


def test_several_pending_reviews_need_an_interrupt_id() -> None:
    class P(RelayState, total=False):
        a: dict
        b: dict
        out: list

    b = StateGraph(P)
    b.add_node("make", lambda s: {"a": {"x": 1}, "b": {"y": 2}})
    b.add_node("review_a", HumanReview("a", name="review_a"))
    b.add_node("review_b", HumanReview("b", name="review_b"))
    b.add_edge(START, "make")
    b.add_edge("make", "review_a")
    b.add_edge("make", "review_b")
    graph = b.compile(checkpointer=InMemorySaver())
    out = graph.invoke({}, CFG)
    assert len(out["__interrupt__"]) == 2
    pending = pending_reviews(graph.get_state(CFG))
    assert sorted(p[1] for p in pending) == ["review_a", "review_b"]
    with pytest.raises(InvalidReviewDecision, match="waits on 2 reviews; pass interrupt_id"):
        submit_review(graph, CFG, {"action": "approve"})
    id_a = next(p[0] for p in pending if p[1] == "review_a")
    id_b = next(p[0] for p in pending if p[1] == "review_b")
    out = submit_review(graph, CFG, {"action": "edit", "edits": {"x": 3}}, interrupt_id=id_a)
    assert [p[1] for p in pending_reviews(graph.get_state(CFG))] == ["review_b"]
    out = submit_review(graph, CFG, {"action": "approve"}, interrupt_id=id_b)
    assert out["a"] == {"x": 3} and out["b"] == {"y": 2}
    assert sorted(r["node"] for r in out["reviews"]) == ["review_a", "review_b"]


def test_parse_decision_forms() -> None:
    assert parse_decision({"action": "approve"}).action == "approve"
    assert parse_decision(ReviewDecision.approve(reviewer="x")).root.reviewer == "x"
    d = parse_decision({"action": "reject", "reason": "r", "interrupt_id": "ignored"})
    assert d.root.reason == "r"

    class Body(BaseModel):  # e.g. an HTTP body model with extra transport fields
        action: str
        comment: str | None = None
        interrupt_id: str | None = None

    assert parse_decision(Body(action="reject", comment="why")).root.reason == "why"
    assert ReviewDecision.edit({"a": 1}).to_resume() == {"action": "edit", "edits": {"a": 1}}
    # what generic forms send: empty edits with approve, absent fields as None
    assert parse_decision({"action": "approve", "edits": {}, "reason": None}).action == "approve"
    for bad in (None, 3, [], {"action": None}, {"action": "reject", "reason": "  "},
                {"action": "edit", "edits": {}}):
        with pytest.raises(InvalidReviewDecision):
            parse_decision(bad)


@pytest.mark.parametrize("kwargs,message", [
    ({"subject": ""}, "subject must be a state key"),
    ({"subject": "x", "on_approve": ""}, "on_approve must be a node name"),
    ({"subject": "x", "contract": dict}, "contract must be a pydantic model class"),
    ({"subject": "x", "actions": ("approve", "escalate")}, "actions must be a non-empty subset"),
    ({"subject": "x", "actions": ()}, "actions must be a non-empty subset"),
    ({"subject": "x", "policy": "always"}, "policy must be an AutonomyPolicy"),
])
def test_configuration_errors(kwargs: dict[str, Any], message: str) -> None:
    subject = kwargs.pop("subject")
    with pytest.raises(ConfigurationError, match=message):
        HumanReview(subject, **kwargs)


def test_edit_fills_a_missing_subject_from_scratch() -> None:
    """A failed handoff leaves nothing under review: an edit must fill the whole contract."""

    class Empty(RelayState, total=False):
        ticket: Any
        note: str

    def agent(state: Empty) -> dict[str, Any]:
        return {"ticket": None}

    b = StateGraph(Empty)
    b.add_node("agent", agent)
    b.add_node("check_ticket", HumanReview("ticket", contract=Ticket, on_approve=END,
                                           on_reject=END))
    b.add_edge(START, "agent")
    b.add_edge("agent", "check_ticket")
    graph = b.compile(checkpointer=InMemorySaver())
    graph.invoke({}, CFG)
    before = graph.get_state(CFG)
    with pytest.raises(InvalidReviewDecision, match="priority: Field required"):
        submit_review(graph, CFG, {"action": "edit", "edits": {"queue": "billing"}})
    assert graph.get_state(CFG).values == before.values  # nothing changed
    out = submit_review(graph, CFG, {"action": "edit",
                                     "edits": {"queue": "billing", "priority": 3}})
    assert out["ticket"] == Ticket(queue="billing", priority=3)
    assert out["reviews"][-1]["decision"] == "edit"
