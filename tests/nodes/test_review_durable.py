"""HumanReview driven through real interrupt() / Command(resume=...) on the SQL saver.

The graph and its contract live at module level so that a second process can import them
and the strict checkpoint serializer can rebuild the contract instance.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from langgraph.graph import START, StateGraph
from langgraph.types import Command

from relaygraph.checkpointers import SQLAlchemySaver
from relaygraph.graphs import RelayState
from relaygraph.nodes import Contract, contract_serializer
from relaygraph.nodes._review import (
    HumanReview,
    InvalidReviewDecision,
    NotWaitingForReview,
    submit_review,
)

HERE = Path(__file__).resolve().parent


class RefundCase(Contract):
    order_id: str
    amount: Decimal
    summary: str


class RefundState(RelayState, total=False):
    case: RefundCase | None
    outcome: str


def _clock() -> float:
    return 1_800_000_000.0


def intake(state: RefundState) -> dict[str, Any]:
    return {
        "case": RefundCase(order_id="A-1", amount=Decimal("42.50"), summary="damaged"),
        "handoffs": [{
            "contract": "RefundCase", "source_tokens": 120, "brief_tokens": 30, "ratio": 0.25,
            "fields": ["order_id", "amount", "summary"],
            "verbatim": {"order_id": {"passed": True, "value": "A-1",
                                      "provenance": {"message": 0, "start": 10, "end": 13}}},
            "repairs": 0, "failure": None, "at": "2027-01-15T08:00:00+00:00",
        }],
    }


def check(state: RefundState) -> dict[str, Any]:
    return {"guard_log": [{"guard": "check", "score": 0.62, "threshold": 0.8,
                           "failed_checks": ["amount_over_limit"], "route": "escalate",
                           "breaker_state": "closed", "at": "2027-01-15T08:00:01+00:00",
                           "reason": "confidence 0.62 below 0.8"}]}


def crm(state: RefundState) -> dict[str, Any]:
    return {"outcome": f"refunded {state['case'].amount} on {state['case'].order_id}"}


def resolver(state: RefundState) -> dict[str, Any]:
    return {"outcome": "sent back: " + state.get("guard_feedback", {}).get("resolver", "")}


def serde() -> Any:
    return contract_serializer(RefundCase)


def build() -> StateGraph:
    b = StateGraph(RefundState)
    b.add_node("intake", intake)
    b.add_node("check", check)
    b.add_node("review", HumanReview("case", on_approve="crm", on_reject="resolver",
                                     agent="resolver", kind="refund", clock=_clock))
    b.add_node("crm", crm)
    b.add_node("resolver", resolver)
    b.add_edge(START, "intake")
    b.add_edge("intake", "check")
    b.add_edge("check", "review")
    return b


SCRIPT = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, {here!r})
    from langgraph.types import Command
    from relaygraph.checkpointers import SQLAlchemySaver
    import test_review_durable as m

    url, phase = sys.argv[1], sys.argv[2]
    plan = json.loads(sys.argv[3])
    out = {{}}
    with SQLAlchemySaver.from_conn_string(url, serde=m.serde()) as saver:
        saver.setup()
        graph = m.build().compile(checkpointer=saver)
        for thread, resume in plan.items():
            cfg = {{"configurable": {{"thread_id": thread}}}}
            if phase == "start":
                res = graph.invoke({{}}, cfg)
                out[thread] = {{"request": res["__interrupt__"][0].value,
                               "next": list(graph.get_state(cfg).next)}}
            else:
                res = graph.invoke(Command(resume=resume), cfg)
                case = res["case"]
                out[thread] = {{
                    "case_type": type(case).__name__, "amount": str(case.amount),
                    "outcome": res.get("outcome"), "reviews": res["reviews"],
                    "feedback": res.get("guard_feedback"),
                    "next": list(graph.get_state(cfg).next),
                }}
    print(json.dumps(out))
""")


def _run(url: str, phase: str, plan: dict[str, Any]) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(here=str(HERE)), url, phase, json.dumps(plan)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_approve_edit_reject_across_process_restarts(sqlite_backend) -> None:
    plan = {
        "t-approve": {"action": "approve", "reviewer": "ana", "comment": "fine"},
        "t-edit": {"action": "edit", "edits": {"amount": "40.00"}, "reviewer": "bo"},
        "t-reject": {"action": "reject", "reason": "wrong order", "reviewer": "cy"},
    }
    started = _run(sqlite_backend.url, "start", plan)
    for thread in plan:
        req = started[thread]["request"]
        assert started[thread]["next"] == ["review"]
        assert req["kind"] == "human_review"
        assert req["node"] == "review"
        assert req["subject"] == "case"
        assert req["agent"] == "resolver"
        assert req["decision_kind"] == "refund"
        assert req["contract"] == "RefundCase"
        assert req["value"] == {"order_id": "A-1", "amount": "42.50", "summary": "damaged"}
        assert req["provenance"] == {"order_id": {
            "passed": True, "value": "A-1", "provenance": {"message": 0, "start": 10, "end": 13}}}
        assert req["confidence"] == 0.62
        assert req["guard"] == "check"
        assert req["guard_reason"] == "confidence 0.62 below 0.8"
        assert req["failed_checks"] == ["amount_over_limit"]
        assert req["actions"] == ["approve", "edit", "reject"]
        assert req["error"] is None and req["attempt"] == 1

    done = _run(sqlite_backend.url, "resume", plan)

    a = done["t-approve"]
    assert a["case_type"] == "RefundCase" and a["amount"] == "42.50"
    assert a["outcome"] == "refunded 42.50 on A-1"
    assert a["next"] == []
    [rec] = a["reviews"]
    assert rec["decision"] == "approve" and rec["reviewer"] == "ana"
    assert rec["comment"] == "fine" and rec["edits"] == {}
    assert rec["node"] == "review" and rec["attempts"] == 1
    assert rec["at"] == "2027-01-15T08:00:00+00:00"
    assert rec["policy_reason"].startswith("review: no autonomy policy")
    assert rec["request"]["value"]["amount"] == "42.50"

    e = done["t-edit"]
    # the edited contract is a RefundCase again after the restart, with the new amount
    assert e["case_type"] == "RefundCase" and e["amount"] == "40.00"
    assert e["outcome"] == "refunded 40.00 on A-1"
    [rec] = e["reviews"]
    assert rec["decision"] == "edit" and rec["edits"] == {"amount": "40.00"}
    assert rec["reviewer"] == "bo"

    r = done["t-reject"]
    assert r["amount"] == "42.50"
    assert r["outcome"] == "sent back: rejected by reviewer: wrong order"
    assert r["feedback"] == {"resolver": "rejected by reviewer: wrong order"}
    [rec] = r["reviews"]
    assert rec["decision"] == "reject" and rec["reason"] == "wrong order"
    assert rec["reviewer"] == "cy"


@pytest.fixture
def paused(sqlite_backend):
    with SQLAlchemySaver.from_conn_string(sqlite_backend.url, serde=serde()) as saver:
        saver.setup()
        graph = build().compile(checkpointer=saver)
        cfg = {"configurable": {"thread_id": "bad-input"}}
        graph.invoke({}, cfg)
        yield graph, cfg, saver


def _fingerprint(graph, cfg, saver) -> tuple:
    snap = graph.get_state(cfg)
    checkpoints = [c.checkpoint["id"] for c in saver.list(cfg)]
    return (snap.values, snap.next, [i.value for i in snap.interrupts], checkpoints,
            snap.config["configurable"]["checkpoint_id"])


BAD = [
    ("wrong shape", "yes please", "not a review decision"),
    ("unknown action", {"action": "escalate"}, "does not match any of the expected tags"),
    ("edit without edits", {"action": "edit"}, "edits"),
    ("reject without reason", {"action": "reject"}, "needs a reason"),
    ("edit breaks contract", {"action": "edit", "edits": {"amount": "forty"}},
     "edits break the contract RefundCase: amount"),
    ("edit unknown field", {"action": "edit", "edits": {"amout": "40"}},
     "unknown fields ['amout']"),
    ("extra key", {"action": "approve", "sneaky": 1}, "sneaky"),
]


@pytest.mark.parametrize("label,value,message", BAD, ids=[b[0] for b in BAD])
def test_submit_review_refuses_bad_input_and_changes_nothing(paused, label, value, message
                                                             ) -> None:
    graph, cfg, saver = paused
    before = _fingerprint(graph, cfg, saver)
    with pytest.raises(InvalidReviewDecision, match=message.replace("[", r"\[")
                       .replace("]", r"\]")):
        submit_review(graph, cfg, value)
    assert _fingerprint(graph, cfg, saver) == before


@pytest.mark.parametrize("label,value,message", BAD[:5], ids=[b[0] for b in BAD[:5]])
def test_bad_resume_value_reasks_with_the_error(paused, label, value, message) -> None:
    graph, cfg, saver = paused
    values_before = graph.get_state(cfg).values
    out = graph.invoke(Command(resume=value), cfg)
    [intr] = out["__interrupt__"]
    assert message in intr.value["error"]
    assert intr.value["attempt"] == 2
    assert intr.value["previous"] == value
    assert intr.value["value"]["amount"] == "42.50"  # the request itself is intact
    snap = graph.get_state(cfg)
    assert snap.next == ("review",)
    assert snap.values == values_before  # nothing applied, still paused
    # a valid answer now completes the review; the bad answer is not lost, it is counted
    final = submit_review(graph, cfg, {"action": "edit", "edits": {"amount": "41.00"},
                                       "reviewer": "ana"})
    assert final["case"].amount == Decimal("41.00")
    assert final["outcome"] == "refunded 41.00 on A-1"
    [rec] = final["reviews"]
    assert rec["decision"] == "edit" and rec["attempts"] == 2


def test_two_bad_answers_then_a_good_one(paused) -> None:
    graph, cfg, _ = paused
    graph.invoke(Command(resume="nope"), cfg)
    out = graph.invoke(Command(resume={"action": "maybe"}), cfg)
    assert out["__interrupt__"][0].value["attempt"] == 3
    assert "'maybe'" in out["__interrupt__"][0].value["error"]
    final = graph.invoke(Command(resume={"action": "approve", "reviewer": "ana"}), cfg)
    assert final["reviews"][0]["attempts"] == 3
    assert final["outcome"] == "refunded 42.50 on A-1"


def test_review_for_a_thread_that_is_not_waiting(paused) -> None:
    graph, cfg, saver = paused
    submit_review(graph, cfg, {"action": "approve"})
    before = _fingerprint(graph, cfg, saver)
    with pytest.raises(NotWaitingForReview, match="'bad-input' is not waiting for a review"):
        submit_review(graph, cfg, {"action": "approve"})
    assert _fingerprint(graph, cfg, saver) == before
    unknown = {"configurable": {"thread_id": "never-started"}}
    with pytest.raises(NotWaitingForReview, match="never-started"):
        submit_review(graph, unknown, {"action": "approve"})
    assert list(saver.list(unknown)) == []


def test_submit_review_with_unknown_interrupt_id(paused) -> None:
    graph, cfg, saver = paused
    before = _fingerprint(graph, cfg, saver)
    with pytest.raises(NotWaitingForReview, match="no pending review with interrupt id"):
        submit_review(graph, cfg, {"action": "approve"}, interrupt_id="nope")
    assert _fingerprint(graph, cfg, saver) == before
