"""reconcile(): the research example fanned out to three researchers, then merged."""

from __future__ import annotations

import io
from decimal import Decimal
from typing import Annotated, Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from rich.console import Console
from tests._fan_out import fan_out_graph

from relaygraph import ConfigurationError
from relaygraph.graphs import RelayState
from relaygraph.graphs.examples._data import RESEARCH_NOTES, RESEARCH_QUESTION
from relaygraph.graphs.examples.research import ResearchBrief
from relaygraph.nodes import (
    Contract,
    ReconcileError,
    ReviewDecision,
    Verbatim,
    pending_reviews,
    reconcile,
    submit_review,
)
from relaygraph.observe import timeline
from relaygraph.state import append_records
from relaygraph.testing import ScriptedChatModel

AGENTS = ("alpha", "beta", "gamma")
N0, N1, N2, N3 = RESEARCH_NOTES


class FanState(RelayState, total=False):
    drafts: Annotated[list[Any], append_records]
    brief: ResearchBrief | None
    report: str | None


def build(findings: dict[str, list[str]], *, policy: Any = "majority",
          question: dict[str, str] | None = None) -> Any:
    """Three researchers write a ResearchBrief each (fan-out with Send); reconcile merges."""

    def researcher(agent: str) -> dict[str, Any]:
        brief = ResearchBrief(question=(question or {}).get(agent, RESEARCH_QUESTION),
                              findings=findings[agent])
        return {"source": agent, "contract": brief,
                "provenance": {"agent": agent, "notes": f"notes/{agent}.md"}}

    merge = reconcile(ResearchBrief, source="drafts", target="brief", policy=policy,
                      on_success="writer", on_conflict="halt")
    return fan_out_graph(FanState, AGENTS, researcher, merge,
                         lambda brief: " ".join(brief.findings)).compile(
        checkpointer=InMemorySaver())


def cfg(thread: str) -> dict[str, Any]:
    return {"configurable": {"thread_id": thread}}


def test_all_three_agree_passes_one_merged_brief() -> None:
    # the same findings, one copy with other spacing and case: normalized, they agree
    graph = build({"alpha": [N0, N1], "beta": [N0, N1],
                   "gamma": [N0.upper(), "  " + N1.replace(" ", "  ")]})
    out = graph.invoke({}, cfg("agree"))
    assert out["brief"] == ResearchBrief(question=RESEARCH_QUESTION, findings=[N0, N1])
    assert out["report"] == f"{N0} {N1}"
    [report] = out["reconciles"]
    assert report["resolution"] == "agreed"
    assert report["candidates"] == 3
    assert sorted(report["sources"]) == sorted(AGENTS)
    assert report["agreement"] == {"question": 1.0, "findings": 1.0}
    assert report["conflicts"] == [] and report["dissent"] == {}
    assert report["failure"] is None


def test_two_agree_one_conflicts_majority_records_dissent() -> None:
    graph = build({"alpha": [N0, N1], "beta": [N0, N2], "gamma": [N0, N1]})
    out = graph.invoke({}, cfg("majority"))
    assert out["brief"].findings == [N0, N1]
    [report] = out["reconciles"]
    assert report["resolution"] == "majority"
    assert report["conflicts"] == ["findings"]
    assert report["agreement"] == {"question": 1.0, "findings": round(2 / 3, 4)}
    assert report["dissent"] == {"findings": [{"source": "beta", "value": [N0, N2]}]}


def test_all_disagree_goes_to_a_human_with_values_and_provenance() -> None:
    graph = build({"alpha": [N0], "beta": [N1], "gamma": [N2]})
    config = cfg("review")
    out = graph.invoke({}, config)
    assert "brief" not in out or out["brief"] is None
    [(_, task, request)] = pending_reviews(graph.get_state(config))
    assert task == "merge"
    assert request["kind"] == "human_review" and request["contract"] == "ResearchBrief"
    assert request["value"] == {"question": RESEARCH_QUESTION, "findings": None}
    assert "no majority on findings" in request["policy_reason"]
    side_by_side = {c["source"]: c for c in request["provenance"]["conflicts"]["findings"]}
    assert side_by_side == {
        "alpha": {"source": "alpha", "value": [N0],
                  "provenance": {"agent": "alpha", "notes": "notes/alpha.md"}},
        "beta": {"source": "beta", "value": [N1],
                 "provenance": {"agent": "beta", "notes": "notes/beta.md"}},
        "gamma": {"source": "gamma", "value": [N2],
                  "provenance": {"agent": "gamma", "notes": "notes/gamma.md"}},
    }

    out = submit_review(graph, config, ReviewDecision.edit({"findings": [N1, N2]},
                                                           reviewer="ana"))
    assert out["brief"] == ResearchBrief(question=RESEARCH_QUESTION, findings=[N1, N2])
    assert out["report"] == f"{N1} {N2}"
    [report] = out["reconciles"]
    assert report["resolution"] == "review"
    assert report["decisions"] == {"findings": [N1, N2]}
    assert (report["reviewer"], report["comment"]) == ("ana", None)
    # the reviewer's findings are no candidate's: all three were overruled
    assert [d["source"] for d in report["dissent"]["findings"]] == list(AGENTS)


def test_dissent_after_a_review_is_measured_against_the_decision() -> None:
    graph = build({"alpha": [N0], "beta": [N1], "gamma": [N2]})
    config = cfg("review-picks-gamma")
    graph.invoke({}, config)
    out = submit_review(graph, config, ReviewDecision.edit({"findings": [N2]}, reviewer="ana"))
    [report] = out["reconciles"]
    assert report["dissent"] == {"findings": [{"source": "alpha", "value": [N0]},
                                              {"source": "beta", "value": [N1]}]}


def test_review_policy_reject_routes_to_on_conflict() -> None:
    graph = build({"alpha": [N0], "beta": [N0], "gamma": [N3]}, policy="review")
    config = cfg("reject")
    graph.invoke({}, config)
    out = submit_review(graph, config, ReviewDecision.reject("sources unreliable"))
    assert out["report"] == "halted"
    assert out["reconciles"][-1]["failure"] == "rejected by reviewer: sources unreliable"


def test_judge_callable_sees_conflicting_fields_and_sources() -> None:
    seen: list[dict[str, Any]] = []

    def judge(request: dict[str, Any]) -> dict[str, Any]:
        seen.append(request)
        return {"question": request["fields"]["question"][1]["value"]}

    graph = build({a: [N0] for a in AGENTS}, policy=judge,
                  question={"alpha": "q1", "beta": "q2", "gamma": "q3"})
    out = graph.invoke({}, cfg("judge"))
    [request] = seen
    assert set(request["fields"]) == {"question"}
    assert set(request["sources"]) == set(AGENTS)
    chosen = request["fields"]["question"][1]["value"]
    assert out["brief"].question == chosen
    assert out["reconciles"][0]["resolution"] == "judge"
    assert out["reconciles"][0]["decisions"] == {"question": chosen}


class Refund(Contract):
    order_id: Annotated[str, Verbatim()]
    amount: Annotated[Decimal, Verbatim()]
    weight: float
    note: str


def _merge(drafts: list[Any], **kw: Any) -> Any:
    node = reconcile(Refund, source="drafts", target="case", on_success="next",
                     on_conflict="fail", **kw)
    return node.invoke({"drafts": drafts})


def test_fields_compare_by_kind() -> None:
    a = {"order_id": "A-1001", "amount": "75.50", "weight": 1.0, "note": "Broken"}
    b = {"order_id": "a-1001", "amount": "75.5", "weight": 1.04, "note": "broken "}
    cmd = _merge([a, b], tolerance=0.05)
    assert cmd.goto == "next"
    assert cmd.update["reconciles"][0]["resolution"] == "agreed"
    assert cmd.update["case"].amount == Decimal("75.50")
    # without the tolerance, and with a strict text comparer, b is outvoted on both
    cmd = _merge([a, b, a], comparer=lambda x, y: x == y)
    report = cmd.update["reconciles"][0]
    assert report["resolution"] == "majority"
    assert report["conflicts"] == ["weight", "note"]
    assert report["dissent"]["note"] == [{"source": "candidate 1", "value": "broken "}]


def test_numbers_outside_tolerance_conflict() -> None:
    a = {"order_id": "A-1001", "amount": "75.50", "weight": 1.0, "note": "x"}
    b = {**a, "weight": 1.2}
    c = {**a, "amount": "75.51", "weight": 1.0}
    cmd = _merge([a, b, c], tolerance=0.1)
    report = cmd.update["reconciles"][0]
    assert report["conflicts"] == ["amount", "weight"]
    assert cmd.update["case"].amount == Decimal("75.50")
    assert cmd.update["case"].weight == 1.0


class Other(Contract):
    order_id: str


def test_zero_candidates_and_mixed_types_are_routed_failures() -> None:
    cmd = _merge([])
    assert cmd.goto == "fail"
    assert "at least one candidate" in cmd.update["reconciles"][0]["failure"]
    a = Refund(order_id="A-1", amount=Decimal(1), weight=1.0, note="x")
    cmd = _merge([a, Other(order_id="A-1")])
    assert cmd.goto == "fail"
    assert "is a Other, expected Refund" in cmd.update["reconciles"][0]["failure"]
    assert "case" not in cmd.update
    strict = reconcile(Refund, source="drafts", target="case")
    with pytest.raises(ReconcileError, match="got 0"):
        strict.invoke({"drafts": []})


@pytest.mark.parametrize(("kw", "message"), [
    ({"policy": "vote"}, "policy must be"),
    ({"policy": 3}, "policy must be"),
    ({"tolerance": -1}, "tolerance must be a number >= 0, got -1"),
    ({"comparer": "exact"}, "comparer must be a callable"),
    ({"source": ""}, "source must be a non-empty state key"),
])
def test_bad_configuration_raises_at_construction(kw: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {"source": "drafts", "target": "case", **kw}
    with pytest.raises(ConfigurationError, match=message):
        reconcile(Refund, **args)
    with pytest.raises(ConfigurationError, match="Contract subclass"):
        reconcile(dict, source="drafts", target="case")  # type: ignore[arg-type]


def test_judge_chat_model_answers_json() -> None:
    model = ScriptedChatModel(['The notes support beta: {"question": "q2"}'])
    graph = build({a: [N0] for a in AGENTS}, policy=model,
                  question={"alpha": "q1", "beta": "q2", "gamma": "q3"})
    out = graph.invoke({}, cfg("judge-model"))
    assert out["brief"].question == "q2"
    [call] = model.calls
    prompt = str(call.messages[-1].content)
    assert all(q in prompt for q in ("q1", "q2", "q3")) and "notes/gamma.md" in prompt


def test_judge_leaving_a_field_undecided_is_a_routed_failure() -> None:
    graph = build({a: [N0] for a in AGENTS}, policy=lambda request: {},
                  question={"alpha": "q1", "beta": "q2", "gamma": "q3"})
    out = graph.invoke({}, cfg("judge-empty"))
    assert out["report"] == "halted"
    assert "undecided: ['question']" in out["reconciles"][-1]["failure"]


def test_a_review_that_leaves_a_conflict_open_is_asked_again() -> None:
    graph = build({"alpha": [N0], "beta": [N1], "gamma": [N2]})
    config = cfg("reask")
    graph.invoke({}, config)
    submit_review(graph, config, ReviewDecision.edit({"question": "other"}))
    [(_, _, request)] = pending_reviews(graph.get_state(config))
    assert request["attempt"] == 2
    assert "missing ['findings']" in request["error"]
    out = submit_review(graph, config, ReviewDecision.edit({"findings": [N0]}))
    assert out["brief"].findings == [N0]


def test_the_timeline_shows_the_reconcile_report() -> None:
    graph = build({"alpha": [N0, N1], "beta": [N0, N2], "gamma": [N0, N1]})
    config = cfg("timeline")
    graph.invoke({}, config)
    tl = timeline(graph, config)
    [step] = [s for s in tl.steps if s.node == "merge"]
    [report] = step.reconciles
    assert report["resolution"] == "majority"
    assert "reconciles" not in step.received
    console = Console(file=io.StringIO(), width=250)
    tl.render(console)
    text = console.file.getvalue()
    assert "reconcile ResearchBrief: 3 candidates → majority, conflicts ['findings']" in text


async def test_an_async_judge_decides_in_an_async_run() -> None:
    async def judge(request: dict[str, Any]) -> dict[str, Any]:
        return {"question": "q3"}

    questions = {"alpha": "q1", "beta": "q2", "gamma": "q3"}
    graph = build({a: [N0] for a in AGENTS}, policy=judge, question=questions)
    out = await graph.ainvoke({}, cfg("async-judge"))
    assert out["brief"].question == "q3"
    assert out["reconciles"][0]["decisions"] == {"question": "q3"}
    # the same judge in a sync run cannot be awaited: a routed failure, not a pass
    out = build({a: [N0] for a in AGENTS}, policy=judge, question=questions).invoke(
        {}, cfg("async-judge-sync"))
    assert out["report"] == "halted"
    [report] = out["reconciles"]
    assert "async judge needs an async run" in report["failure"]
    assert report["conflicts"] == ["question"] and report["candidates"] == 3
