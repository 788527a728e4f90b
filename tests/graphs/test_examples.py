"""The example workflows run offline, end to end, and survive a restart on the SQL saver."""

from __future__ import annotations

from pathlib import Path

from langgraph.checkpoint.memory import InMemorySaver

from relaygraph.checkpointers import SQLAlchemySaver
from relaygraph.graphs import examples
from relaygraph.graphs.examples import EXAMPLES, refund, research
from relaygraph.serve._reviews import submit_review
from relaygraph.testing import ManualClock


def _cfg(t: str) -> dict:
    return {"configurable": {"thread_id": t}}


def test_research_report_end_to_end() -> None:
    graph = research.build_research_graph().compile(checkpointer=InMemorySaver(
        serde=examples.serde()))
    out = graph.invoke(research.research_input(), _cfg("r"))
    brief = out["brief"]
    assert isinstance(brief, research.ResearchBrief)
    assert len(brief.findings) == 4 and all(f in research.RESEARCH_NOTES for f in brief.findings)
    assert out["report"].startswith("Report:")
    report = out["handoffs"][0]
    assert report["failure"] is None
    assert report["brief_tokens"] < report["source_tokens"]
    assert set(out["usage"]) == {"researcher", "writer"}
    # the writer saw the brief, not the researcher's transcript
    writer_msg = out["messages"][-1]
    assert writer_msg.name == "writer"


def test_refund_repairs_the_misquoted_amount_and_pauses_for_review() -> None:
    clock = ManualClock(1_800_000_000.0)
    graph = refund.build_refund_graph(clock=clock).compile(
        checkpointer=InMemorySaver(serde=examples.serde()))
    graph.invoke(refund.refund_input(), _cfg("a"))
    snap = graph.get_state(_cfg("a"))
    assert snap.next == ("review",)
    case = snap.values["case"]
    assert isinstance(case, refund.RefundCase)
    assert (case.order_id, str(case.amount), case.customer_email) == (
        "A-10293", "249.99", "dana.k@example.com")
    report = snap.values["handoffs"][0]
    assert report["repairs"] == 1 and report["failure"] is None
    assert report["verbatim"]["amount"]["provenance"]["message"] == 2
    assert report["at"].startswith("2027-01-15")  # the injected clock
    assert [g["route"] for g in snap.values["guard_log"]] == ["pass"]


def test_refund_low_confidence_is_retried_then_escalated() -> None:
    graph = refund.build_refund_graph(confidence=0.4).compile(
        checkpointer=InMemorySaver(serde=examples.serde()))
    graph.invoke(refund.refund_input(), _cfg("low"))
    snap = graph.get_state(_cfg("low"))
    assert snap.next == ("check_review",)
    assert [g["route"] for g in snap.values["guard_log"]] == ["retry", "escalate"]
    assert snap.values["usage"]["intake"]["scripted-small"]["calls"] == 2
    submit_review(graph, _cfg("low"), {"action": "approve", "reviewer": "lead"})
    # approved by a human: the resolver runs, then its own review
    assert graph.get_state(_cfg("low")).next == ("review",)


def test_refund_contracts_survive_a_restart_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ex.db'}"
    with SQLAlchemySaver.from_conn_string(url, serde=examples.serde()) as saver:
        saver.setup()
        EXAMPLES["refund"].build().compile(checkpointer=saver).invoke(
            refund.refund_input(), _cfg("restart"))
    with SQLAlchemySaver.from_conn_string(url, serde=examples.serde()) as saver:
        graph = EXAMPLES["refund"].build().compile(checkpointer=saver)
        snap = graph.get_state(_cfg("restart"))
        assert isinstance(snap.values["case"], refund.RefundCase)
        assert isinstance(snap.values["resolution"], refund.Resolution)
        submit_review(graph, _cfg("restart"), {"action": "edit", "edits": {"amount": "200.00"},
                                              "reviewer": "ana"})
        final = graph.get_state(_cfg("restart")).values
        assert str(final["resolution"].amount) == "200.00"
        assert final["reviews"][-1]["decision"] == "edit"


def test_refund_reviews_relax_with_an_autonomy_policy_and_return_after_a_rejection() -> None:
    from relaygraph.nodes import AutonomyPolicy

    # draws of 0.99 skip a review as soon as the policy allows any skipping at all
    policy = AutonomyPolicy(min_approvals=2, target=0.3, floor=0.0, decay=0.5,
                            rng=lambda: 0.99)
    graph = refund.build_refund_graph(policy=policy).compile(
        checkpointer=InMemorySaver(serde=examples.serde()))
    asked = []
    for i in range(4):
        cfg = _cfg(f"p{i}")
        graph.invoke(refund.refund_input(), cfg)
        waiting = graph.get_state(cfg).next == ("review",)
        asked.append(waiting)
        if waiting:
            submit_review(graph, cfg, {"action": "approve", "reviewer": "ana"})
    assert asked == [True, True, False, False]
    skipped = graph.get_state(_cfg("p2")).values["reviews"][-1]
    assert skipped["decision"] == "skipped" and skipped["policy_reason"]

    policy.record("resolver", "refund", "reject")  # one rejection restores full review
    graph.invoke(refund.refund_input(), _cfg("p9"))
    assert graph.get_state(_cfg("p9")).next == ("review",)


def test_refund_is_issued_once_into_the_crm_table_of_the_workflows_database(
        tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'crm.db'}"
    with SQLAlchemySaver.from_conn_string(url, serde=examples.serde()) as saver:
        saver.setup()
        graph = EXAMPLES["refund"].build().compile(checkpointer=saver)
        graph.invoke(refund.refund_input(), _cfg("crm"))
        assert refund.crm_rows(saver.engine, "crm") == []  # nothing before the approval
        submit_review(graph, _cfg("crm"), {"action": "approve", "reviewer": "ana"})
        (row,) = refund.crm_rows(saver.engine, "crm")
        assert (row["order_id"], row["amount"], row["action"], row["customer_email"]) == (
            "A-10293", "249.99", "refund", "dana.k@example.com")
        issued = graph.get_state(_cfg("crm")).values["issued"]
        assert issued["crm_key"] == row["idempotency_key"]
        graph.invoke(None, _cfg("crm"))  # a finished thread issues nothing more
        assert len(refund.crm_rows(saver.engine)) == 1

        # a denied refund writes nothing
        graph.invoke(refund.refund_input(), _cfg("deny"))
        submit_review(graph, _cfg("deny"), {"action": "edit", "edits": {"action": "deny"},
                                            "reviewer": "ana"})
        assert graph.get_state(_cfg("deny")).values["issued"] is None
        assert refund.crm_rows(saver.engine, "deny") == []
