"""handoff() inside real graphs: routing, reports, briefs, recall and configuration."""

from __future__ import annotations

from typing import Annotated, Any

import pytest
from langchain_core.messages import AnyMessage, HumanMessage, SystemMessage
from langchain_core.runnables import RunnableLambda
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph, add_messages
from langgraph.types import Command

from relaygraph import ConfigurationError, RelaygraphError
from relaygraph.nodes import (
    HandoffError,
    HandoffNode,
    HandoffState,
    InMemorySourceStore,
    RecallError,
    approx_tokens,
    brief_message,
    default_counter,
    handoff,
    recall_tool,
    with_brief,
)
from relaygraph.testing import ManualClock, ScriptedChatModel

try:  # works whether or not tests/nodes is a package
    from .test_handoff_bad_input import GOOD, TRANSCRIPT, RefundCase
except ImportError:
    from test_handoff_bad_input import GOOD, TRANSCRIPT, RefundCase  # type: ignore[no-redef]


class State(HandoffState):
    messages: Annotated[list[AnyMessage], add_messages]
    resolver_messages: Annotated[list[AnyMessage], add_messages]
    case: RefundCase | None
    outcome: str


def build(compressor: Any, *, on_failure: str | None = "review", **kw: Any) -> Any:
    def resolver(state: State) -> dict[str, Any]:
        case = state["case"]
        assert isinstance(case, RefundCase)
        tool = recall_tool(state, target="case")
        found = tool.invoke({"query": "zipper"})
        return {"outcome": f"refund {case.amount} for {case.order_id}; recall: {found[:40]}"}

    b = StateGraph(State)
    b.add_node("to_resolver", handoff(RefundCase, source="messages", target="case",
                                      compressor=compressor, on_success="resolver",
                                      on_failure=on_failure, clock=ManualClock(), **kw))
    b.add_node("resolver", resolver)
    b.add_node("review", lambda s: {"outcome": "review: " + s["handoffs"][-1]["failure"]})
    b.add_edge(START, "to_resolver")
    b.add_edge("resolver", END)
    b.add_edge("review", END)
    return b.compile(checkpointer=InMemorySaver())


CFG = {"configurable": {"thread_id": "t1"}}


def test_graph_success_writes_contract_report_and_archive() -> None:
    model = ScriptedChatModel([GOOD])
    out = build(model).invoke({"messages": TRANSCRIPT}, CFG)
    assert out["case"] == RefundCase.model_validate(GOOD)
    assert out["outcome"].startswith("refund 1234.50 for A-10234; recall: [message 0")
    (report,) = out["handoffs"]
    assert report["contract"] == "RefundCase"
    assert report["failure"] is None and report["repairs"] == 0
    assert report["fields"] == ["order_id", "amount", "customer_email", "ordered_on", "summary"]
    assert report["at"] == "2026-01-01T00:00:00+00:00"
    assert report["compressor"] == "chat:scripted"
    assert report["tokenizer"] == default_counter().name
    assert 0 < report["brief_tokens"] < report["source_tokens"]
    assert report["ratio"] == round(report["brief_tokens"] / report["source_tokens"], 4)
    prov = report["verbatim"]["order_id"]["provenance"]
    assert (prov["message"], prov["text"]) == (0, "A-10234")
    assert TRANSCRIPT[0].content[prov["start"]:prov["end"]] == "A-10234"
    assert report["verbatim"]["amount"]["provenance"]["text"] == "$1,234.50"
    archived = out["handoff_sources"]["case"]
    assert archived["key"] == report["source_ref"]
    assert [p["role"] for p in archived["passages"]] == ["human", "ai", "tool", "ai", "human"]
    assert 'lookup_order({"order_id": "A-10234"})' in archived["passages"][1]["text"]
    # the compressor was called with structured output, instructions and the transcript
    call = model.calls[0]
    assert call.structured and call.tool_names == ["RefundCase"]
    assert isinstance(call.messages[0], SystemMessage)
    assert "order_id (str, required, VERBATIM)" in call.messages[0].content
    assert "[2] tool lookup_order:" in call.messages[1].content


async def test_graph_failure_routes_to_review_async() -> None:
    model = ScriptedChatModel([{**GOOD, "amount": "999"}] * 3)
    out = await build(model).ainvoke({"messages": TRANSCRIPT}, CFG)
    assert out["case"] is None
    assert out["outcome"].startswith("review: RefundCase handoff failed after 3 attempt(s); "
                                     "failing fields: amount.")
    assert out["handoffs"][0]["failed_fields"] == ["amount"]
    assert len(model.calls) == 3


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_no_failure_route_raises_handoff_error(mode: str) -> None:
    graph = build(ScriptedChatModel([{**GOOD, "order_id": "Z-1"}] * 3), on_failure=None)
    with pytest.raises(HandoffError) as info:
        if mode == "sync":
            graph.invoke({"messages": TRANSCRIPT}, CFG)
        else:
            await graph.ainvoke({"messages": TRANSCRIPT}, CFG)
    assert isinstance(info.value, RelaygraphError)
    assert info.value.failed_fields == ["order_id"]
    assert info.value.report["repairs"] == 2
    assert "order_id" in str(info.value)


def test_no_routes_returns_a_plain_update() -> None:
    node = handoff(RefundCase, source="messages", target="case",
                   compressor=lambda m, c, f: GOOD, archive=None, brief_to="resolver_messages")
    out = node.invoke({"messages": TRANSCRIPT})
    assert isinstance(out, dict) and not isinstance(out, Command)
    assert set(out) == {"case", "handoffs", "resolver_messages"}
    (brief,) = out["resolver_messages"]
    assert brief.name == "handoff_brief"
    assert "order_id: A-10234" in brief.content and "recall" not in brief.content
    assert out["handoffs"][0]["source_ref"] is None


def test_source_can_be_a_callable_a_string_or_any_value() -> None:
    def compress(messages: Any, contract: Any, feedback: Any) -> Any:
        return GOOD

    text = "\n".join(str(m.content) for m in TRANSCRIPT)
    node = handoff(RefundCase, source=lambda s: s["raw"], target="case", compressor=compress)
    assert node.invoke({"raw": text})["case"].order_id == "A-10234"
    node = handoff(RefundCase, source="ticket", target="case", compressor=compress)
    ticket = {"order": "A-10234", "paid": 1234.5, "on": "2024-03-15",
              "email": "jo.doe@example.com"}
    assert node.invoke({"ticket": ticket})["case"].amount == 1234.5


def test_runnable_compressor_receives_documented_input() -> None:
    seen: list[dict[str, Any]] = []

    def fill(data: dict[str, Any]) -> Any:
        seen.append(data)
        return GOOD if data["feedback"] else {**GOOD, "order_id": "nope-1"}

    node = handoff(RefundCase, source="messages", target="case",
                   compressor=RunnableLambda(fill), on_success="next")
    out = node.invoke({"messages": TRANSCRIPT})
    assert out.goto == "next"
    assert set(seen[0]) == {"messages", "transcript", "contract", "instructions", "schema",
                            "feedback"}
    assert seen[0]["feedback"] == "" and "order_id" in seen[1]["feedback"]
    assert out.update["handoffs"][0]["compressor"] == "runnable:fill"


def test_source_store_keeps_the_transcript_out_of_state() -> None:
    store = InMemorySourceStore()
    node = handoff(RefundCase, source="messages", target="case",
                   compressor=lambda m, c, f: GOOD, archive=store)
    out = node.invoke({"messages": TRANSCRIPT})
    ref = out["handoff_sources"]["case"]
    assert "passages" not in ref and len(store) == 1
    with pytest.raises(RecallError, match="pass store="):
        recall_tool(out, target="case")
    tool = recall_tool(out, target="case", store=store)
    assert "jo.doe@example.com" in tool.invoke({"message": 2})


def test_recall_tool_search_and_errors() -> None:
    node = handoff(RefundCase, source="messages", target="case",
                   compressor=lambda m, c, f: GOOD)
    state = node.invoke({"messages": TRANSCRIPT})
    tool = recall_tool(state, target="case")
    assert tool.name == "recall"
    hit = tool.invoke({"query": "best email"})
    assert hit.startswith("[message 3 · ai · chars 0-")
    assert "jo.doe@example.com" in hit
    assert "No message 9" in tool.invoke({"message": 9})
    assert "Nothing in the original" in tool.invoke({"query": "xylophone"})
    with pytest.raises(RecallError, match="HandoffState"):
        recall_tool({"handoff_sources": {}}, target="case")


def test_brief_helpers() -> None:
    case = RefundCase.model_validate(GOOD)
    msg = brief_message(case)
    assert isinstance(msg, SystemMessage)
    assert msg.content.startswith("Handoff brief [RefundCase]\norder_id: A-10234\n")
    assert "recall tool" in msg.content
    msgs = with_brief(case, [msg, HumanMessage("go")], role="human")
    assert [m.type for m in msgs] == ["human", "human"] and msgs[1].content == "go"
    # the brief is a fraction of the transcript
    assert approx_tokens(msg.content) < sum(approx_tokens(str(m.content)) for m in TRANSCRIPT)


@pytest.mark.parametrize("kwargs,match", [
    ({"contract": dict}, "Contract subclass"),
    ({"source": ""}, "source must be"),
    ({"target": ""}, "target must be"),
    ({"on_success": ""}, "on_success"),
    ({"max_repairs": -1}, "max_repairs"),
    ({"max_repairs": True}, "max_repairs"),
    ({"timeout": 0}, "timeout"),
    ({"timeout": "5"}, "timeout must be a positive number"),
    ({"max_source_tokens": 0}, "max_source_tokens"),
    ({"max_source_tokens": "500"}, "max_source_tokens must be an integer"),
    ({"max_source_tokens": 2.5}, "max_source_tokens must be an integer"),
    ({"brief_to": 3}, "brief_to must be"),
    ({"tokenizer": "cl100k_base"}, "tokenizer must be a relaygraph.nodes.TokenCounter"),
    ({"clock": 3}, "clock must be a callable"),
    ({"name": 3}, "name must be a non-empty string"),
    ({"archive": "disk"}, "archive must be"),
    ({"compressor": 42}, "compressor must be"),
    ({"compressor": lambda messages: None}, "must accept"),
])
def test_configuration_errors_at_construction(kwargs: dict[str, Any], match: str) -> None:
    opts: dict[str, Any] = dict(contract=RefundCase, source="messages", target="case",
                                compressor=lambda m, c, f: GOOD)
    opts.update(kwargs)
    contract = opts.pop("contract")
    with pytest.raises(ConfigurationError, match=match):
        handoff(contract, **opts)


def test_node_is_a_runnable_with_attributes() -> None:
    node = handoff(RefundCase, source="messages", target="case",
                   compressor=lambda m, c, f: GOOD, on_success="a", on_failure="b",
                   name="intake_to_resolver")
    assert isinstance(node, HandoffNode)
    assert (node.contract, node.target, node.on_success, node.on_failure) == (
        RefundCase, "case", "a", "b")
    out = node.invoke({"messages": TRANSCRIPT})
    assert out.update["handoffs"][0]["node"] == "intake_to_resolver"


async def test_compressor_own_timeout_error_is_reported_as_raised() -> None:
    async def compress(messages: Any, contract: Any, feedback: Any) -> Any:
        raise TimeoutError("upstream gateway timed out")

    node = handoff(RefundCase, source="messages", target="case", compressor=compress,
                   on_failure="review", max_repairs=0, timeout=30)
    out = await node.ainvoke({"messages": TRANSCRIPT})
    assert "raised TimeoutError: upstream gateway timed out" in out.update["handoffs"][0][
        "failure"]


def test_near_field_in_a_handoff_names_the_field() -> None:
    from datetime import date

    from relaygraph.nodes import Contract, Verbatim

    class Dated(Contract):
        order_id: Annotated[str, Verbatim()]
        placed: Annotated[date, Verbatim(near_field="order_id")]

    source = ['{"order_id": "A-1", "placed_at": "2024-03-01"}',
              '{"order_id": "B-2", "placed_at": "2024-03-09"}']
    node = handoff(Dated, source="s", target="d", on_failure="review", max_repairs=0,
                   compressor=lambda m, c, f: {"order_id": "A-1", "placed": "2024-03-09"})
    out = node.invoke({"s": source})
    assert out.update["handoffs"][0]["failed_fields"] == ["placed"]


def test_next_agent_gets_the_brief_and_calls_recall() -> None:
    """The documented next-agent pattern: brief in the prompt, recall bound as a tool."""
    node = handoff(RefundCase, source="messages", target="case",
                   compressor=lambda m, c, f: GOOD)
    state = node.invoke({"messages": TRANSCRIPT})
    recall = recall_tool(state, target="case")
    agent = ScriptedChatModel([{"name": "recall", "args": {"query": "broken zipper"}},
                               "Refund approved."])
    bound = agent.bind_tools([recall])
    messages: list[Any] = with_brief(state["case"], [HumanMessage("Resolve this case.")])
    reply = bound.invoke(messages)
    (call,) = reply.tool_calls
    tool_message = recall.invoke(call)
    assert "arrived with a broken zipper" in tool_message.content
    final = bound.invoke([*messages, reply, tool_message])
    assert final.content == "Refund approved."
    prompt = agent.calls[0]
    assert prompt.tool_names == ["recall"]
    assert prompt.messages[0].content.startswith("Handoff brief [RefundCase]")
    # the next agent's prompt carries the brief, not the transcript
    assert "lookup_order" not in prompt.text and "A-10234" in prompt.text
