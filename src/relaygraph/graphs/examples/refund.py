"""Customer refund: intake agent → handoff ``RefundCase`` → confidence guard → resolver → review.

The intake agent talks to the customer; a handoff compresses the chat into a validated
``RefundCase`` (order id and amount checked verbatim against the transcript); a confidence
guard lets confident cases through, sends unsure ones back once and escalates the rest to a
human; the resolver proposes a refund that a human approves before it is issued.

Everything is deterministic and offline, so the workflow runs in tests and in
``relaygraph demo``.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.types import interrupt
from pydantic import BaseModel, ConfigDict, Field

from relaygraph._clock import Clock, now_iso, system_clock
from relaygraph.graphs._state import RelayState
from relaygraph.graphs.examples._data import REFUND_TRANSCRIPT

GRAPH_ID = "refund"


class RefundCase(BaseModel):
    """What the resolver needs to know about a refund request, and nothing more."""

    model_config = ConfigDict(extra="forbid")

    order_id: str = Field(description="The order number exactly as the customer wrote it.")
    amount: Decimal = Field(description="The amount paid, as stated by the customer.")
    reason: str = Field(description="Why the customer wants a refund, in one sentence.")
    wants: str = Field(description="refund, replacement or store credit")
    confidence: float = Field(ge=0, le=1, description="How sure the intake agent is.")


class RefundState(RelayState, total=False):
    """State of the refund workflow: the chat, the contract and the proposed resolution."""

    messages: Annotated[list[AnyMessage], add_messages]
    case: dict[str, Any] | None
    resolution: dict[str, Any] | None
    status: str


def transcript_messages() -> list[AnyMessage]:
    """The scripted customer chat as LangChain messages (the workflow's input)."""
    out: list[AnyMessage] = []
    for role, text in REFUND_TRANSCRIPT:
        out.append(HumanMessage(text) if role == "human" else AIMessage(text))
    return out


def _usage(agent: str, model: str, inp: int, out: int, price_in: float, price_out: float) -> dict:
    cost = inp * price_in / 1e6 + out * price_out / 1e6
    return {agent: {model: {"calls": 1, "input_tokens": inp, "output_tokens": out,
                            "cost": round(cost, 8)}}}


def build_refund_graph(*, confidence: float = 0.92, clock: Clock = system_clock) -> StateGraph:
    """Build (not compile) the refund workflow.

    Args:
        confidence: the confidence the scripted intake agent reports; below 0.8 the guard
            sends the case back once and then escalates it to a human.
        clock: time source for the records.

    Returns:
        A ``StateGraph`` over `RefundState`; compile it with a checkpointer.
    """

    def intake(state: RefundState) -> dict[str, Any]:
        text = "Thanks Dana, I have everything I need and I'm passing this to our resolver."
        return {
            "messages": [AIMessage(text, name="intake")],
            "usage": _usage("intake", "scripted-small", 412, 38, 0.15, 0.6),
        }

    def to_resolver(state: RefundState) -> dict[str, Any]:
        case = RefundCase(order_id="A-10293", amount=Decimal("249.99"),
                          reason="The desk arrived with a cracked leg.", wants="refund",
                          confidence=confidence)
        report = {
            "contract": "RefundCase", "source_tokens": 161, "brief_tokens": 38,
            "ratio": round(38 / 161, 3), "fields": list(RefundCase.model_fields),
            "verbatim": {
                "order_id": {"passed": True, "value": "A-10293"},
                "amount": {"passed": True, "value": "249.99"},
            },
            "repairs": 0, "failure": None, "at": now_iso(clock), "node": "to_resolver",
        }
        return {"case": case.model_dump(mode="json"), "handoffs": [report]}

    def check(state: RefundState) -> dict[str, Any]:
        score = float((state.get("case") or {}).get("confidence", 0.0))
        route = "resolver" if score >= 0.8 else "review"
        return {"guard_log": [{"guard": "check", "score": score, "threshold": 0.8,
                               "failed_checks": [], "route": route, "breaker_state": "closed",
                               "at": now_iso(clock)}]}

    def resolver(state: RefundState) -> dict[str, Any]:
        case = state.get("case") or {}
        proposal = {"action": "refund", "order_id": case.get("order_id"),
                    "amount": case.get("amount"), "note": "Damaged on arrival; full refund."}
        return {
            "resolution": proposal,
            "messages": [AIMessage(f"Proposed: refund {proposal['amount']} for "
                                   f"{proposal['order_id']}.", name="resolver")],
            "usage": _usage("resolver", "scripted-large", 96, 54, 2.5, 10.0),
        }

    def review(state: RefundState) -> dict[str, Any]:
        request = {"kind": "human_review", "node": "review", "subject": "resolution",
                   "value": state.get("resolution") or state.get("case"),
                   "actions": ["approve", "edit", "reject"]}
        decision = interrupt(request)
        action = decision.get("action", "approve") if isinstance(decision, dict) else "approve"
        record = {"node": "review", "request": request, "decision": action,
                  "edits": (decision or {}).get("edits", {}) if isinstance(decision, dict) else {},
                  "reviewer": (decision or {}).get("reviewer") if isinstance(decision, dict)
                  else None,
                  "comment": None, "policy_reason": "first reviews are always asked",
                  "at": now_iso(clock)}
        status = "refunded" if action in ("approve", "edit") else "rejected"
        return {"reviews": [record], "status": status}

    builder = StateGraph(RefundState)
    builder.add_node("intake", intake)
    builder.add_node("to_resolver", to_resolver)
    builder.add_node("check", check)
    builder.add_node("resolver", resolver)
    builder.add_node("review", review)
    builder.add_edge(START, "intake")
    builder.add_edge("intake", "to_resolver")
    builder.add_edge("to_resolver", "check")
    builder.add_conditional_edges("check", lambda s: s["guard_log"][-1]["route"],
                                  ["resolver", "review"])
    builder.add_edge("resolver", "review")
    builder.add_edge("review", END)
    return builder


def refund_input() -> dict[str, Any]:
    """The input that starts the example: the scripted customer chat."""
    return {"messages": transcript_messages()}
