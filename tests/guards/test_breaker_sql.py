"""SQLBreakerStore on every reachable database; two processes sharing one breaker."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from relaygraph import RelaygraphError
from relaygraph._sql import metadata
from relaygraph.guards import (
    BreakerRecord,
    BreakerStore,
    CircuitBreaker,
    ConfidenceGuard,
    InMemoryBreakerStore,
    SQLBreakerStore,
    breakers_table,
)

from ._helpers import resolver_graph, routes

T = breakers_table


@pytest.fixture
def store(engine) -> SQLBreakerStore:
    s = SQLBreakerStore(engine)
    s.setup()
    s.setup()  # idempotent
    return s


def make(store: Any, clock: Any, **kw: Any) -> CircuitBreaker:
    base: dict[str, Any] = dict(failure_rate=0.5, window=20, min_calls=5, cooldown=300,
                                store=store, clock=clock)
    base.update(kw)
    return CircuitBreaker("resolver", **base)


def test_cycle_seen_by_a_second_breaker_object(store, engine, clock):
    a = make(store, clock)
    b = make(SQLBreakerStore(engine), clock)  # another store object on the same table
    for _ in range(4):
        a.record(False)
    assert b.state() == "closed" and b.snapshot().outcomes == "1111"
    assert a.record(False) == "open"
    assert b.state() == "open" and not b.allow()
    clock.advance(300)
    assert b.state() == "half_open"
    assert b.allow()
    assert not a.allow()  # the single probe is taken, whoever asks
    assert a.record(True) == "closed"
    assert b.state() == "closed"
    rec = store.load("resolver")
    assert rec == BreakerRecord("closed", "", clock(), 0, 0, None, clock())


def test_failed_probe_reopens(store, clock):
    b = make(store, clock, min_calls=1)
    assert b.record(False) == "open"
    clock.advance(300)
    assert b.allow()
    assert b.record(False) == "open"
    assert not b.allow()


def test_row_details(store, engine, clock):
    assert isinstance(store, BreakerStore) and isinstance(InMemoryBreakerStore(), BreakerStore)
    assert metadata.tables["relaygraph_breakers"] is T
    # sub-second times survive the round trip (DOUBLE, not single-precision FLOAT)
    clock.advance(0.123456)
    make(store, clock).record(False)
    assert store.load("resolver").changed_at == pytest.approx(clock(), abs=1e-6)
    # names are compared exactly (MySQL would otherwise fold case)
    CircuitBreaker("Resolver", min_calls=1, store=store, clock=clock).record(False)
    assert make(store, clock).state() == "closed"
    assert CircuitBreaker("Resolver", store=store, clock=clock).state() == "open"
    assert store.load("nobody") is None


def test_concurrent_updates_are_not_lost(backend, clock):
    # Each thread has its own connection; a lost update would drop outcomes.
    eng = sa.create_engine(backend.url, pool_size=4, max_overflow=0)
    SQLBreakerStore(eng).setup()
    b = make(SQLBreakerStore(eng), clock, window=200, min_calls=200)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(10):
                b.record(True)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == []
        assert b.snapshot().outcomes == "0" * 40
    finally:
        eng.dispose()


def test_corrupt_row_is_reset_with_a_warning(store, engine, clock, caplog):
    b = make(store, clock, min_calls=1)
    for corrupt in ({"state": "exploded"}, {"outcomes": "01x"}, {"probes": -3}):
        b.record(False)
        assert b.state() == "open"
        with engine.begin() as conn:
            conn.execute(sa.update(T).where(T.c.name == "resolver").values(**corrupt))
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="relaygraph.guards"):
            assert b.state() == "closed"  # unreadable: treated as a fresh breaker
            assert b.record(True) == "closed"
        assert "stored row is corrupt" in caplog.text, corrupt
        assert "resetting it to closed" in caplog.text
        caplog.clear()
        assert store.load("resolver").outcomes == "0"  # rewritten, readable again
        assert caplog.text == ""
        b.reset()


async def test_async_engine(backend, clock):
    aengine = create_async_engine(backend.async_url)
    try:
        store = SQLBreakerStore(aengine)
        await store.asetup()
        b = make(store, clock, min_calls=2)
        assert await b.arecord(False) == "closed"
        assert await b.arecord(False) == "open"
        assert not await b.aallow()
        clock.advance(300)
        assert await b.astate() == "half_open"
        assert await b.aallow()
        assert await b.arecord(True) == "closed"
        with pytest.raises(RelaygraphError, match="use the async API"):
            b.state()
        # a gate and a guard on the async store inside an async graph
        b2 = make(store, clock, min_calls=1)
        guard = ConfidenceGuard(score="case.confidence", threshold=0.8, on_pass="crm",
                                on_escalate="review", max_retries=0, breaker=b2, clock=clock)
        gate = b2.gate(on_allow="resolver", on_block="review")
        out = await resolver_graph(guard, [0.1], gate=gate).ainvoke({"calls": []})
        assert routes(out) == ["allow", "escalate"]
        out = await resolver_graph(guard, [0.9], gate=gate).ainvoke({"calls": []})
        assert routes(out) == ["block"] and out["calls"] == ["review"]
    finally:
        await aengine.dispose()


async def test_guard_with_sql_breaker_in_both_graph_kinds(store, clock):
    for mode in ("sync", "async"):
        b = CircuitBreaker(f"resolver-{mode}", failure_rate=0.5, window=2, min_calls=2,
                           store=store, clock=clock)
        guard = ConfidenceGuard(score="case.confidence", threshold=0.8, on_pass="crm",
                                on_retry="resolver", on_escalate="review", breaker=b,
                                clock=clock)
        graph = resolver_graph(guard, [0.1, 0.2])
        inp = {"calls": []}
        out = graph.invoke(inp) if mode == "sync" else await graph.ainvoke(inp)
        # the first failure retries; the second opens the breaker, so no more retries
        assert routes(out) == ["retry", "escalate"], mode
        assert [d["breaker_state"] for d in out["guard_log"]] == ["closed", "open"]
        # a sync engine's store also serves async code (on a worker thread)
        assert await b.astate() == "open"


def test_store_rejects_non_engine():
    from relaygraph import ConfigurationError

    with pytest.raises(ConfigurationError, match="needs a SQLAlchemy Engine or AsyncEngine"):
        SQLBreakerStore("sqlite:///x.db")  # type: ignore[arg-type]


# -- two OS processes, one breaker ------------------------------------------------------


class Worker:
    def __init__(self, url: str) -> None:
        root = Path(__file__).resolve().parents[2]
        env = {**os.environ, "PYTHONPATH": str(root)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.guards._breaker_worker", url],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=root, env=env,
        )
        assert self.read() == {"ready": True}

    def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, f"worker exited with {self.proc.wait(timeout=10)}"
        return json.loads(line)  # type: ignore[no-any-return]

    def send(self, **cmd: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()

    def ask(self, **cmd: Any) -> dict[str, Any]:
        self.send(**cmd)
        return self.read()

    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                self.send(op="quit")
                self.proc.wait(timeout=20)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            for pipe in (self.proc.stdin, self.proc.stdout):
                if pipe is not None:
                    pipe.close()


@pytest.mark.postgres
def test_two_processes_share_one_breaker_through_postgres(pg_backend):
    two_processes(pg_backend.url)


@pytest.mark.parametrize("kind", ["sqlite", "mysql"])
def test_two_processes_share_one_breaker_on_other_databases(request, kind):
    two_processes(request.getfixturevalue(f"{kind}_backend").url)


def two_processes(url: str) -> None:
    workers: list[Worker] = []
    try:
        workers.append(Worker(url))
        workers.append(Worker(url))
        a, b = workers
        t0 = 1_767_225_600.0
        # concurrent transactions from both processes: none is lost
        a.send(op="hammer", n=25, now=t0)
        b.send(op="hammer", n=25, now=t0)
        assert a.read()["state"] == "closed" and b.read()["state"] == "closed"
        assert a.ask(op="allow", now=t0)["outcomes"] == "0" * 50
        # process A's failures open the breaker; process B sees it and is blocked
        for _ in range(49):
            a.ask(op="record", ok=False, now=t0)
        assert a.ask(op="record", ok=False, now=t0) == {
            "after": "open", "state": "open", "outcomes": ""}
        assert b.ask(op="allow", now=t0 + 10) == {
            "allowed": False, "state": "open", "outcomes": ""}
        # after the cooldown B takes the only probe; A is held back
        assert b.ask(op="allow", now=t0 + 300)["allowed"] is True
        assert a.ask(op="allow", now=t0 + 301) == {
            "allowed": False, "state": "half_open", "outcomes": ""}
        # B's probe succeeds: both see the breaker closed
        assert b.ask(op="record", ok=True, now=t0 + 302)["after"] == "closed"
        assert a.ask(op="allow", now=t0 + 303) == {
            "allowed": True, "state": "closed", "outcomes": ""}
    finally:
        for w in workers:
            w.close()
