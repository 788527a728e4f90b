"""Built-in scorers and checks, sync and async."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from pydantic import BaseModel

from relaygraph import ConfigurationError
from relaygraph.guards import (
    Agreement,
    ConfidenceGuard,
    MeanTokenProbability,
    ModelCheck,
    PathScorer,
    Rule,
    ScoringError,
    SelfReportedConfidence,
)


class Answer(BaseModel):
    answer: str
    confidence: float


def test_path_scorer_reads_dicts_models_and_indexes():
    state = {"case": Answer(answer="x", confidence=0.7), "runs": [{"p": 0.1}, {"p": 0.2}]}
    assert PathScorer("case.confidence")(state) == 0.7
    assert PathScorer("runs.-1.p")(state) == 0.2
    with pytest.raises(LookupError, match="state has no item|'nope' is missing from state"):
        PathScorer("nope")(state)
    with pytest.raises(LookupError, match="runs has no item 5"):
        PathScorer("runs.5.p")(state)
    with pytest.raises(LookupError, match="case is None"):
        PathScorer("case.confidence")({"case": None})


def test_self_reported_confidence_shapes():
    s = SelfReportedConfidence("out")
    assert s({"out": Answer(answer="a", confidence=0.8)}) == 0.8
    assert s({"out": {"confidence": "85%"}}) == pytest.approx(0.85)
    assert s({"out": {"confidence": "0.4"}}) == 0.4
    tool = AIMessage(content="", tool_calls=[
        {"name": "Answer", "args": {"answer": "a", "confidence": 0.66}, "id": "1"}])
    assert SelfReportedConfidence("messages")({"messages": [HumanMessage("q"), tool]}) == 0.66
    json_reply = AIMessage(content='{"answer": "a", "confidence": 0.55}')
    assert SelfReportedConfidence("messages")({"messages": [json_reply]}) == 0.55
    assert SelfReportedConfidence("out", percent=True)({"out": {"confidence": 72}}) == 0.72
    labelled = SelfReportedConfidence("out", labels={"High": 0.9, "low": 0.2})
    assert labelled({"out": {"confidence": "HIGH"}}) == 0.9
    with pytest.raises(ScoringError, match="no 'confidence' field"):
        s({"out": {"answer": "a"}})
    with pytest.raises(ScoringError, match="is not a number"):
        s({"out": {"confidence": "very"}})
    with pytest.raises(ScoringError, match="content is not JSON"):
        SelfReportedConfidence("messages")({"messages": [AIMessage(content="sure!")]})
    with pytest.raises(ConfigurationError, match=r"labels\['x'\] must be in \[0, 1\]"):
        SelfReportedConfidence("out", labels={"x": 2})


def _reply(**meta: Any) -> AIMessage:
    return AIMessage(content="ok", response_metadata=meta)


def test_mean_token_probability():
    lp = [math.log(0.9), math.log(0.5), math.log(0.7)]
    openai = {"content": [{"token": t, "logprob": v} for t, v in zip("abc", lp, strict=True)]}
    scorer = MeanTokenProbability()
    assert scorer({"messages": [_reply(logprobs=openai)]}) == pytest.approx(0.7)
    assert scorer({"messages": [_reply(logprobs=[{"logprob": 0.0}])]}) == 1.0
    assert scorer({"messages": [_reply(avg_logprobs=math.log(0.25))]}) == pytest.approx(0.25)
    with pytest.raises(ScoringError, match="no logprobs in response_metadata"):
        scorer({"messages": [_reply()]})
    with pytest.raises(ScoringError, match="the list at the path is empty"):
        scorer({"messages": []})


def test_agreement_over_state_and_samplers():
    a = Agreement(path="answers")
    assert a({"answers": ["Paris", " paris ", "Lyon", "PARIS"]}) == 0.75
    assert a({"answers": [{"x": 1, "y": 2}, {"y": 2, "x": 1}]}) == 1.0
    with pytest.raises(ScoringError, match="at least 2 samples, got 1"):
        a({"answers": ["only"]})
    with pytest.raises(ScoringError, match="not a list of answers"):
        a({"answers": "Paris"})

    draws = iter(["a", "b", "a", "a"])
    sync = Agreement(sample=lambda s: next(draws), n=4)
    assert sync({}) == 0.75

    async def sample(state: Any) -> str:
        await asyncio.sleep(0)
        return "yes"

    result = Agreement(sample=sample, n=3)({})
    assert asyncio.run(result) == 1.0  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({}, "exactly one of path="),
        ({"path": "a", "sample": len}, "exactly one of path="),
        ({"sample": len, "n": 0}, "n must be an integer >= 1"),
        ({"sample": len, "n": 1}, "n (1) must be >= min_samples (2)"),
    ],
)
def test_agreement_configuration(kw, message):
    with pytest.raises(ConfigurationError) as err:
        Agreement(**kw)
    assert message in str(err.value)


async def test_agreement_with_async_sampler_in_guard(clock):
    calls = 0

    async def sample(state: Any) -> str:
        nonlocal calls
        calls += 1
        return "refund" if calls % 3 else "deny"

    guard = ConfidenceGuard(Agreement(sample=sample, n=3), 0.6, on_pass="next", clock=clock)
    cmd = await guard.ainvoke({}, {"metadata": {"langgraph_node": "agree"}})
    assert cmd.goto == "next"
    assert cmd.update["guard_log"][0]["score"] == pytest.approx(2 / 3)
    # the sync path runs the async sampler too
    cmd = guard.invoke({}, None)
    assert cmd.update["guard_log"][0]["score"] == pytest.approx(2 / 3)
    assert calls == 6


class Refund(BaseModel):
    order_id: str
    amount: float


def test_model_check():
    check = ModelCheck(Refund, "case")
    assert check.name == "valid_Refund"
    assert check({"case": {"order_id": "A1", "amount": 12.5}}) is None
    assert check({"case": Refund(order_id="A1", amount=3)}) is None
    bad = Refund.model_construct(order_id="A1", amount="lots")
    assert check({"case": bad}) == "amount: Input should be a valid number, unable to parse " \
        "string as a number"
    assert check({"case": {}}) == "order_id: Field required; amount: Field required"
    assert ModelCheck(list[int], "xs", name="ints")({"xs": [1, "x"]}) == (
        "1: Input should be a valid integer, unable to parse string as an integer")
    with pytest.raises(ConfigurationError, match="model must be a pydantic model"):
        ModelCheck(object(), "case")


async def test_rule_messages_and_async_predicates():
    r = Rule(lambda v: v > 0, lambda v: f"amount {v} is not positive", path="case.amount")
    assert r.name == "rule"
    assert r({"case": {"amount": 5}}) is None
    assert r({"case": {"amount": -2}}) == "amount -2 is not positive"

    async def in_stock(state: Any) -> bool:
        return bool(state["stock"])

    ra = Rule(in_stock, "out of stock")
    assert ra.name == "in_stock"
    assert await ra({"stock": 0}) == "out of stock"
    assert await ra({"stock": 3}) is None
    with pytest.raises(ConfigurationError, match="message must be a non-empty string"):
        Rule(bool, "")
    with pytest.raises(ConfigurationError, match="predicate must be callable"):
        Rule("x", "msg")  # type: ignore[arg-type]
