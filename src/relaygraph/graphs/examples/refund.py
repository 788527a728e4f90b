"""Customer refund: intake agent → handoff ``RefundCase`` → confidence guard → resolver → review.

The intake agent talks to the customer. A handoff compresses the chat into a validated
``RefundCase``: the order id, amount and email are checked verbatim against the
transcript (the scripted compressor misquotes the amount on its first try, so the demo
shows a repair). A confidence guard lets confident cases through, sends unsure ones back to
intake once and escalates the rest to a human. The resolver sees only the brief, proposes a
resolution, and a human approves it before it is issued.

Everything is deterministic and offline (scripted models), so the workflow runs in tests
and in ``relaygraph demo``. Swap the scripted models for real ones
(``init_chat_model("provider:model")``) to run it for real.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from decimal import Decimal
from typing import Annotated, Any, Literal

from langchain_core.messages import AIMessage, AnyMessage, BaseMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.graph import StateGraph
from langgraph.graph.message import add_messages
from pydantic import BaseModel, ConfigDict, Field

from relaygraph._clock import Clock, system_clock
from relaygraph.graphs._pipeline import Agent, Guard, Handoff, Review, pipeline
from relaygraph.graphs.examples._data import REFUND_TRANSCRIPT
from relaygraph.graphs.examples._util import fresh_id as _fresh_id
from relaygraph.nodes import (
    AutonomyPolicy,
    Contract,
    HandoffFeedback,
    HandoffState,
    Verbatim,
    render_brief,
)
from relaygraph.observe import Pricing
from relaygraph.testing import ScriptedChatModel

GRAPH_ID = "refund"

PRICING = Pricing({"scripted-small": (0.15, 0.60), "scripted-large": (2.50, 10.00)},
                  as_of="2026-01-01")
"""Prices (USD per million input / output tokens) of the example's scripted models."""


class RefundCase(Contract):
    """A refund request, ready for the resolver."""

    order_id: Annotated[str, Verbatim()] = Field(description="order number as written")
    amount: Annotated[Decimal, Verbatim()] = Field(description="amount the customer paid")
    customer_email: Annotated[str | None, Verbatim()] = None
    reason: str = Field(description="why the customer wants a refund, one sentence")
    wants: Literal["refund", "replacement", "store credit"]
    confidence: float = Field(ge=0, le=1, description="how sure the intake agent is")


class Resolution(BaseModel):
    """What the resolver proposes; a human approves, edits or rejects it."""

    model_config = ConfigDict(extra="forbid")

    action: Literal["refund", "replacement", "store credit", "deny"]
    order_id: str
    amount: Decimal
    note: str


class RefundState(HandoffState, total=False):
    """The chat, the handoff contract and the proposed resolution."""

    messages: Annotated[list[AnyMessage], add_messages]
    case: RefundCase | None
    resolution: Resolution | None


def transcript_messages() -> list[AnyMessage]:
    """The scripted customer chat as LangChain messages (the workflow's input)."""
    return [HumanMessage(text) if role == "human" else AIMessage(text)
            for role, text in REFUND_TRANSCRIPT]


def refund_input() -> dict[str, Any]:
    """The input that starts the example: the scripted customer chat."""
    return {"messages": transcript_messages()}


def scripted_compressor(confidence: float = 0.92):  # noqa: ANN201 - returns a callable
    """A deterministic compressor that reads the transcript like a careful model would.

    On its first try it misquotes the amount (``249.00``), as models sometimes do; the
    handoff's verbatim check catches it and the repair (with feedback) gets it right.
    """

    def compress(messages: Sequence[BaseMessage], contract: type[RefundCase],
                 feedback: HandoffFeedback | None) -> dict[str, Any]:
        text = "\n".join(str(m.content) for m in messages)
        order = re.search(r"\b[A-Z]-\d{4,}\b", text)
        amount = re.search(r"\$(\d+(?:\.\d{2})?)", text)
        email = re.search(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+", text)
        paid = amount.group(1) if amount else "0"
        if feedback is None and amount:
            paid = paid.split(".")[0] + ".00"  # the distortion the verbatim check catches
        return {
            "order_id": order.group(0) if order else "unknown",
            "amount": paid,
            "customer_email": email.group(0) if email else None,
            "reason": "The desk arrived with a cracked leg.",
            "wants": "refund" if "money back" in text or "refund" in text else "replacement",
            "confidence": confidence,
        }

    return compress


def _intake_model() -> ScriptedChatModel:
    return ScriptedChatModel(
        ["Thanks, I have everything I need and I'm passing your case to our resolver."],
        cycle=True, model_name="scripted-small")


def _resolver_model() -> ScriptedChatModel:
    return ScriptedChatModel(
        ["The item was damaged on arrival and the customer asked for money back: "
         "propose a full refund."], cycle=True, model_name="scripted-large")


def build_refund_graph(*, confidence: float = 0.92, threshold: float = 0.8,
                       policy: AutonomyPolicy | None = None,
                       clock: Clock = system_clock) -> StateGraph:
    """Build (not compile) the refund workflow with `pipeline`.

    Args:
        confidence: the confidence the scripted compressor reports; below ``threshold``
            the guard sends the case back to intake once, then escalates it to a human.
        threshold: the confidence guard's threshold.
        policy: an `AutonomyPolicy` for the final review (decision kind ``"refund"``):
            once the resolver has earned trust, some refunds skip the human. Without one,
            every refund is reviewed.
        clock: time source for every record.

    Returns:
        A ``StateGraph`` over `RefundState`; compile it with a checkpointer.
    """
    intake_model, resolver_model = _intake_model(), _resolver_model()

    def intake(state: RefundState, config: RunnableConfig) -> dict[str, Any]:
        reply = intake_model.invoke(state.get("messages", []), config)
        return {"messages": [_fresh_id(reply, "intake")]}

    def resolver(state: RefundState, config: RunnableConfig) -> dict[str, Any]:
        case = state.get("case")
        if case is None:
            raise ValueError("the resolver needs a RefundCase in state['case']")
        # the resolver sees the brief, not the transcript
        reply = resolver_model.invoke([HumanMessage(render_brief(case))], config)
        action = case.wants if case.wants != "replacement" else "replacement"
        return {
            "messages": [_fresh_id(reply, "resolver")],
            "resolution": Resolution(action=action, order_id=case.order_id,
                                     amount=case.amount, note=str(reply.content)),
        }

    return pipeline(
        Agent("intake", intake, options={"pricing": PRICING, "clock": clock}),
        Handoff("to_resolver", RefundCase, source="messages", target="case",
                compressor=scripted_compressor(confidence), clock=clock),
        Guard("check", score="case.confidence", threshold=threshold, max_retries=1,
              clock=clock),
        Agent("resolver", resolver, options={"pricing": PRICING, "clock": clock}),
        Review("review", subject="resolution", contract=Resolution, kind="refund",
               policy=policy, clock=clock),
        state_schema=RefundState,
        review_options={"clock": clock},
    )
