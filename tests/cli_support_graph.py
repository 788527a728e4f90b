"""A user's own graph, hand-built (not ``pipeline()``), for the CLI tests.

``support=cli_support_graph:builder`` (an uncompiled StateGraph) and
``support_factory=cli_support_graph:make_graph`` (a factory) load it from the command line.
"""

from __future__ import annotations

from typing import Any

from langchain_core.messages import AIMessage
from langgraph.graph import END, START, MessagesState, StateGraph
from pydantic import Field

from relaygraph.graphs import RelayState
from relaygraph.guards import ConfidenceGuard
from relaygraph.nodes import Contract, HumanReview, track_agent
from relaygraph.observe import Pricing


class Reply(Contract):
    """The answer a human approves before it is sent."""

    text: str
    credit: float = Field(ge=0, le=100)
    confidence: float = Field(ge=0, le=1)


class SupportState(MessagesState, RelayState, total=False):
    reply: Reply | None
    sent: str | None
    confidence_in: float


PRICING = Pricing({"m-small": (1.0, 2.0)}, as_of="2026-01-01")
BROKEN = {"send": False}
"""Tests flip this to make ``send`` raise (a failed thread)."""


def draft(state: dict[str, Any]) -> dict[str, Any]:
    conf = float(state.get("confidence_in", 0.9))
    tokens = 100 + 10 * len(state.get("messages", []))
    return {
        "reply": Reply(text="we are sorry, here is a credit", credit=10.0, confidence=conf),
        "messages": [AIMessage("drafted", name="draft", response_metadata={
            "model_name": "m-small"}, usage_metadata={
            "input_tokens": tokens, "output_tokens": 20, "total_tokens": tokens + 20})],
    }


def send(state: dict[str, Any]) -> dict[str, Any]:
    if BROKEN["send"]:
        raise RuntimeError("the mail server refused the message")
    reply = state["reply"]
    return {"sent": f"{reply.text} ({reply.credit:.2f})"}


def make_builder() -> StateGraph:
    b = StateGraph(SupportState)
    b.add_node("draft", track_agent(draft, name="draft", pricing=PRICING))
    b.add_node("check", ConfidenceGuard(score="reply.confidence", threshold=0.8,
                                        on_pass="review", on_retry="draft",
                                        on_escalate="review", max_retries=1))
    b.add_node("review", HumanReview("reply", contract=Reply, on_approve="send",
                                     on_reject=END, name="review"))
    b.add_node("send", send)
    b.add_edge(START, "draft")
    b.add_edge("draft", "check")
    b.add_edge("send", END)
    return b


builder = make_builder()


def make_graph(checkpointer: Any = None) -> Any:
    return make_builder().compile(checkpointer=checkpointer)


def make_agent(checkpointer: Any = None) -> Any:
    """A ``create_agent`` agent with relaygraph's middleware (``cli_support_graph:make_agent``).

    Its scripted model always answers with confidence 0.5: the guard retries once, then
    escalates to a review.
    """
    import json

    from langchain.agents import create_agent

    from relaygraph.guards import BudgetMiddleware, GuardMiddleware, SelfReportedConfidence
    from relaygraph.testing import ScriptedChatModel

    model = ScriptedChatModel([json.dumps({"answer": "credit 10", "confidence": 0.5})],
                              cycle=True, model_name="m-small")
    return create_agent(model, [], middleware=[
        BudgetMiddleware(max_cost=1.0, pricing=PRICING, agent="helper"),
        GuardMiddleware(SelfReportedConfidence(path="messages"), 0.8, max_retries=1),
    ], checkpointer=checkpointer)
