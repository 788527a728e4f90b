"""ConfidenceGuard: every route for the right reason, sync and async; bad input."""

from __future__ import annotations

import math
from typing import Annotated, Any

import pytest
from langgraph.graph import END, START, StateGraph
from pydantic import BaseModel

from relaygraph import ConfigurationError
from relaygraph.graphs import append_records
from relaygraph.guards import (
    CircuitBreaker,
    ConfidenceGuard,
    ModelCheck,
    Rule,
    validate_guards,
)

from ._helpers import CaseState, resolver_graph, routes, run

T0 = "2026-01-01T00:00:00+00:00"


def guard(clock: Any, **kw: Any) -> ConfidenceGuard:
    base: dict[str, Any] = dict(
        score="case.confidence",
        threshold=0.8,
        on_pass="crm",
        on_retry="resolver",
        on_escalate="review",
        max_retries=1,
        clock=clock,
    )
    base.update(kw)
    return ConfidenceGuard(**base)


async def test_pass(clock, mode):
    out = await run(resolver_graph(guard(clock), [0.9]), mode)
    assert out["calls"] == ["resolver", "crm"]
    [d] = out["guard_log"]
    assert d == {
        "guard": "check",
        "score": 0.9,
        "threshold": 0.8,
        "failed_checks": [],
        "route": "pass",
        "breaker_state": None,
        "at": T0,
        "reason": "score 0.9 >= threshold 0.8",
        "goto": "crm",
    }


async def test_score_equal_to_threshold_passes(clock, mode):
    out = await run(resolver_graph(guard(clock), [0.8]), mode)
    assert routes(out) == ["pass"]


async def test_retry_with_reason_then_pass_clears_feedback(clock, mode):
    out = await run(resolver_graph(guard(clock), [0.5, 0.95]), mode)
    assert routes(out) == ["retry", "pass"]
    retry = out["guard_log"][0]
    assert retry["goto"] == "resolver" and retry["attempt"] == 1
    assert retry["reason"] == "score 0.5 < threshold 0.8"
    # the retried agent saw why it was sent back
    assert out["calls"] == ["resolver", "resolver:score 0.5 < threshold 0.8", "crm"]
    assert out["guard_feedback"] == {"resolver": ""}


async def test_retries_exhausted_escalates(clock, mode):
    out = await run(resolver_graph(guard(clock, max_retries=2), [0.5, 0.6, 0.7]), mode)
    assert routes(out) == ["retry", "retry", "escalate"]
    assert [d.get("attempt") for d in out["guard_log"]] == [1, 2, None]
    last = out["guard_log"][-1]
    assert last["goto"] == "review"
    assert "retries exhausted (2/2)" in last["reason"]
    assert out["calls"][-1] == "review"


async def test_retry_budget_is_per_streak_not_lifetime(clock, mode):
    # A pass resets the count: the next failure may retry again.
    g = guard(clock)
    state = {
        "guard_log": [
            {"guard": "check", "route": "retry"},
            {"guard": "check", "route": "pass"},
            {"guard": "other", "route": "retry"},
        ],
        "case": {"confidence": 0.1},
    }
    assert g.retries_used(state, "check") == 0
    cmd = g.invoke(state, {"metadata": {"langgraph_node": "check"}})
    assert cmd.goto == "resolver"
    state["guard_log"].append({"guard": "check", "route": "retry"})
    assert g.retries_used(state, "check") == 1
    assert g.invoke(state, {"metadata": {"langgraph_node": "check"}}).goto == "review"


async def test_no_escalate_route_halts(clock, mode):
    g = guard(clock, on_escalate=None, max_retries=0)
    out = await run(resolver_graph(g, [0.3]), mode)
    assert routes(out) == ["halt"]
    assert out["guard_log"][0]["goto"] == END
    assert out["calls"] == ["resolver"]


async def test_halt_below_stops_even_with_retries_left(clock, mode):
    out = await run(resolver_graph(guard(clock, halt_below=0.2), [0.1]), mode)
    assert routes(out) == ["halt"]
    assert "below halt_below 0.2" in out["guard_log"][0]["reason"]
    assert out["calls"] == ["resolver"]


async def test_custom_halt_node(clock, mode):
    out = await run(
        resolver_graph(guard(clock, halt_below=0.2, on_halt="review"), [0.05]), mode
    )
    assert routes(out) == ["halt"]
    assert out["calls"] == ["resolver", "review"]


async def test_failed_rule_retries_with_its_message(clock, mode):
    rule = Rule(lambda c: c["amount"] > 15, "amount must be over 15", name="min_amount",
                path="case")
    out = await run(resolver_graph(guard(clock, checks=[rule]), [0.99, 0.99]), mode)
    assert routes(out) == ["retry", "pass"]  # second call writes amount 20
    first = out["guard_log"][0]
    assert first["failed_checks"] == ["min_amount: amount must be over 15"]
    assert out["calls"][1] == (
        "resolver:score 0.99 >= threshold 0.8; min_amount: amount must be over 15"
    )


class Case(BaseModel):
    confidence: float
    amount: int


class StrictCase(BaseModel):
    confidence: float
    amount: int
    currency: str


async def test_model_check(clock, mode):
    ok = await run(resolver_graph(guard(clock, checks=[ModelCheck(Case, "case")]), [0.9]), mode)
    assert routes(ok) == ["pass"]
    bad = await run(
        resolver_graph(guard(clock, checks=[ModelCheck(StrictCase, "case")], max_retries=0),
                       [0.9]),
        mode,
    )
    assert routes(bad) == ["escalate"]
    assert bad["guard_log"][0]["failed_checks"] == ["valid_StrictCase: currency: Field required"]


async def test_async_scorer_and_check_in_both_graph_kinds(clock, mode):
    async def score(state: Any) -> float:
        return state["case"]["confidence"] + 0.3

    async def positive(state: Any) -> str | None:
        return None if state["case"]["amount"] > 0 else "amount must be positive"

    positive.name = "positive"  # type: ignore[attr-defined]
    out = await run(resolver_graph(guard(clock, score=score, checks=[positive]), [0.6]), mode)
    assert routes(out) == ["pass"]
    assert out["guard_log"][0]["score"] == pytest.approx(0.9)


def _raise(state: Any) -> float:
    raise RuntimeError("model offline")


@pytest.mark.parametrize(
    ("scorer", "expected"),
    [
        (_raise, "score: RuntimeError: model offline"),
        (lambda s: math.nan, "score: scorer returned nan; return a number in [0, 1]"),
        (lambda s: "high", "score: scorer returned str 'high'; return a number in [0, 1]"),
        (lambda s: None, "score: scorer returned NoneType None; return a number in [0, 1]"),
        (lambda s: True, "score: scorer returned bool True; return a number in [0, 1]"),
        (lambda s: 1.5, "score: scorer returned 1.5, outside [0, 1]"),
        ("case.missing", "score: 'missing' is missing from case"),
        ("case.confidence.x", "score: case.confidence (float) has no field 'x'"),
    ],
)
async def test_broken_scorer_is_a_recorded_failure_not_a_crash(clock, mode, scorer, expected):
    out = await run(resolver_graph(guard(clock, score=scorer), [0.9, 0.9]), mode)
    assert routes(out) == ["retry", "escalate"]
    for d in out["guard_log"]:
        assert d["score"] is None
        assert d["failed_checks"] == [expected]
    assert out["calls"][-1] == "review"


async def test_raising_check_is_a_failed_check(clock, mode):
    def boom(state: Any) -> None:
        raise KeyError("amount")

    out = await run(resolver_graph(guard(clock, checks=[boom], max_retries=0), [0.9]), mode)
    assert out["guard_log"][0]["failed_checks"] == ["boom: raised KeyError: 'amount'"]
    assert routes(out) == ["escalate"]


async def test_open_breaker_escalates_instead_of_retrying(clock, mode):
    breaker = CircuitBreaker("resolver", failure_rate=0.5, window=4, min_calls=1, clock=clock)
    out = await run(resolver_graph(guard(clock, breaker=breaker, max_retries=3), [0.1]), mode)
    assert routes(out) == ["escalate"]
    d = out["guard_log"][0]
    assert d["breaker_state"] == "open"
    assert "breaker 'resolver' is open" in d["reason"]
    assert breaker.state() == "open"


async def test_breaker_records_every_verdict(clock, mode):
    breaker = CircuitBreaker("resolver", failure_rate=0.9, window=10, min_calls=10, clock=clock)
    out = await run(resolver_graph(guard(clock, breaker=breaker), [0.1, 0.9]), mode)
    assert routes(out) == ["retry", "pass"]
    assert [d["breaker_state"] for d in out["guard_log"]] == ["closed", "closed"]
    assert breaker.snapshot().outcomes == "10"  # failure, then success


def test_guard_name_overrides_node_name(clock):
    out = resolver_graph(guard(clock, name="resolver-confidence"), [0.9]).invoke({"calls": []})
    assert out["guard_log"][0]["guard"] == "resolver-confidence"


# -- configuration errors at construction -------------------------------------------------


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"threshold": 1.7}, "threshold must be in [0, 1], got 1.7"),
        ({"threshold": -0.1}, "threshold must be in [0, 1], got -0.1"),
        ({"threshold": math.nan}, "threshold must be in [0, 1], got nan"),
        ({"threshold": "0.8"}, "threshold must be a number in [0, 1], got '0.8'"),
        ({"max_retries": -1}, "max_retries must be an integer >= 0, got -1"),
        ({"halt_below": 0.9}, "halt_below must be <= threshold (0.8), got 0.9"),
        ({"on_pass": ""}, "on_pass must be a node name, got ''"),
        ({"on_retry": START}, "on_retry cannot be START"),
        ({"on_retry": END}, "on_retry cannot be END"),
        ({"score": 3}, "score must be a dotted path"),
        ({"score": "case..confidence"}, "invalid segment ''"),
        ({"score": ""}, "score path must be a non-empty dotted path"),
        ({"checks": ["not callable"]}, "each check must be callable"),
        ({"breaker": "resolver"}, "breaker must be a CircuitBreaker"),
    ],
)
def test_bad_configuration_raises_at_construction(clock, kw, message):
    with pytest.raises(ConfigurationError) as err:
        guard(clock, **kw)
    assert message in str(err.value)


def test_threshold_message_is_exact(clock):
    with pytest.raises(ConfigurationError, match=r"^threshold must be in \[0, 1\], got 1\.7$"):
        ConfidenceGuard(score="case.confidence", threshold=1.7, on_pass="crm")


def test_unknown_route_is_caught_at_compile_time(clock):
    b = StateGraph(CaseState)
    b.add_node("resolver", lambda s: {})
    b.add_node("check", guard(clock, on_pass="crn"))
    b.add_node("crm", lambda s: {})
    b.add_node("review", lambda s: {})
    b.add_edge(START, "resolver")
    b.add_edge("resolver", "check")
    with pytest.raises(ConfigurationError, match=r"on_pass='crn' is not a node of the graph"):
        validate_guards(b)
    with pytest.raises(ValueError, match="unknown node `crn`"):
        b.compile()


def test_routes_are_declared_for_drawing(clock):
    graph = resolver_graph(guard(clock), [0.9])
    edges = {(e.source, e.target) for e in graph.get_graph().edges}
    assert {("check", "crm"), ("check", "resolver"), ("check", "review"),
            ("check", "__end__")} <= edges


class Inner(BaseModel):
    confidence: float


class TypedState(CaseState):
    brief: Inner


def test_scorer_path_checked_against_schema(clock):
    with pytest.raises(ConfigurationError, match="'confidenc' is not a field of brief"):
        guard(clock, score="brief.confidenc", schema=TypedState)
    with pytest.raises(ConfigurationError, match="'breif' is not a field of the state schema"):
        guard(clock, score="breif.confidence", schema=TypedState)
    guard(clock, score="brief.confidence", schema=TypedState)  # exists
    guard(clock, score="case.anything", schema=TypedState)  # dict[str, Any]: not checkable
    rule = Rule(bool, "x", path="brief.nope")
    with pytest.raises(ConfigurationError, match="check 'bool' path 'brief.nope'"):
        guard(clock, score="brief.confidence", checks=[rule], schema=TypedState)


def test_validate_guards_checks_paths_against_builder_schema(clock):
    b = StateGraph(TypedState)
    for n in ("resolver", "crm", "review"):
        b.add_node(n, lambda s: {})
    b.add_node("check", guard(clock, score="brief.confidenc"))
    b.add_edge(START, "resolver")
    with pytest.raises(ConfigurationError, match="ConfidenceGuard check: score path"):
        validate_guards(b)


class PydanticState(BaseModel):
    case: Inner
    guard_log: Annotated[list[dict[str, Any]], append_records] = []


def test_pydantic_state_graph(clock):
    """Guards read attributes of a pydantic state as well as dict keys."""
    b = StateGraph(PydanticState)
    b.add_node("check", ConfidenceGuard(score="case.confidence", threshold=0.5, on_pass=END))
    b.add_edge(START, "check")
    out = b.compile().invoke({"case": {"confidence": 0.7}})
    assert out["guard_log"][0]["route"] == "pass"


def test_async_scorer_from_plain_sync_code(clock):
    """No event loop in this thread: the sync path runs the coroutine itself."""

    async def score(state: Any) -> float:
        return 0.9

    cmd = guard(clock, score=score).invoke({"case": {}}, None)
    assert cmd.goto == "crm"
    assert cmd.update["guard_log"][0]["guard"] == "confidence_guard"  # no node name known


def test_docstring_examples_run():
    import doctest

    from relaygraph.guards import (
        _breaker,
        _budget,
        _checks,
        _confidence,
        _gate,
        _scorers,
        _sql_store,
        _wrap,
    )

    for module in (_breaker, _budget, _checks, _confidence, _gate, _scorers, _sql_store,
                   _wrap):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0, module.__name__
