"""The timeline and cost of a multi-agent run, rebuilt from SQL checkpoints, field by field."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

import pytest
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from langgraph.graph import START, StateGraph
from langgraph.graph.message import add_messages
from rich.console import Console

from relaygraph.checkpointers import SQLAlchemySaver
from relaygraph.guards import ConfidenceGuard
from relaygraph.nodes import (
    Contract,
    HandoffState,
    HumanReview,
    Verbatim,
    contract_serializer,
    handoff,
    submit_review,
    track_agent,
)
from relaygraph.observe import Pricing, atimeline, timeline
from relaygraph.testing import ScriptedChatModel

PRICING = Pricing({"model-a": (1.0, 2.0), "model-b": (10.0, 20.0)}, as_of="2026-01-01",
                  include_defaults=False)
T0 = 1_800_000_000.0


class RefundCase(Contract):
    order_id: Annotated[str, Verbatim()]
    amount: Annotated[Decimal, Verbatim()]
    confidence: float


class State(HandoffState, total=False):
    messages: Annotated[list[AnyMessage], add_messages]
    case: RefundCase | None
    resolution: str
    filed: bool


def usage(i: int, o: int) -> dict[str, int]:
    return {"input_tokens": i, "output_tokens": o, "total_tokens": i + o}


class Timer:
    def __init__(self, step: float) -> None:
        self.t, self.step = 0.0, step

    def __call__(self) -> float:
        self.t += self.step
        return self.t


def clock() -> float:
    return T0


def build():
    intake_model = ScriptedChatModel([AIMessage(
        "Customer wants a refund of 42.50 for order A-1.", id="intake-0",
        usage_metadata=usage(1200, 300))], model_name="model-a")
    resolver_model = ScriptedChatModel([AIMessage(
        "", id="resolver-0", tool_calls=[{"name": "refund", "args": {"order": "A-1"},
                                           "id": "call-1"}],
        usage_metadata=usage(400, 80))], model_name="model-b")

    def intake(state: State) -> dict[str, Any]:
        return {"messages": [intake_model.invoke(state["messages"])]}

    def compress(messages: Any, contract: type, feedback: Any) -> dict[str, Any]:
        return {"order_id": "A-1", "amount": "42.50", "confidence": 0.93}

    def resolver(state: State) -> dict[str, Any]:
        reply = resolver_model.invoke(f"resolve {state['case'].order_id}")
        return {"messages": [reply], "resolution": "refund 42.50"}

    def crm(state: State) -> dict[str, Any]:
        return {"filed": True}

    b = StateGraph(State)
    b.add_node("intake", track_agent(intake, pricing=PRICING, timer=Timer(0.5), clock=clock))
    b.add_node("to_resolver", handoff(RefundCase, source="messages", target="case",
                                      compressor=compress, on_success="check", clock=clock))
    b.add_node("check", ConfidenceGuard("case.confidence", 0.8, on_pass="resolver",
                                        on_escalate="review", clock=clock))
    b.add_node("resolver", track_agent(resolver, pricing=PRICING, timer=Timer(0.25),
                                       clock=clock))
    b.add_node("review", HumanReview("case", on_approve="crm", on_reject="resolver",
                                     agent="resolver", clock=clock))
    b.add_node("crm", crm)
    b.add_edge(START, "intake")
    b.add_edge("intake", "to_resolver")
    b.add_edge("resolver", "review")
    return b


@pytest.fixture
def run(sqlite_backend):
    with SQLAlchemySaver.from_conn_string(sqlite_backend.url,
                                          serde=contract_serializer(RefundCase)) as saver:
        saver.setup()
        graph = build().compile(checkpointer=saver)
        cfg = {"configurable": {"thread_id": "refund-7"}}
        graph.invoke({"messages": [HumanMessage("My order A-1 arrived broken, refund 42.50",
                                                id="h-0")]}, cfg)
        yield graph, cfg


INTAKE_COST = (1200 * 1.0 + 300 * 2.0) / 1e6  # 0.0018
RESOLVER_COST = (400 * 10.0 + 80 * 20.0) / 1e6  # 0.0056


def test_paused_run_timeline(run) -> None:
    graph, cfg = run
    tl = timeline(graph, cfg)
    assert tl.thread_id == "refund-7"
    assert tl.status == "waiting"
    assert tl.next == ["review"]
    assert [(s.node, s.status) for s in tl.steps] == [
        ("__start__", "done"), ("intake", "done"), ("to_resolver", "done"), ("check", "done"),
        ("resolver", "done"), ("review", "interrupted")]
    review = tl.steps[-1]
    assert review.wrote == {} and review.ended_at is None and review.duration_s is None
    [request] = review.interrupts
    assert request["kind"] == "human_review" and request["confidence"] == 0.93
    assert request["guard"] == "check" and request["guard_route"] == "pass"
    assert request["provenance"]["order_id"]["passed"] is True
    assert tl.cost == pytest.approx(INTAKE_COST + RESOLVER_COST)


def test_finished_run_timeline_field_by_field(run) -> None:
    graph, cfg = run
    submit_review(graph, cfg, {"action": "approve", "reviewer": "ana", "comment": "ok"})
    tl = timeline(graph, cfg)
    assert tl.status == "finished" and tl.next == []
    assert [s.node for s in tl.steps] == ["__start__", "intake", "to_resolver", "check",
                                          "resolver", "review", "crm"]
    assert [s.step for s in tl.steps] == [-1, 0, 1, 2, 3, 4, 5]
    start, intake, to_resolver, check, resolver, review, crm = tl.steps
    assert all(s.status == "done" for s in tl.steps)

    assert sorted(start.wrote) == ["messages"]

    assert intake.received == ["messages"]
    assert sorted(intake.wrote) == ["agent_runs", "messages", "usage"]
    assert intake.wrote["messages"][0].content.startswith("Customer wants a refund")
    [ir] = intake.agent_runs
    assert (ir["agent"], ir["node"], ir["models"], ir["calls"], ir["tool_calls"]) == (
        "intake", "intake", ["model-a"], 1, [])
    assert (intake.input_tokens, intake.output_tokens) == (1200, 300)
    assert intake.cost == pytest.approx(INTAKE_COST)
    assert intake.latency_ms == 500.0
    assert intake.next == ["to_resolver"]
    assert intake.guard_decisions == [] and intake.reviews == [] and intake.handoffs == []

    [report] = to_resolver.handoffs
    assert report["contract"] == "RefundCase"
    assert report["verbatim"]["order_id"]["passed"] is True
    assert report["verbatim"]["amount"]["passed"] is True
    assert report["failure"] is None
    assert to_resolver.wrote["case"] == RefundCase(order_id="A-1", amount=Decimal("42.50"),
                                                   confidence=0.93)
    assert to_resolver.next == ["check"] and to_resolver.usage == {}

    [decision] = check.guard_decisions
    assert decision["guard"] == "check" and decision["score"] == 0.93
    assert decision["threshold"] == 0.8 and decision["route"] == "pass"
    assert check.next == ["resolver"]

    assert resolver.received == ["case", "handoff_sources", "messages"]
    [rr] = resolver.agent_runs
    assert rr["tool_calls"] == ["refund"] and rr["models"] == ["model-b"]
    assert rr["output_keys"] == ["messages", "resolution"]
    assert resolver.usage == {"resolver": {"model-b": {
        "calls": 1, "input_tokens": 400, "output_tokens": 80,
        "cost": pytest.approx(RESOLVER_COST)}}}
    assert resolver.latency_ms == 250.0
    assert resolver.next == ["review"]

    [rec] = review.reviews
    assert (rec["decision"], rec["reviewer"], rec["comment"]) == ("approve", "ana", "ok")
    assert review.interrupts == [] and review.next == ["crm"]
    assert review.duration_s is not None and review.duration_s >= 0

    assert crm.wrote == {"filed": True} and crm.next == []

    assert tl.usage == {
        "intake": {"model-a": {"calls": 1, "input_tokens": 1200, "output_tokens": 300,
                               "cost": pytest.approx(INTAKE_COST)}},
        "resolver": {"model-b": {"calls": 1, "input_tokens": 400, "output_tokens": 80,
                                 "cost": pytest.approx(RESOLVER_COST)}},
    }
    assert tl.cost == pytest.approx(INTAKE_COST + RESOLVER_COST)
    assert tl.cost == pytest.approx(sum(s.cost for s in tl.steps))
    assert tl.cost_by_agent == {"intake": pytest.approx(INTAKE_COST),
                                "resolver": pytest.approx(RESOLVER_COST)}
    assert (tl.input_tokens, tl.output_tokens) == (1600, 380)
    assert tl.pricing_as_of == "2026-01-01"

    data = tl.to_dict()
    assert data["status"] == "finished" and len(data["steps"]) == 7
    assert data["steps"][1]["cost"] == pytest.approx(INTAKE_COST)


def test_repricing_and_time_travel(run) -> None:
    graph, cfg = run
    submit_review(graph, cfg, {"action": "approve"})
    cheaper = PRICING.with_prices({"model-b": (1.0, 1.0)}, as_of="2026-06-01")
    tl = timeline(graph, cfg, pricing=cheaper)
    assert tl.cost_by_agent["resolver"] == pytest.approx((400 + 80) / 1e6)
    assert tl.pricing_as_of == "2026-06-01"
    # the timeline up to an earlier checkpoint
    history = list(graph.get_state_history(cfg))
    at_check = next(s for s in history if s.next == ("check",))
    early = timeline(graph, at_check.config)
    assert [s.node for s in early.steps] == ["__start__", "intake", "to_resolver", "check"]
    assert early.steps[-1].status == "pending" and early.next == ["check"]
    assert early.cost == pytest.approx(INTAKE_COST)


async def test_async_timeline_matches(sqlite_backend) -> None:
    from relaygraph.checkpointers import AsyncSQLAlchemySaver

    async with AsyncSQLAlchemySaver.from_conn_string(
            sqlite_backend.async_url, serde=contract_serializer(RefundCase)) as saver:
        await saver.asetup()
        graph = build().compile(checkpointer=saver)
        cfg = {"configurable": {"thread_id": "async-1"}}
        await graph.ainvoke({"messages": [HumanMessage("refund A-1 42.50", id="h")]}, cfg)
        tl = await atimeline(graph, cfg)
        assert [s.node for s in tl.steps][-2:] == ["resolver", "review"]
        assert tl.status == "waiting"
        assert tl.cost == pytest.approx(INTAKE_COST + RESOLVER_COST)


def test_rich_and_html_rendering(run) -> None:
    graph, cfg = run
    tl = timeline(graph, cfg)
    console = Console(record=True, width=200)
    console.print(tl)
    text = console.export_text()
    assert "thread refund-7 · waiting" in text
    assert "guard check: 0.93 → pass" in text
    assert "handoff RefundCase" in text
    assert "1200/300" in text and "$0.001800" in text
    assert "waiting for review" in text
    assert "prices as of 2026-01-01" in text
    assert "0.007400" in text  # total
    html = tl._repr_html_()
    assert html.startswith('<div class="relaygraph-timeline">')
    assert "<td>intake</td>" in html and "0.007400" in html
    assert "→ pass" in html


def test_html_escapes_state_content() -> None:
    from relaygraph.observe import Timeline, TimelineStep

    step = TimelineStep(step=0, node="<script>x</script>", task_id="t", checkpoint_id="c",
                        status="done", received=[], wrote={"a<b": 1})
    html = Timeline(thread_id="<t>", steps=[step], usage={}, next=[])._repr_html_()
    assert "<script>" not in html and "&lt;script&gt;" in html and "&lt;t&gt;" in html


def test_empty_thread() -> None:
    from langgraph.checkpoint.memory import InMemorySaver

    graph = build().compile(checkpointer=InMemorySaver())
    tl = timeline(graph, {"configurable": {"thread_id": "nothing"}})
    assert tl.steps == [] and tl.cost == 0.0 and tl.status == "finished"
