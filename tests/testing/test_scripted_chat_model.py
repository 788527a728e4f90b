"""ScriptedChatModel: scripted responses, tools, structured output, usage, errors, recording."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.tools import tool
from pydantic import BaseModel

import relaygraph.testing
from relaygraph import RelaygraphError
from relaygraph.testing import ManualClock, ScriptedCall, ScriptedChatModel, ScriptExhaustedError


class Answer(BaseModel):
    """An answer."""

    text: str
    score: float


@tool
def lookup_order(order_id: str) -> str:
    """Look up an order."""
    return order_id


def test_exports_are_pinned() -> None:
    assert relaygraph.testing.__all__ == [
        "ManualClock", "ScriptExhaustedError", "ScriptedCall", "ScriptedChatModel"]


def test_is_a_langchain_chat_model_with_text_and_messages() -> None:
    model = ScriptedChatModel(["hello", AIMessage("prepared", id="x1")])
    assert isinstance(model, BaseChatModel)
    first = model.invoke("hi there")
    assert isinstance(first, AIMessage) and first.content == "hello"
    second = model.invoke([HumanMessage("again")])
    assert (second.content, second.id) == ("prepared", "x1")
    assert model.remaining == 0


def test_usage_metadata_is_deterministic() -> None:
    a = ScriptedChatModel(["The refund of $12.40 was issued."]).invoke("Please refund A-1")
    b = ScriptedChatModel(["The refund of $12.40 was issued."]).invoke("Please refund A-1")
    assert a.usage_metadata == b.usage_metadata
    assert a.usage_metadata is not None
    # approx-v1: 4 per message + Plea|se refu|nd A - 1
    assert a.usage_metadata["input_tokens"] == 4 + 7
    # The refu|nd of $ 12 . 40 was issu|ed .
    assert a.usage_metadata["output_tokens"] == 12
    assert a.usage_metadata["total_tokens"] == 23
    preset = {"input_tokens": 1, "output_tokens": 2, "total_tokens": 3}
    c = ScriptedChatModel([AIMessage("x", usage_metadata=preset)]).invoke("q")
    assert c.usage_metadata == preset


def test_logprobs_in_response_metadata() -> None:
    msg = ScriptedChatModel(["yes, approved"], logprob=-0.25).invoke("ok?")
    meta = msg.response_metadata
    assert meta["model_name"] == "scripted" and meta["finish_reason"] == "stop"
    assert [t["token"] for t in meta["logprobs"]["content"]] == ["yes", ",", "approved"]
    assert {t["logprob"] for t in meta["logprobs"]["content"]} == {-0.25}
    assert "logprobs" not in ScriptedChatModel(["x"]).invoke("q").response_metadata


def test_bind_tools_records_tools_and_scripts_tool_calls() -> None:
    model = ScriptedChatModel([
        {"name": "lookup_order", "args": {"order_id": "A-1"}},
        {"order_id": "A-2"},
        [{"name": "lookup_order", "args": {"order_id": "A-3"}},
         {"name": "lookup_order", "args": {"order_id": "A-4"}, "id": "mine"}],
    ])
    bound = model.bind_tools([lookup_order])
    first = bound.invoke("where is A-1?")
    assert first.tool_calls == [{"name": "lookup_order", "args": {"order_id": "A-1"},
                                 "id": "call_0_0", "type": "tool_call"}]
    assert first.response_metadata["finish_reason"] == "tool_calls"
    forced = model.bind_tools([lookup_order], tool_choice="lookup_order").invoke("A-2")
    assert forced.tool_calls[0]["args"] == {"order_id": "A-2"}
    several = bound.invoke("both")
    assert [c["id"] for c in several.tool_calls] == ["call_2_0", "mine"]
    calls = model.calls
    assert calls[0].tool_names == ["lookup_order"] and calls[0].tool_choice is None
    assert calls[1].tool_choice == "lookup_order"
    assert calls[0].text == "where is A-1?"


def test_dict_without_a_forced_tool_is_json_content() -> None:
    msg = ScriptedChatModel([{"a": 1}]).invoke("q")
    assert msg.content == '{"a": 1}' and not msg.tool_calls


@pytest.mark.parametrize("schema", ["pydantic", "dict"])
def test_with_structured_output(schema: str) -> None:
    target: Any = Answer if schema == "pydantic" else {
        "title": "Answer", "description": "An answer.", "type": "object",
        "properties": {"text": {"type": "string"}, "score": {"type": "number"}},
        "required": ["text", "score"]}
    model = ScriptedChatModel([{"text": "ok", "score": 0.9}, Answer(text="m", score=0.1)])
    structured = model.with_structured_output(target)
    first = structured.invoke("q")
    second = structured.invoke("q")
    if schema == "pydantic":
        assert first == Answer(text="ok", score=0.9) and second == Answer(text="m", score=0.1)
    else:
        assert first == {"text": "ok", "score": 0.9}
    assert all(c.structured and c.tool_names == ["Answer"] for c in model.calls)


def test_structured_output_include_raw_reports_parsing_errors() -> None:
    model = ScriptedChatModel([{"text": "ok", "score": "high"}])
    out = model.with_structured_output(Answer, include_raw=True).invoke("q")
    assert out["parsed"] is None and out["parsing_error"] is not None
    assert out["raw"].tool_calls[0]["args"] == {"text": "ok", "score": "high"}


def test_exceptions_and_callables() -> None:
    seen: list[ScriptedCall] = []

    def echo(call: ScriptedCall) -> str:
        seen.append(call)
        return f"you said {call.messages[-1].content}"

    model = ScriptedChatModel([ValueError("rate limited"), TimeoutError, echo])
    with pytest.raises(ValueError, match="rate limited"):
        model.invoke("a")
    with pytest.raises(TimeoutError, match="scripted failure on call #2"):
        model.invoke("b")
    assert model.invoke("c").content == "you said c"
    assert seen[0].index == 2
    assert len(model.calls) == 3  # failing calls are recorded too


def test_running_out_is_a_clear_error() -> None:
    model = ScriptedChatModel(["only one"])
    model.invoke("first")
    with pytest.raises(ScriptExhaustedError) as info:
        model.invoke("second question")
    assert isinstance(info.value, RelaygraphError)
    message = str(info.value)
    assert "has 1 and received call #2" in message and "second question" in message
    assert "cycle=True" in message


def test_cycle_and_reset() -> None:
    model = ScriptedChatModel(["a", "b"], cycle=True)
    assert [model.invoke("q").content for _ in range(5)] == ["a", "b", "a", "b", "a"]
    model.reset()
    assert model.calls == [] and model.invoke("q").content == "a"


def test_unusable_response_type() -> None:
    with pytest.raises(TypeError, match="cannot use a scripted response of type int"):
        ScriptedChatModel([42]).invoke("q")


async def test_async_paths() -> None:
    async def later(call: ScriptedCall) -> dict[str, Any]:
        await asyncio.sleep(0)
        return {"text": "async", "score": 1.0}

    model = ScriptedChatModel(["one", later, "x", "y"])
    assert (await model.ainvoke("q")).content == "one"
    assert await model.with_structured_output(Answer).ainvoke("q") == Answer(text="async",
                                                                             score=1.0)
    assert [m.content for m in await model.abatch(["1", "2"])] == ["x", "y"]


def test_async_callable_on_the_sync_path() -> None:
    async def later(call: ScriptedCall) -> str:
        return "done"

    assert ScriptedChatModel([later]).invoke("q").content == "done"


def test_batch_consumes_in_input_order() -> None:
    model = ScriptedChatModel(["a", "b", ValueError("c failed"), "d"])
    out = model.batch(["1", "2", "3", "4"], return_exceptions=True)
    assert [getattr(o, "content", None) for o in out] == ["a", "b", None, "d"]
    assert isinstance(out[2], ValueError)
    assert [c.messages[0].content for c in model.calls] == ["1", "2", "3", "4"]
    bound = ScriptedChatModel(["p", "q"]).bind_tools([lookup_order])
    assert [m.content for m in bound.batch(["x", "y"])] == ["p", "q"]


def test_manual_clock() -> None:
    clock = ManualClock(100.0)
    assert clock() == 100.0
    assert clock.advance(5) == 105.0 and clock() == 105.0
    with pytest.raises(ValueError, match="cannot go back"):
        clock.advance(-1)


def test_module_docs_example_runs() -> None:
    doc = relaygraph.testing.__doc__ or ""
    block = doc.split("Testing your own graph (this example is executed by relaygraph's test "
                      "suite)::\n")[1].split("\nResponse forms")[0]
    code = "\n".join(line[4:] for line in block.splitlines())
    assert "ScriptedChatModel([" in code
    exec(compile(code, "relaygraph.testing docs", "exec", dont_inherit=True),
         {"__name__": "docs_example"})


def test_message_ids_are_unique_across_instances() -> None:
    """Two models (or one rebuilt after a restart) must not reuse ids: add_messages
    would replace the earlier message instead of appending."""
    a = ScriptedChatModel(responses=["one"])
    b = ScriptedChatModel(responses=["two"])
    ids = {a.invoke("hi").id, b.invoke("hi").id}
    assert len(ids) == 2 and all(i.startswith("scripted-") for i in ids)
