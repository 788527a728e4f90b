"""Dropped connections are retried with bounded backoff; lock and statement waits end in a
clear error; from_conn_string's connections are bounded by one setting."""

from __future__ import annotations

import operator
import sqlite3
import threading
import time
from typing import Annotated, Any

import pytest
import sqlalchemy as sa
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict

from relaygraph._errors import ConfigurationError
from relaygraph.checkpointers import (
    AsyncSQLAlchemySaver,
    DatabaseTimeoutError,
    DatabaseUnavailableError,
    RetryPolicy,
    SQLAlchemySaver,
)
from relaygraph.checkpointers._retry import is_transient
from relaygraph.checkpointers._urls import pool_sizes, resolve_url

from ._threads import at_once


class FakeTime:
    """A clock that only moves when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.now += s

    async def asleep(self, s: float) -> None:
        self.sleep(s)

    def policy(self, **kw: Any) -> RetryPolicy:
        return RetryPolicy(clock=self.clock, sleep=self.sleep, asleep=self.asleep,
                           rand=lambda: 1.0, **kw)


def _put(saver, thread_id: str = "t", cid: str | None = None):
    cp = empty_checkpoint()
    if cid is not None:
        cp["id"] = cid
    cp["channel_values"] = {"v": 1}
    cp["channel_versions"] = {"v": saver.get_next_version(None)}
    return saver.put({"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}, cp,
                     {"source": "input", "step": -1}, dict(cp["channel_versions"]))


def _dropped() -> sa.exc.OperationalError:
    return sa.exc.OperationalError("SELECT 1", {}, Exception(
        "server closed the connection unexpectedly"))


# -- the policy -----------------------------------------------------------------------

def test_backoff_doubles_up_to_its_ceiling_and_stops_at_the_window() -> None:
    t = FakeTime()
    p = t.policy(window=5.0, first=0.1, most=1.0)
    waits = []
    attempt = 1
    while (w := p.delay(attempt, 0.0)) is not None:
        waits.append(w)
        t.sleep(w)
        attempt += 1
    assert waits[:5] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0])
    assert all(w == 1.0 for w in waits[4:])
    assert sum(waits) <= 5.0 and sum(waits) + 1.0 > 5.0  # the window, not one more wait
    assert t.policy(window=0).delay(1, 0.0) is None


@pytest.mark.parametrize("kw", [{"window": -1}, {"first": 0}, {"first": 2, "most": 1},
                                {"factor": 0.5}])
def test_nonsense_policies_are_refused(kw) -> None:
    with pytest.raises(ConfigurationError):
        RetryPolicy(**kw)


def test_which_errors_are_retried() -> None:
    assert is_transient(_dropped())
    refused = sa.exc.OperationalError("x", {}, Exception(
        'connection failed: connection to server at "127.0.0.1", port 5999 failed: '
        "Connection refused"))
    assert is_transient(refused)
    assert is_transient(sa.exc.OperationalError("x", {}, Exception(
        "FATAL:  the database system is starting up")))
    assert is_transient(sa.exc.OperationalError("x", {}, Exception(
        (2013, "Lost connection to MySQL server during query"))))
    assert not is_transient(sa.exc.OperationalError("x", {}, Exception(
        "canceling statement due to lock timeout")))
    assert not is_transient(sa.exc.IntegrityError("x", {}, Exception("duplicate key")))
    for refusal in ('database "nope" does not exist', 'role "nope" does not exist',
                    'password authentication failed for user "nope"'):
        assert not is_transient(sa.exc.OperationalError("x", {}, Exception(
            'connection failed: connection to server at "127.0.0.1", port 5432 failed: '
            f"FATAL:  {refusal}")))


# -- retries through a saver ----------------------------------------------------------

def _flaky(saver, failures: int) -> list[int]:
    """Make the saver's next ``failures`` operations fail as if the connection dropped."""
    calls = [0]
    real = saver._run_once

    def run_once(*a: Any, **kw: Any) -> Any:
        calls[0] += 1
        if calls[0] <= failures:
            raise _dropped()
        return real(*a, **kw)

    saver._run_once = run_once
    return calls


def test_a_dropped_connection_is_retried_with_backoff(sqlite_backend) -> None:
    t = FakeTime()
    engine = sa.create_engine(sqlite_backend.url)
    saver = SQLAlchemySaver(engine, retry=t.policy(window=10.0, first=0.05, most=1.0))
    saver.setup()
    cfg = _put(saver)
    calls = _flaky(saver, 4)
    assert saver.get_tuple(cfg) is not None
    assert calls[0] == 5
    assert t.sleeps == pytest.approx([0.05, 0.1, 0.2, 0.4])
    engine.dispose()


def test_retries_end_with_an_error_saying_how_long(sqlite_backend) -> None:
    t = FakeTime()
    engine = sa.create_engine(sqlite_backend.url)
    saver = SQLAlchemySaver(engine, retry=t.policy(window=3.0, first=0.5, most=1.0))
    saver.setup()
    cfg = _put(saver)
    calls = _flaky(saver, 1000)
    with pytest.raises(DatabaseUnavailableError, match=r"tried \d+ times over 2\.\d s.*"
                       r"RetryPolicy\(window=3\)") as err:
        saver.get_tuple(cfg)
    assert 3 <= calls[0] <= 6 and sum(t.sleeps) <= 3.0
    assert "server closed the connection" in str(err.value)
    engine.dispose()


async def test_the_async_saver_retries_too(sqlite_backend) -> None:
    t = FakeTime()
    async with AsyncSQLAlchemySaver.from_conn_string(
            sqlite_backend.async_url, retry=t.policy(window=10.0)) as saver:
        await saver.asetup()
        cfg = await saver.aput({"configurable": {"thread_id": "a", "checkpoint_ns": ""}},
                               empty_checkpoint(), {"source": "input", "step": -1}, {})
        calls = [0]
        real = saver._run_once

        async def run_once(*a: Any, **kw: Any) -> Any:
            calls[0] += 1
            if calls[0] <= 2:
                raise _dropped()
            return await real(*a, **kw)

        saver._run_once = run_once  # type: ignore[method-assign]
        assert await saver.aget_tuple(cfg) is not None
        assert calls[0] == 3 and len(t.sleeps) == 2


@pytest.mark.postgres
def test_connections_killed_by_the_server_are_replaced(pg_backend) -> None:
    """Real dropped connections: the server ends every backend of the saver's pools."""
    t = FakeTime()
    with SQLAlchemySaver.from_conn_string(pg_backend.url, retry=t.policy()) as saver:
        saver.setup()
        cfg = _put(saver)
        for _ in range(3):
            saver.get_tuple(cfg)
        admin = sa.create_engine(pg_backend.url, poolclass=sa.pool.NullPool)
        with admin.connect() as c:
            killed = c.execute(sa.text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()")).scalar()
        admin.dispose()
        assert killed >= 1
        assert saver.get_tuple(cfg) is not None
        _put(saver, "after")


# -- lock and statement timeouts ------------------------------------------------------

def _hold_row_lock(backend, cid: str) -> tuple[Any, Any]:
    """Lock the checkpoint row in another transaction; returns (engine, connection)."""
    eng = sa.create_engine(backend.url, poolclass=sa.pool.NullPool)
    conn = eng.connect()
    conn.begin()
    conn.execute(sa.text("UPDATE relaygraph_checkpoints SET metadata = metadata "
                         "WHERE thread_id = 'locked'"))
    return eng, conn


@pytest.mark.parametrize("kind", ["postgres", "mysql"])
def test_a_statement_blocked_on_a_lock_fails_with_the_timeout_named(request, kind) -> None:
    backend = request.getfixturevalue("pg_backend" if kind == "postgres" else "mysql_backend")
    with SQLAlchemySaver.from_conn_string(backend.url, lock_timeout=1) as saver:
        saver.setup()
        cfg = _put(saver, "locked")
        cid = cfg["configurable"]["checkpoint_id"]
        eng, conn = _hold_row_lock(backend, cid)
        try:
            start = time.monotonic()
            with pytest.raises(DatabaseTimeoutError) as err:
                _put(saver, "locked", cid)  # the same row: waits for the lock
            took = time.monotonic() - start
        finally:
            conn.rollback()
            conn.close()
            eng.dispose()
        assert err.value.which == "lock" and err.value.seconds == 1
        assert "lock timeout (1 s)" in str(err.value) and "lock_timeout=" in str(err.value)
        assert 0.9 <= took < 10
        _put(saver, "locked", cid)  # the lock is gone: the same write goes through


@pytest.mark.postgres
def test_a_statement_over_the_statement_timeout_fails_clearly(pg_backend) -> None:
    with SQLAlchemySaver.from_conn_string(pg_backend.url, lock_timeout=None,
                                          statement_timeout=0.5) as saver:
        saver.setup()
        cfg = _put(saver, "locked")
        eng, conn = _hold_row_lock(pg_backend, cfg["configurable"]["checkpoint_id"])
        try:
            with pytest.raises(DatabaseTimeoutError, match=r"statement timeout \(0\.5 s\)"
                               r".*statement_timeout=") as err:
                _put(saver, "locked", cfg["configurable"]["checkpoint_id"])
        finally:
            conn.rollback()
            conn.close()
            eng.dispose()
        assert err.value.which == "statement"


def test_sqlite_waits_for_another_writer_within_the_lock_timeout(sqlite_backend) -> None:
    with SQLAlchemySaver.from_conn_string(sqlite_backend.url, lock_timeout=0.5) as saver:
        saver.setup()
        other = sqlite3.connect(sqlite_backend.url.removeprefix("sqlite:///"))
        other.execute("BEGIN IMMEDIATE")
        try:
            start = time.monotonic()
            with pytest.raises(DatabaseTimeoutError, match="lock timeout"):
                _put(saver, "busy")
            assert 0.4 <= time.monotonic() - start < 10
        finally:
            other.rollback()
            other.close()
        # a writer that finishes within the timeout is simply waited for
        other = sqlite3.connect(sqlite_backend.url.removeprefix("sqlite:///"),
                                check_same_thread=False)
        other.execute("BEGIN IMMEDIATE")
        release = threading.Timer(0.1, other.rollback)
        release.start()
        _put(saver, "busy")
        release.join()
        other.close()


# -- connections ----------------------------------------------------------------------

def test_pool_sizes_add_up_to_the_one_setting() -> None:
    u = resolve_url("postgresql://u@h/db", async_=False)
    for n in (3, 4, 10, 17, 40):
        sizes = pool_sizes(u, n)
        assert sum(s["pool_size"] for s in sizes) == n
        assert all(s["max_overflow"] == 0 and s["pool_size"] >= 1 for s in sizes)
    assert pool_sizes(resolve_url("sqlite:///x.db", async_=False), 10) == ({}, {}, {})
    with pytest.raises(ConfigurationError, match="max_connections"):
        pool_sizes(u, 2)


@pytest.mark.parametrize("kind", ["postgres", "mysql"])
def test_a_saver_never_opens_more_than_max_connections(request, kind) -> None:
    backend = request.getfixturevalue("pg_backend" if kind == "postgres" else "mysql_backend")
    with SQLAlchemySaver.from_conn_string(backend.url, max_connections=4) as saver:
        saver.setup()
        engines = [saver.engine, saver._reader, saver._writes_reader]
        assert sum(e.pool.size() for e in engines) == 4

        def work(i: int) -> None:
            for j in range(5):
                cfg = _put(saver, f"t{i}")
                saver.put_writes(cfg, [("v", j)], f"task-{j}")
                saver.get_tuple(cfg)

        errors = at_once(work, 16)
        assert not errors, errors[:3]
        opened = sum(e.pool.checkedin() + e.pool.checkedout() for e in engines)
        assert opened <= 4


# -- a failed save stops the run at the next step boundary ------------------------------

class ChainState(TypedDict, total=False):
    log: Annotated[list[str], operator.add]


class PutsDone:
    """Counts the saver's finished puts (saved or failed), so that a node can wait for the
    save of the step before it: nodes slower than saves, without timing."""

    def __init__(self, saver) -> None:
        self.n = 0
        self.cond = threading.Condition()
        real = saver._run

        def run(make: Any, *a: Any, **kw: Any) -> Any:
            try:
                return real(make, *a, **kw)
            finally:
                if getattr(make, "__name__", "") == "_op_put":
                    with self.cond:
                        self.n += 1
                        self.cond.notify_all()

        saver._run = run

    def wait(self, n: int) -> None:
        with self.cond:
            self.cond.wait_for(lambda: self.n >= n, timeout=10)


def _chain_graph(saver, ran: list[str], steps: int = 8, puts: PutsDone | None = None):
    def node(k: int):
        def run(state: ChainState) -> dict[str, Any]:
            if puts is not None:
                puts.wait(k + 2)  # the input's, __start__'s and earlier nodes' saves
            ran.append(f"n{k}")  # stands for a side effect
            return {"log": [f"n{k}"]}
        return run

    b = StateGraph(ChainState)
    names = [f"n{i}" for i in range(steps)]
    for k, n in enumerate(names):
        b.add_node(n, node(k))
    b.add_edge(START, names[0])
    for a, z in zip(names, names[1:], strict=False):
        b.add_edge(a, z)
    b.add_edge(names[-1], END)
    return b.compile(checkpointer=saver)


def _failing_puts(saver, from_call: int) -> None:
    """From the ``from_call``-th put on, the database refuses the write (not retried)."""
    calls = [0]
    real = saver._run_once

    def run_once(op: Any, **kw: Any) -> Any:
        if getattr(op, "__name__", "") == "_op_put":
            calls[0] += 1
            if calls[0] >= from_call:
                raise sa.exc.OperationalError("INSERT", {}, Exception("disk I/O error"))
        return real(op, **kw)

    saver._run_once = run_once


@pytest.mark.parametrize("durability", ["async", "sync"])
def test_a_failed_save_stops_the_run_at_the_next_step_boundary(sqlite_backend,
                                                               durability) -> None:
    from relaygraph.checkpointers import CheckpointSaveError

    engine = sa.create_engine(sqlite_backend.url)
    saver = SQLAlchemySaver(engine)
    saver.setup()
    ran: list[str] = []
    _failing_puts(saver, 4)  # the input's, __start__'s and n0's saves succeed; n1's fails
    graph = _chain_graph(saver, ran, puts=PutsDone(saver))
    cfg = {"configurable": {"thread_id": "db-fails"}}
    with pytest.raises(CheckpointSaveError if durability == "async"
                       else DatabaseUnavailableError) as err:
        graph.invoke({"log": []}, cfg, durability=durability)
    # n1's save failed: under "async" n2 was already running and finishes; nothing after
    # (without the stop, n3 to n7 would run too)
    assert ran == (["n0", "n1", "n2"] if durability == "async" else ["n0", "n1"])
    assert "disk I/O error" in str(err.value)
    # the database is back: the thread resumes from its last saved checkpoint
    saver._run_once = SQLAlchemySaver._run_once.__get__(saver)
    from relaygraph.observe import thread_status

    report = thread_status(graph.get_state(cfg))
    assert report.status == "interrupted" and report.next[0] == "n1"
    graph.invoke(None, cfg)
    assert graph.get_state(cfg).values["log"] == [f"n{i}" for i in range(8)]
    # a later run on the same thread is not stopped by the earlier failure
    ran.clear()
    graph.invoke({"log": []}, {"configurable": {"thread_id": "fresh"}}, durability=durability)
    assert len(ran) == 8
    engine.dispose()


async def test_a_failed_save_stops_an_async_run_too(sqlite_backend) -> None:
    from relaygraph.checkpointers import CheckpointSaveError

    async with AsyncSQLAlchemySaver.from_conn_string(sqlite_backend.async_url) as saver:
        await saver.asetup()
        ran: list[str] = []
        calls = [0]
        real = saver._run_once

        async def run_once(op: Any, **kw: Any) -> Any:
            if getattr(op, "__name__", "") == "_op_put":
                calls[0] += 1
                if calls[0] >= 4:
                    raise sa.exc.OperationalError("INSERT", {}, Exception("disk I/O error"))
            return await real(op, **kw)

        saver._run_once = run_once  # type: ignore[method-assign]
        puts = APutsDone(saver)
        graph = _chain_graph(saver, ran)
        for k in range(8):  # each node waits for the save before it, as above
            graph.builder.nodes[f"n{k}"].runnable = _awaiting(puts, k, ran)
        graph = graph.builder.compile(checkpointer=saver)
        with pytest.raises(CheckpointSaveError):
            await graph.ainvoke({"log": []}, {"configurable": {"thread_id": "a"}})
        assert ran == ["n0", "n1", "n2"]


class APutsDone:
    def __init__(self, saver) -> None:
        import asyncio

        self.n = 0
        self.cond = asyncio.Condition()
        real = saver._run

        async def run(make: Any, *a: Any, **kw: Any) -> Any:
            try:
                return await real(make, *a, **kw)
            finally:
                if getattr(make, "__name__", "") == "_op_put":
                    async with self.cond:
                        self.n += 1
                        self.cond.notify_all()

        saver._run = run


def _awaiting(puts: APutsDone, k: int, ran: list[str]):
    import asyncio

    from langchain_core.runnables import RunnableLambda

    async def run(state: ChainState) -> dict[str, Any]:
        async with puts.cond:
            await asyncio.wait_for(puts.cond.wait_for(lambda: puts.n >= k + 2), 10)
        ran.append(f"n{k}")
        return {"log": [f"n{k}"]}

    return RunnableLambda(run)


def test_a_value_that_cannot_be_serialized_names_that_fix_not_the_database() -> None:
    # the message said "resume it once the database is back", which could not help
    from relaygraph.checkpointers import CheckpointSaveError

    refused = CheckpointSaveError("t", TypeError("Type is not msgpack serializable: Foo"))
    assert "database is back" not in str(refused)
    assert "cannot be serialized: make the nodes return values" in str(refused)
    down = CheckpointSaveError("t", DatabaseUnavailableError("cannot use the database"))
    assert "once the database is back" in str(down)
