"""CircuitBreaker transitions with a manual clock, its listeners, and the gate node."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import pytest

from relaygraph import ConfigurationError
from relaygraph.guards import (
    BreakerEvent,
    BreakerGate,
    CircuitBreaker,
    ConfidenceGuard,
    InMemoryBreakerStore,
)

from ._helpers import resolver_graph, routes, run


def make(clock: Any, **kw: Any) -> CircuitBreaker:
    base: dict[str, Any] = dict(
        failure_rate=0.5, window=20, min_calls=5, cooldown=timedelta(minutes=5), clock=clock
    )
    base.update(kw)
    return CircuitBreaker("resolver", **base)


async def record(b: CircuitBreaker, ok: bool, mode: str) -> str:
    return b.record(ok) if mode == "sync" else await b.arecord(ok)


async def allow(b: CircuitBreaker, mode: str) -> bool:
    return b.allow() if mode == "sync" else await b.aallow()


async def state(b: CircuitBreaker, mode: str) -> str:
    return b.state() if mode == "sync" else await b.astate()


async def test_full_cycle(clock, mode):
    events: list[BreakerEvent] = []
    b = make(clock, listeners=[events.append])
    assert await state(b, mode) == "closed" and await allow(b, mode)
    # four failures: below min_calls, still closed
    for _ in range(4):
        assert await record(b, False, mode) == "closed"
    assert await allow(b, mode)
    # the fifth reaches min_calls with a 100% failure rate
    assert await record(b, False, mode) == "open"
    assert events[-1] == BreakerEvent("resolver", "closed", "open", clock(), 1.0)
    # blocks while open, right up to the end of the cooldown
    assert not await allow(b, mode)
    clock.advance(299.9)
    assert await state(b, mode) == "open" and not await allow(b, mode)
    # half-opens after the cooldown: one probe goes through, the next call is held
    clock.advance(0.1)
    assert await state(b, mode) == "half_open"
    assert await allow(b, mode)
    assert events[-1].previous == "open" and events[-1].current == "half_open"
    assert not await allow(b, mode)
    # a successful probe closes it with a fresh window
    assert await record(b, True, mode) == "closed"
    assert b.snapshot().outcomes == ""
    assert [(e.previous, e.current) for e in events] == [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "closed"),
    ]


async def test_failed_probe_reopens_for_a_new_cooldown(clock, mode):
    b = make(clock, min_calls=1)
    assert await record(b, False, mode) == "open"
    clock.advance(300)
    assert await allow(b, mode)
    assert await record(b, False, mode) == "open"
    clock.advance(299)
    assert not await allow(b, mode)  # the cooldown restarted at the failed probe
    clock.advance(1)
    assert await allow(b, mode)


async def test_failure_rate_over_sliding_window(clock, mode):
    b = make(clock, failure_rate=0.5, window=4, min_calls=4)
    for ok in (True, True, True, False, False):  # window now T,T,F,F -> 50%
        last = await record(b, ok, mode)
    assert last == "open"
    b2 = CircuitBreaker("other", failure_rate=0.5, window=4, min_calls=4, clock=clock)
    for ok in (False, True, True, True, False, True):  # window T,T,F,T -> 25%
        assert await record(b2, ok, mode) == "closed"
    assert b2.snapshot().outcomes == "0010"


async def test_several_probes_must_all_succeed(clock, mode):
    b = make(clock, min_calls=1, half_open_probes=2)
    await record(b, False, mode)
    clock.advance(300)
    assert await allow(b, mode) and await allow(b, mode)
    assert not await allow(b, mode)
    assert await record(b, True, mode) == "half_open"
    assert await record(b, True, mode) == "closed"


async def test_lost_probe_is_released_after_a_cooldown(clock, mode):
    b = make(clock, min_calls=1)
    await record(b, False, mode)
    clock.advance(300)
    assert await allow(b, mode)  # this probe's worker dies and never reports
    clock.advance(299)
    assert not await allow(b, mode)
    clock.advance(1)
    assert await allow(b, mode)


async def test_guard_without_gate_reports_the_probe(clock, mode):
    b = make(clock, min_calls=1)
    await record(b, False, mode)
    clock.advance(300)
    # no gate admitted the call; the outcome after the cooldown is the probe result
    assert await record(b, True, mode) == "closed"


async def test_trip_and_reset(clock, mode):
    b = make(clock)
    if mode == "sync":
        b.trip()
        assert b.state() == "open"
        b.reset()
    else:
        await b.atrip()
        assert await b.astate() == "open"
        await b.areset()
    assert await state(b, mode) == "closed"


async def test_listener_errors_are_logged_not_raised(clock, mode, caplog):
    async def alistener(event: BreakerEvent) -> None:
        seen.append(event.current)

    def broken(event: BreakerEvent) -> None:
        raise RuntimeError("pager down")

    seen: list[str] = []
    b = make(clock, min_calls=1, listeners=[broken, alistener])
    with caplog.at_level(logging.WARNING, logger="relaygraph.guards"):
        assert await record(b, False, mode) == "open"
    assert "listener" in caplog.text and "failed" in caplog.text
    assert seen == (["open"] if mode == "async" else [])
    if mode == "sync":
        assert "async listener" in caplog.text


def test_same_name_same_store_is_one_breaker(clock):
    store = InMemoryBreakerStore()
    a = make(clock, min_calls=1, store=store)
    b = make(clock, min_calls=1, store=store)
    a.record(False)
    assert b.state() == "open" and not b.allow()


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"failure_rate": 0}, "failure_rate must be in (0, 1], got 0"),
        ({"failure_rate": 1.5}, "failure_rate must be in (0, 1], got 1.5"),
        ({"window": 0}, "window must be an integer >= 1, got 0"),
        ({"min_calls": 30}, "min_calls must be <= window (20), got 30"),
        ({"cooldown": -1}, "cooldown must be >= 0 seconds, got -1"),
        ({"cooldown": "5m"}, "cooldown must be a timedelta or a number of seconds"),
        ({"half_open_probes": 0}, "half_open_probes must be an integer >= 1, got 0"),
        ({"store": object()}, "store must implement BreakerStore"),
        ({"listeners": [1]}, "listeners must be callables"),
        ({"listeners": None}, "listeners must be a list of callables"),
        ({"listeners": print}, "pass one listener as [listener]"),
    ],
)
def test_bad_configuration(clock, kw, message):
    with pytest.raises(ConfigurationError) as err:
        make(clock, **kw)
    assert message in str(err.value)


def test_bad_name():
    with pytest.raises(ConfigurationError, match="breaker name must be a non-empty string"):
        CircuitBreaker("")


# -- the gate in a graph --------------------------------------------------------------


async def test_gate_blocks_agent_while_open_then_probes_and_closes(clock, mode):
    b = make(clock, min_calls=2, window=2)
    guard = ConfidenceGuard(score="case.confidence", threshold=0.8, on_pass="crm",
                            on_escalate="review", max_retries=0, breaker=b, clock=clock)
    gate = BreakerGate(b, on_allow="resolver", on_block="review")
    # two failing runs open the breaker
    for _ in range(2):
        out = await run(resolver_graph(guard, [0.1], gate=gate), mode)
        assert routes(out) == ["allow", "escalate"]
    assert b.state() == "open"
    # while open the resolver is not run at all
    out = await run(resolver_graph(guard, [0.99], gate=gate), mode)
    assert out["calls"] == ["review"]
    [blocked] = out["guard_log"]
    assert blocked["route"] == "block" and blocked["goto"] == "review"
    assert blocked["breaker_state"] == "open" and blocked["guard"] == "gate"
    assert blocked["threshold"] == 0.5
    # after the cooldown a probe runs; its success closes the breaker
    clock.advance(300)
    out = await run(resolver_graph(guard, [0.99], gate=gate), mode)
    assert routes(out) == ["allow", "pass"]
    assert out["guard_log"][0]["breaker_state"] == "half_open"
    assert out["guard_log"][1]["breaker_state"] == "closed"
    assert out["calls"] == ["resolver", "crm"]


async def test_gate_closed_records_failure_rate(clock, mode):
    b = make(clock)
    b.record(False)
    b.record(True)
    out = await run(resolver_graph(
        ConfidenceGuard(score="case.confidence", threshold=0.5, on_pass="crm"), [0.9],
        gate=b.gate(on_allow="resolver", on_block="review")), mode)
    assert out["guard_log"][0]["score"] == 0.5
    assert out["guard_log"][0]["breaker_state"] == "closed"


def test_gate_configuration(clock):
    b = make(clock)
    with pytest.raises(ConfigurationError, match="breaker must be a CircuitBreaker"):
        BreakerGate("resolver", on_allow="a", on_block="b")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="would never block"):
        BreakerGate(b, on_allow="a", on_block="a")
    assert BreakerGate(b, on_allow="a", on_block="b").destinations == ("a", "b")
