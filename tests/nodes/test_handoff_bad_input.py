"""Every bad input from the handoff issue, with ScriptedChatModel and callables, sync and async.

Each failure is either repaired (the compressor is asked again with exactly what failed)
or routed to ``on_failure`` with the failing fields named. Never a silent pass-through.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from datetime import date
from decimal import Decimal
from typing import Annotated, Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langgraph.types import Command
from pydantic import Field

from relaygraph.nodes import Contract, HandoffFeedback, Verbatim, handoff
from relaygraph.testing import ManualClock, ScriptedChatModel


class RefundCase(Contract):
    """A refund request ready for the resolver."""

    order_id: Annotated[str, Verbatim()] = Field(description="the order id, e.g. A-10234")
    amount: Annotated[Decimal, Verbatim()]
    customer_email: Annotated[str | None, Verbatim()] = None
    ordered_on: Annotated[date | None, Verbatim()] = None
    summary: str


TRANSCRIPT = [
    HumanMessage("Hi! My order A-10234 arrived with a broken zipper. I'd like my money back."),
    AIMessage("Sorry about that, let me look it up.", tool_calls=[
        {"name": "lookup_order", "args": {"order_id": "A-10234"}, "id": "t1"}]),
    ToolMessage('{"order_id": "A-10234", "total": "$1,234.50", "placed": "2024-03-15", '
                '"email": "jo.doe@example.com", "status": "delivered"}', tool_call_id="t1",
                name="lookup_order"),
    AIMessage("I see the order from March 15, 2024 for $1,234.50. Is jo.doe@example.com "
              "still the best email?"),
    HumanMessage("Yes, that's me. Thanks!"),
]
GOOD = {"order_id": "A-10234", "amount": "1234.50", "customer_email": "jo.doe@example.com",
        "ordered_on": "2024-03-15", "summary": "Zipper arrived broken; wants a refund."}

# bad output -> the field that must be named
BAD: dict[str, tuple[Any, str]] = {
    "wrong_type": ({**GOOD, "amount": "twelve hundred"}, "amount"),
    "wrong_type_date": ({**GOOD, "ordered_on": "last spring"}, "ordered_on"),
    "missing_field": ({k: v for k, v in GOOD.items() if k != "summary"}, "summary"),
    "extra_field": ({**GOOD, "priority": "high"}, "priority"),
    "invented_order_id": ({**GOOD, "order_id": "A-10243"}, "order_id"),
    "changed_amount": ({**GOOD, "amount": "1243.50"}, "amount"),
    "changed_email": ({**GOOD, "customer_email": "jo.doe@example.co"}, "customer_email"),
    "shifted_date": ({**GOOD, "ordered_on": "2024-03-16"}, "ordered_on"),
    "raises": (RuntimeError("provider unavailable"), "*"),
    "not_a_dict": (["A-10234"], "*"),
}

COMPRESSORS = ["scripted", "callable"]
MODES = ["sync", "async"]


class Script:
    """Plays the same responses through a ScriptedChatModel or a callable compressor."""

    def __init__(self, kind: str, mode: str, responses: list[Any]) -> None:
        self.kind, self.mode = kind, mode
        self.feedback: list[HandoffFeedback | None] = []
        self.release = threading.Event()
        self.responses = [self._prepare(r) for r in responses]
        self.model = ScriptedChatModel(self.responses) if kind == "scripted" else None
        self._i = 0

    def _prepare(self, r: Any) -> Any:
        if r != "HANG":
            return r
        if self.kind == "scripted" and self.mode == "async":
            async def hang_async(_call: Any) -> Any:
                await asyncio.Event().wait()
            return hang_async

        def hang(*_a: Any) -> Any:
            self.release.wait(30)  # released by the test's finaliser
            return GOOD
        return hang

    @property
    def calls(self) -> int:
        return len(self.model.calls) if self.model is not None else self._i

    def _next(self, feedback: HandoffFeedback | None) -> Any:
        self.feedback.append(feedback)
        r = self.responses[self._i]
        self._i += 1
        return r

    def compressor(self) -> Any:
        if self.model is not None:
            return self.model
        if self.mode == "sync":
            def compress(messages: list[Any], contract: type, feedback: Any) -> Any:
                assert contract is RefundCase
                assert messages[0].content.startswith("Hi!")
                r = self._next(feedback)
                if isinstance(r, BaseException):
                    raise r
                return r() if callable(r) else r
            return compress

        async def acompress(messages: list[Any], contract: type, feedback: Any) -> Any:
            r = self._next(feedback)
            if isinstance(r, BaseException):
                raise r
            if callable(r):
                await asyncio.Event().wait()
            return r
        return acompress

    def feedback_text(self, call: int) -> str:
        if self.model is not None:
            return self.model.calls[call].messages[-1].content  # type: ignore[return-value]
        fb = self.feedback[call]
        return str(fb) if fb is not None else ""


@pytest.fixture
def scripts() -> Any:
    made: list[Script] = []

    def make(kind: str, mode: str, responses: list[Any]) -> Script:
        s = Script(kind, mode, responses)
        made.append(s)
        return s
    yield make
    for s in made:
        s.release.set()


async def run(node: Any, mode: str, state: dict[str, Any]) -> Any:
    if mode == "sync":
        return await asyncio.to_thread(node.invoke, state)
    return await node.ainvoke(state)


def make_node(script: Script, **kw: Any) -> Any:
    opts: dict[str, Any] = dict(source="messages", target="case", on_success="resolver",
                                on_failure="review", max_repairs=2, clock=ManualClock())
    opts.update(kw)
    return handoff(RefundCase, compressor=script.compressor(), **opts)


def assert_routed(out: Any, field: str, attempts: int) -> dict[str, Any]:
    assert isinstance(out, Command)
    assert out.goto == "review"
    update = out.update
    assert update["case"] is None  # never passes bad data on
    report = update["handoffs"][0]
    assert report["failure"] and field in report["failure"]
    assert field in report["failed_fields"]
    assert report["repairs"] == attempts - 1
    return report


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", COMPRESSORS)
@pytest.mark.parametrize("case", sorted(BAD))
async def test_bad_output_is_repaired(scripts: Any, kind: str, mode: str, case: str) -> None:
    bad, field = BAD[case]
    script = scripts(kind, mode, [bad, GOOD])
    out = await run(make_node(script), mode, {"messages": TRANSCRIPT})
    assert isinstance(out, Command) and out.goto == "resolver"
    assert out.update["case"] == RefundCase.model_validate(GOOD)
    report = out.update["handoffs"][0]
    assert report["repairs"] == 1 and report["failure"] is None
    assert all(check["passed"] for check in report["verbatim"].values())
    assert script.calls == 2
    text = script.feedback_text(1)
    assert "rejected" in text and f"- {field}:" in text
    if kind == "callable":
        assert script.feedback[0] is None
        fb = script.feedback[1]
        assert fb is not None and field in fb.errors and fb.attempt == 1


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", COMPRESSORS)
@pytest.mark.parametrize("case", sorted(BAD))
async def test_persistent_bad_output_is_routed(scripts: Any, kind: str, mode: str,
                                               case: str) -> None:
    bad, field = BAD[case]
    script = scripts(kind, mode, [bad, bad, bad])
    out = await run(make_node(script), mode, {"messages": TRANSCRIPT})
    report = assert_routed(out, field, attempts=3)
    assert script.calls == 3
    if case == "raises":
        assert "RuntimeError: provider unavailable" in report["failure"]
    if field != "*":
        assert report["draft"] is not None


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", COMPRESSORS)
async def test_verbatim_failures_name_every_failing_field(scripts: Any, kind: str,
                                                          mode: str) -> None:
    bad = {**GOOD, "order_id": "A-99999", "amount": "99.99", "customer_email": "x@y.com"}
    script = scripts(kind, mode, [bad])
    out = await run(make_node(script, max_repairs=0), mode, {"messages": TRANSCRIPT})
    report = assert_routed(out, "order_id", attempts=1)
    assert report["failed_fields"] == ["amount", "customer_email", "order_id"]
    assert report["verbatim"]["ordered_on"]["passed"] is True
    assert report["verbatim"]["amount"]["passed"] is False
    assert "99.99" in report["verbatim"]["amount"]["reason"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", COMPRESSORS)
async def test_timeout_is_repaired(scripts: Any, kind: str, mode: str) -> None:
    script = scripts(kind, mode, ["HANG", GOOD])
    out = await run(make_node(script, timeout=0.2), mode, {"messages": TRANSCRIPT})
    assert out.goto == "resolver"
    assert out.update["handoffs"][0]["repairs"] == 1
    assert "timeout=0.2s" in script.feedback_text(1)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", COMPRESSORS)
async def test_timeout_is_routed(scripts: Any, kind: str, mode: str) -> None:
    script = scripts(kind, mode, ["HANG", "HANG"])
    out = await run(make_node(script, timeout=0.1, max_repairs=1), mode,
                    {"messages": TRANSCRIPT})
    report = assert_routed(out, "*", attempts=2)
    assert "did not answer within timeout=0.1s" in report["failure"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", COMPRESSORS)
@pytest.mark.parametrize("empty", [[], [HumanMessage("")], "   ", None])
async def test_empty_transcript_is_routed_without_calling_the_compressor(
        scripts: Any, kind: str, mode: str, empty: Any) -> None:
    script = scripts(kind, mode, [GOOD])
    state = {"messages": empty} if empty is not None else {}
    out = await run(make_node(script), mode, state)
    report = assert_routed(out, "order_id", attempts=1)
    assert set(report["failed_fields"]) == {"order_id", "amount", "summary"}
    assert "empty" in report["failure"]
    assert script.calls == 0


def megabyte_transcript() -> list[Any]:
    chatter = [
        HumanMessage(f"Message {i}: still no update on my parcel, tracking says in transit, "
                     f"can someone check the warehouse queue? Ref note {i:05d}.")
        for i in range(8500)
    ]
    return chatter + TRANSCRIPT


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", COMPRESSORS)
async def test_megabyte_transcript(scripts: Any, kind: str, mode: str) -> None:
    messages = megabyte_transcript()
    assert sum(len(m.content) for m in messages) > 1_000_000
    # The callable compressor asserts the first message starts with "Hi!".
    messages = [TRANSCRIPT[0], *messages]
    script = scripts(kind, mode, [{**GOOD, "amount": "1234.05"}, GOOD])
    out = await run(make_node(script), mode, {"messages": messages})
    assert out.goto == "resolver"
    report = out.update["handoffs"][0]
    assert report["repairs"] == 1
    assert report["source_tokens"] > 200_000
    assert report["ratio"] < 0.001
    assert report["verbatim"]["amount"]["provenance"]["message"] >= 8500

    script = scripts(kind, mode, [{**GOOD, "order_id": "A-00001"}] * 3)
    out = await run(make_node(script), mode, {"messages": messages})
    assert_routed(out, "order_id", attempts=3)


@pytest.mark.parametrize("mode", MODES)
async def test_max_source_tokens_routes_before_calling(scripts: Any, mode: str) -> None:
    script = scripts("scripted", mode, [GOOD])
    out = await run(make_node(script, max_source_tokens=50), mode, {"messages": TRANSCRIPT})
    report = assert_routed(out, "order_id", attempts=1)
    assert "max_source_tokens=50" in report["failure"]
    assert script.calls == 0


@pytest.mark.parametrize("mode", MODES)
async def test_cross_wired_callables(mode: str) -> None:
    """An async callable on the sync path and a sync one on the async path both work."""
    async def acompress(messages: Any, contract: Any, feedback: Any) -> Any:
        return GOOD

    def compress(messages: Any, contract: Any, feedback: Any) -> Any:
        return RefundCase.model_validate(GOOD)

    fn: Callable[..., Any] = acompress if mode == "sync" else compress
    node = handoff(RefundCase, source="messages", target="case", compressor=fn)
    out = await run(node, mode, {"messages": TRANSCRIPT})
    assert isinstance(out, dict)  # no routes: a plain update
    assert out["case"].order_id == "A-10234"


@pytest.mark.parametrize("mode", MODES)
async def test_model_prose_answer_is_repaired(mode: str) -> None:
    model = ScriptedChatModel(["Sure! The order is A-10234.", GOOD])
    node = handoff(RefundCase, source="messages", target="case", compressor=model,
                   on_success="next", on_failure="review")
    out = await run(node, mode, {"messages": TRANSCRIPT})
    assert out.goto == "next"
    assert "prose" in model.calls[1].messages[-1].content
