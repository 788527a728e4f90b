"""``pipeline()``: build-time checks against the state schema, Budget and breaker-gate stages,
an approved escalation as the draft's review, and the compressor's cost in ``usage``."""

from __future__ import annotations

from typing import Annotated, Any

import pytest
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph.message import add_messages
from pydantic import Field

from relaygraph import ConfigurationError
from relaygraph.graphs import Agent, Budget, Guard, Handoff, Review, pipeline
from relaygraph.guards import CircuitBreaker
from relaygraph.nodes import Contract, HandoffState, Verbatim, contract_serializer
from relaygraph.nodes._review import submit_review
from relaygraph.observe import Pricing
from relaygraph.testing import ScriptedChatModel


class Draft(Contract):
    """A draft answer."""

    order_id: Annotated[str, Verbatim()] = Field(description="order id as written")
    text: str
    confidence: float = Field(ge=0, le=1)


class S(HandoffState, total=False):
    messages: Annotated[list[AnyMessage], add_messages]
    draft: Draft | None
    answer: str | None


INPUT = {"messages": [HumanMessage("Order A-17 never arrived.")]}


def _config(thread: str) -> dict[str, Any]:
    return {"configurable": {"thread_id": thread}}


def _saver() -> InMemorySaver:
    return InMemorySaver(serde=contract_serializer(Draft))


def _intake(state: Any) -> dict[str, Any]:
    return {"messages": [AIMessage("looked at it", name="intake")]}


def _compress(confidence: float) -> Any:
    def compress(messages: Any, contract: type, feedback: Any) -> dict[str, Any]:
        return {"order_id": "A-17", "text": "resend", "confidence": confidence}

    return compress


def _answer(state: Any) -> dict[str, Any]:
    return {"answer": f"resent {state['draft'].order_id}"}


def _handoff(compressor: Any) -> Handoff:
    return Handoff("to_writer", Draft, source="messages", target="draft",
                   compressor=compressor, max_repairs=0)


# -- build-time checks ------------------------------------------------------------------


def test_a_misspelt_guard_score_path_fails_at_build_time() -> None:
    with pytest.raises(ConfigurationError, match=r"'draft.confidenc' does not exist in S: "
                       r"'confidenc' is not a field of draft; known fields: confidence"):
        pipeline(Agent("intake", _intake, track=False), _handoff(_compress(0.9)),
                 Guard("check", score="draft.confidenc", threshold=0.8),
                 Agent("writer", _answer, track=False), state_schema=S)


def test_a_review_subject_missing_from_the_state_fails_at_build_time() -> None:
    with pytest.raises(ConfigurationError, match=r"Review 'final': subject 'drafts' is not "
                       r"a key of S \(keys: .*draft"):
        pipeline(Agent("intake", _intake, track=False), _handoff(_compress(0.9)),
                 Review("final", subject="drafts"), state_schema=S)


def test_a_guard_score_root_missing_from_the_default_schema_is_caught() -> None:
    # without a state_schema the state has the handoff targets: a path into the
    # contract is still checked field by field
    with pytest.raises(ConfigurationError, match="'confidenc' is not a field of draft"):
        pipeline(Agent("intake", _intake, track=False), _handoff(_compress(0.9)),
                 Guard("check", score="draft.confidenc", threshold=0.8))


# -- an approved escalation is the draft's review ----------------------------------------


def _reviewed(confidence: float) -> Any:
    return pipeline(
        Agent("intake", _intake, track=False), _handoff(_compress(confidence)),
        Guard("check", score="draft.confidence", threshold=0.8, max_retries=0),
        Review("final", subject="draft"),
        Agent("writer", _answer, track=False), state_schema=S,
    ).compile(checkpointer=_saver())


def test_approving_an_escalation_does_not_send_the_draft_to_the_final_review_again() -> None:
    graph, config = _reviewed(0.3), _config("esc")
    graph.invoke(INPUT, config)
    assert graph.get_state(config).next == ("check_review",)
    submit_review(graph, config, {"action": "approve", "reviewer": "ops"})
    snap = graph.get_state(config)
    assert snap.next == () and not snap.interrupts
    assert snap.values["answer"] == "resent A-17"
    assert [r["node"] for r in snap.values["reviews"]] == ["check_review"]


def test_a_confident_draft_still_meets_the_final_review() -> None:
    graph, config = _reviewed(0.95), _config("ok")
    graph.invoke(INPUT, config)
    assert graph.get_state(config).next == ("final",)


# -- Budget stage --------------------------------------------------------------------------


def _spender(tokens: int) -> Any:
    def intake(state: Any) -> dict[str, Any]:
        return {"messages": [AIMessage("ok", name="intake", response_metadata={
            "model_name": "m"}, usage_metadata={"input_tokens": tokens, "output_tokens": 0,
                                                "total_tokens": tokens})]}

    return intake


def _budgeted(tokens: int) -> Any:
    return pipeline(
        Agent("intake", _spender(tokens)),
        Budget("budget", max_tokens=1000),
        Agent("writer", lambda s: {"answer": "done"}, track=False), state_schema=S,
    ).compile(checkpointer=InMemorySaver())


def test_a_run_within_budget_passes_the_budget_stage() -> None:
    out = _budgeted(100).invoke(INPUT, _config("cheap"))
    assert out["answer"] == "done"
    assert [g["route"] for g in out["guard_log"]] == ["pass"]


@pytest.mark.parametrize(("action", "answer"), [("approve", "done"), ("reject", None)])
def test_a_run_over_budget_asks_a_human(action: str, answer: str | None) -> None:
    graph, config = _budgeted(5000), _config(f"dear-{action}")
    graph.invoke(INPUT, config)
    snap = graph.get_state(config)
    assert snap.next == ("budget_review",)
    assert snap.values["guard_log"][-1]["route"] == "escalate"
    decision = {"action": action, **({"reason": "too dear"} if action == "reject" else {})}
    submit_review(graph, config, decision)
    assert graph.get_state(config).values.get("answer") == answer


# -- breaker gate --------------------------------------------------------------------------


def _gated(breaker: CircuitBreaker, calls: list[int]) -> Any:
    def writer(state: Any) -> dict[str, Any]:
        calls.append(1)
        return {"draft": Draft(order_id="A-17", text="resend", confidence=0.95)}

    return pipeline(
        Agent("intake", _intake, track=False),
        Agent("writer", writer, track=False),
        Guard("check", score="draft.confidence", threshold=0.8, breaker=breaker),
        Agent("sender", _answer, track=False), state_schema=S,
    ).compile(checkpointer=_saver())


def test_a_guard_with_a_breaker_puts_a_gate_before_its_agent() -> None:
    breaker = CircuitBreaker("writer", min_calls=2, window=4, failure_rate=0.5)
    calls: list[int] = []
    graph = _gated(breaker, calls)
    assert {"writer_gate", "writer_gate_review"} <= set(graph.get_graph().nodes)
    out = graph.invoke(INPUT, _config("closed"))
    assert out["answer"] == "resent A-17" and calls == [1]
    assert [g["route"] for g in out["guard_log"]] == ["allow", "pass"]


def test_an_open_breaker_skips_the_agent_and_a_human_fills_in_its_output() -> None:
    breaker = CircuitBreaker("writer", min_calls=2, window=4, failure_rate=0.5)
    breaker.record(False)
    breaker.record(False)
    calls: list[int] = []
    graph, config = _gated(breaker, calls), _config("open")
    graph.invoke(INPUT, config)
    snap = graph.get_state(config)
    assert snap.next == ("writer_gate_review",) and calls == []
    assert snap.values["guard_log"][-1]["route"] == "block"
    submit_review(graph, config, {"action": "edit", "edits": {
        "order_id": "A-17", "text": "refund instead", "confidence": 1.0}}, )
    final = graph.get_state(config).values
    assert final["answer"] == "resent A-17" and calls == []


# -- compressor cost ------------------------------------------------------------------------


def test_the_handoff_compressors_model_calls_count_in_usage() -> None:
    model = ScriptedChatModel([{"order_id": "A-17", "text": "resend", "confidence": 0.9}],
                              model_name="m")
    graph = pipeline(
        Agent("intake", _intake, track=False),
        Handoff("to_writer", Draft, source="messages", target="draft", compressor=model,
                max_repairs=0, pricing=Pricing({"m": (1.0, 2.0)})),
        Agent("writer", _answer, track=False), state_schema=S,
    ).compile(checkpointer=_saver())
    out = graph.invoke(INPUT, _config("cost"))
    from relaygraph.observe import timeline

    (step,) = timeline(graph, _config("cost")).by_node("to_writer")
    assert step.usage == out["usage"] and step.cost > 0  # the timeline shows it in its step
    used = out["usage"]["to_writer"]["m"]
    assert used["calls"] == 1 and used["input_tokens"] > 0 and used["output_tokens"] > 0
    assert used["cost"] == pytest.approx(
        (used["input_tokens"] * 1.0 + used["output_tokens"] * 2.0) / 1e6)
