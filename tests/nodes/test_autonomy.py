"""AutonomyPolicy: full review at first, sampling after evidence, full review after trouble."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, StateGraph

from relaygraph import ConfigurationError
from relaygraph.graphs import RelayState
from relaygraph.guards import CircuitBreaker
from relaygraph.nodes._autonomy import (
    AutonomyPolicy,
    AutonomyStats,
    InMemoryAutonomyStore,
    SQLAutonomyStore,
    decisions_table,
    stats_table,
    wilson_lower_bound,
)
from relaygraph.nodes._review import HumanReview, submit_review


def draws(*values: float) -> Callable[[], float]:
    it: Iterator[float] = iter(values)
    return lambda: next(it)


class Clock:
    def __init__(self) -> None:
        self.t = 1_800_000_000.0

    def __call__(self) -> float:
        self.t += 1.0
        return self.t


def policy(store=None, rng=None, **kw: Any) -> AutonomyPolicy:
    opts = {"min_approvals": 3, "target": 0.5, "decay": 0.5, "floor": 0.1}
    opts.update(kw)
    return AutonomyPolicy(store, rng=rng or (lambda: 0.9), clock=Clock(), **opts)


def test_wilson_lower_bound_values() -> None:
    assert wilson_lower_bound(0, 0) == 0.0
    assert wilson_lower_bound(3, 3) == pytest.approx(0.4385, abs=1e-4)
    assert wilson_lower_bound(4, 4) == pytest.approx(0.5101, abs=1e-4)
    assert wilson_lower_bound(16, 16) == pytest.approx(0.8063, abs=1e-4)
    assert wilson_lower_bound(8, 10) < 0.8 < wilson_lower_bound(80, 80)


def test_stops_asking_after_the_evidence_and_asks_again_after_one_rejection() -> None:
    p = policy()
    asked = []
    # 1-3: always review; 4th: 3 consecutive approvals but the lower bound is 0.439 < 0.5
    for i in range(4):
        d = p.decide("resolver", "refund", key=f"k{i}")
        assert d.review and d.rate == 1.0
        asked.append(d.reason)
        p.record("resolver", "refund", "approve", key=f"k{i}")
    assert asked[0].startswith("review: full review; 0 consecutive approvals (need 3)")
    assert "3 consecutive approvals (need 3), agreement lower bound 0.439" in asked[3]
    # 4 approvals, lower bound 0.510 >= 0.5: sampled at 0.5 ** 2 = 0.25, draw 0.9 → skip
    d = p.decide("resolver", "refund", key="k4")
    assert not d.review
    assert d.rate == 0.25
    assert d.reason == ("skip: review rate 0.250 (draw 0.900); 4 consecutive approvals "
                        "(need 3), agreement lower bound 0.510 over 4 reviews (target 0.500)")
    # other agents and kinds keep their own evidence
    assert p.decide("resolver", "other-kind").review
    assert p.decide("intake", "refund").review
    # a sampled review (draw below the rate) that the human rejects
    p2 = policy(store=p.store, rng=draws(0.1))
    d = p2.decide("resolver", "refund", key="k5")
    assert d.review and d.reason.startswith("review: sampled at rate 0.250 (draw 0.100)")
    p2.record("resolver", "refund", "reject", key="k5")
    # one rejection: full review again, whatever the draw
    d = p.decide("resolver", "refund", key="k6")
    assert d.review and d.rate == 1.0
    assert d.reason.startswith("review: full review since the last reject; 0 consecutive")
    assert p.stats("resolver", "refund") == AutonomyStats(
        "resolver", "refund", reviews=5, approvals=4, consecutive=0, reset_reason="reject",
        updated_at=p.stats("resolver", "refund").updated_at)


def test_rate_falls_to_the_floor() -> None:
    p = policy(rng=lambda: 0.99)
    for i in range(12):
        p.record("a", "k", "approve", key=str(i))
    assert p.decide("a", "k").rate == 0.1  # 0.5 ** 10 < floor
    p3 = policy(store=p.store, floor=0.0, rng=lambda: 0.99)
    assert p3.decide("a", "k").rate == pytest.approx(0.5 ** 10)


@pytest.mark.parametrize("outcome", ["edit", "reject"])
def test_an_edit_or_rejection_restores_full_review(outcome: str) -> None:
    p = policy()
    for i in range(6):
        p.record("a", "k", "approve", key=str(i))
    assert not p.decide("a", "k").review
    p.record("a", "k", outcome, key="bad")
    d = p.decide("a", "k")
    assert d.review and f"since the last {outcome}" in d.reason


def test_a_breaker_trip_restores_full_review_for_every_kind() -> None:
    p = policy()
    for kind in ("refund", "ticket"):
        for i in range(6):
            p.record("resolver", kind, "approve", key=f"{kind}{i}")
        assert not p.decide("resolver", kind).review
    breaker = CircuitBreaker("resolver", failure_rate=0.5, window=2, min_calls=2,
                             listeners=[p.breaker_listener()])
    breaker.record(False)
    breaker.record(False)
    assert breaker.state() == "open"
    for kind in ("refund", "ticket"):
        d = p.decide("resolver", kind)
        assert d.review and "since the last breaker trip" in d.reason
    assert p.stats("resolver", "refund").approvals == 6  # evidence kept, streak reset


def test_decisions_and_outcomes_are_idempotent_per_key() -> None:
    p = policy()
    for i in range(6):
        p.record("a", "k", "approve", key=str(i))
    first = p.decide("a", "k", key="task-1")
    again = policy(store=p.store, rng=lambda: 0.0).decide("a", "k", key="task-1")
    assert again == first and not again.review
    assert p.record("a", "k", "reject", key="task-2") is True
    assert p.record("a", "k", "reject", key="task-2") is False
    assert p.stats("a", "k").reviews == 7


def test_random_random_is_accepted_and_deterministic() -> None:
    runs = []
    for _ in range(2):
        p = policy(rng=random.Random(42))
        for i in range(6):
            p.record("a", "k", "approve", key=str(i))
        runs.append([p.decide("a", "k").review for _ in range(20)])
    assert runs[0] == runs[1]
    assert True in runs[0] and False in runs[0]


@pytest.mark.parametrize("kwargs,message", [
    ({"min_approvals": 0}, "min_approvals must be an int >= 1, got 0"),
    ({"target": 1.5}, "target must be in"),
    ({"floor": -0.1}, "floor must be in"),
    ({"decay": 1.0}, "decay must be in"),
    ({"confidence": 1.0}, "confidence must be in"),
    ({"rng": 3}, "rng must be a random.Random or a callable"),
    ({"store": object()}, "store must implement AutonomyStore"),
])
def test_configuration_errors(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        AutonomyPolicy(**kwargs)


def test_unknown_outcome_is_refused() -> None:
    with pytest.raises(ValueError, match="outcome must be one of"):
        policy().record("a", "k", "maybe")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- SQL store


def test_sql_store_is_shared_by_workers(backend) -> None:
    eng_a, eng_b = sa.create_engine(backend.url), sa.create_engine(backend.url)
    try:
        worker_a = policy(SQLAutonomyStore(eng_a))
        worker_b = policy(SQLAutonomyStore(eng_b))
        worker_a.setup()
        worker_b.setup()  # idempotent
        for i in range(4):
            (worker_a if i % 2 else worker_b).record("resolver", "refund", "approve",
                                                    key=f"t{i}")
        # the same key from another worker is not counted twice
        assert worker_b.record("resolver", "refund", "approve", key="t3") is False
        d = worker_b.decide("resolver", "refund", key="t4")
        assert not d.review and d.rate == 0.25
        # the decision stored by worker B is what worker A gets for that key
        assert policy(SQLAutonomyStore(eng_a), rng=lambda: 0.0).decide(
            "resolver", "refund", key="t4") == d
        worker_a.record("resolver", "refund", "edit", key="t5")
        assert worker_b.decide("resolver", "refund").review
        worker_b.record_breaker_trip("resolver")
        stats = worker_a.stats("resolver", "refund")
        assert (stats.reviews, stats.approvals, stats.consecutive, stats.reset_reason) == (
            5, 4, 0, "breaker trip")
        with eng_a.connect() as c:
            assert c.execute(sa.select(sa.func.count()).select_from(decisions_table)
                             ).scalar() == 6
            assert c.execute(sa.select(sa.func.count()).select_from(stats_table)).scalar() == 1
    finally:
        eng_a.dispose()
        eng_b.dispose()


async def test_async_sql_store(sqlite_backend) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    eng = create_async_engine(sqlite_backend.async_url)
    try:
        p = policy(SQLAutonomyStore(eng))
        await p.asetup()
        for i in range(4):
            assert await p.arecord("a", "k", "approve", key=str(i))
        assert not (await p.adecide("a", "k", key="x")).review
        await p.arecord_breaker_trip("a", "k")
        assert (await p.adecide("a", "k")).review
        assert (await p.astats("a", "k")).approvals == 4
        with pytest.raises(Exception, match="built on an AsyncEngine"):
            p.stats("a", "k")
    finally:
        await eng.dispose()


async def test_in_memory_store_async_api() -> None:
    p = policy(InMemoryAutonomyStore())
    for i in range(4):
        await p.arecord("a", "k", "approve", key=str(i))
    d = await p.adecide("a", "k", key="z")
    assert (await p.adecide("a", "k", key="z")) == d and not d.review


# --------------------------------------------------------------------------- in a graph


class S(RelayState, total=False):
    draft: dict
    sent: int


def _graph(p: AutonomyPolicy):
    def agent(state: S) -> dict:
        return {"draft": {"text": "hello", "n": 1}}

    def send(state: S) -> dict:
        return {"sent": 1}

    def redo(state: S) -> dict:
        return {"sent": 0}

    b = StateGraph(S)
    b.add_node("agent", agent)
    b.add_node("review", HumanReview("draft", agent="writer", kind="email", policy=p,
                                     on_approve="send", on_reject="redo"))
    b.add_node("send", send)
    b.add_node("redo", redo)
    b.add_edge(START, "agent")
    b.add_edge("agent", "review")
    return b.compile(checkpointer=InMemorySaver())


def test_review_node_skips_after_evidence_and_asks_again_after_a_rejection(sqlite_backend
                                                                          ) -> None:
    eng = sa.create_engine(sqlite_backend.url)
    p = policy(SQLAutonomyStore(eng), rng=lambda: 0.9)
    p.setup()
    graph = _graph(p)
    log = []
    for i in range(6):
        cfg = {"configurable": {"thread_id": f"run-{i}"}}
        out = graph.invoke({}, cfg)
        if "__interrupt__" in out:
            req = out["__interrupt__"][0].value
            # the node is re-executed on resume: the policy answer must not change
            out = submit_review(graph, cfg, {"action": "approve", "reviewer": "ana"})
            log.append(("asked", req["policy_reason"][:18]))
        [rec] = out["reviews"]
        assert out["sent"] == 1
        log.append(rec["decision"])
    assert log == [("asked", "review: full revie"), "approve"] * 4 + ["skipped", "skipped"]
    skipped = graph.get_state({"configurable": {"thread_id": "run-5"}}).values["reviews"][0]
    assert skipped["policy_reason"].startswith("skip: review rate 0.250 (draw 0.900)")
    assert skipped["reviewer"] is None and skipped["request"]["agent"] == "writer"

    # one rejection (forced by a sampled review), then every run is asked again
    p_low = policy(SQLAutonomyStore(eng), rng=lambda: 0.0)
    g_low = _graph(p_low)
    cfg = {"configurable": {"thread_id": "sampled"}}
    out = g_low.invoke({}, cfg)
    assert out["__interrupt__"][0].value["policy_reason"].startswith("review: sampled")
    out = submit_review(g_low, cfg, {"action": "reject", "reason": "tone"})
    assert out["sent"] == 0
    cfg = {"configurable": {"thread_id": "after-reject"}}
    out = graph.invoke({}, cfg)
    assert out["__interrupt__"][0].value["policy_reason"].startswith(
        "review: full review since the last reject")
    eng.dispose()
