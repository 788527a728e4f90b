"""Small deterministic graphs used by the saver tests."""

from __future__ import annotations

import operator
from typing import Annotated, Any

from langchain_core.messages import AIMessage, AnyMessage
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.types import interrupt
from typing_extensions import TypedDict


class ChatState(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], add_messages]
    notes: dict[str, Any]
    count: int
    log: Annotated[list[str], operator.add]


def _agent(name: str):
    def node(state: ChatState) -> dict[str, Any]:
        n = state.get("count", 0) + 1
        notes = dict(state.get("notes") or {})
        notes[name] = n
        return {
            "messages": [AIMessage(f"{name} says step {n}: " + "lorem ipsum " * 8,
                                   id=f"{name}-{n}")],
            "notes": notes,
            "count": n,
            "log": [f"{name}:{n}"],
        }
    return node


def chat_graph(steps: int = 6) -> StateGraph:
    """Three agents in a loop, appending messages and updating a dict channel."""
    b = StateGraph(ChatState)
    for name in ("planner", "worker", "critic"):
        b.add_node(name, _agent(name))
    b.add_edge(START, "planner")
    b.add_edge("planner", "worker")
    b.add_edge("worker", "critic")
    b.add_conditional_edges("critic", lambda s: END if s.get("count", 0) >= steps else "planner")
    return b


class ReviewState(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], add_messages]
    decision: str


def review_graph() -> StateGraph:
    """draft -> approval (interrupt) -> finish."""

    def draft(state: ReviewState) -> dict[str, Any]:
        return {"messages": [AIMessage("refund 42.50 for order A-1", id="draft")]}

    def approval(state: ReviewState) -> dict[str, Any]:
        answer = interrupt({"question": "approve?", "draft": state["messages"][-1].content})
        return {"decision": str(answer)}

    def finish(state: ReviewState) -> dict[str, Any]:
        return {"messages": [AIMessage(f"done: {state['decision']}", id="done")]}

    b = StateGraph(ReviewState)
    b.add_node("draft", draft)
    b.add_node("approval", approval)
    b.add_node("finish", finish)
    b.add_edge(START, "draft")
    b.add_edge("draft", "approval")
    b.add_edge("approval", "finish")
    b.add_edge("finish", END)
    return b


from decimal import Decimal  # noqa: E402

from relaygraph.nodes import Contract  # noqa: E402


class Ticket(Contract):
    """A contract stored in graph state by the serializer tests."""

    order_id: str
    amount: Decimal
