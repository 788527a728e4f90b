"""The async saver on a caller's aiosqlite engine (``_aiolite.AiosqliteLane``): each
operation in one trip to the connection's aiosqlite thread, the caller's connections
handed back as they were lent, and SQLAlchemy taking over mid-operation for a statement
only it can run."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
import sqlalchemy as sa
from langchain_core.messages import HumanMessage
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.util import await_only

from relaygraph.checkpointers import AsyncSQLAlchemySaver, SQLAlchemySaver, _aiokept
from relaygraph.checkpointers._errors import InvalidKeyError

from ._graphs import chat_graph
from .test_caller_engine import assert_relaxed_for_the_saver_only

CFG = {"configurable": {"thread_id": "t"}}


async def _run(saver: AsyncSQLAlchemySaver, thread: str = "t", steps: int = 3) -> dict:
    g = chat_graph(steps).compile(checkpointer=saver)
    return await g.ainvoke({"messages": [HumanMessage("hi", id="h")], "count": 0},
                           {"configurable": {"thread_id": thread}})


def _engine(path: Path, **kw: Any) -> AsyncEngine:
    return create_async_engine(f"sqlite+aiosqlite:///{path}", **kw)


def _traced(path: Path) -> tuple[AsyncEngine, list[str]]:
    """A one-connection engine whose sqlite3 connection records every statement."""
    engine = _engine(path, pool_size=1, max_overflow=0)
    seen: list[str] = []

    @sa.event.listens_for(engine.sync_engine, "connect")
    def _trace(dbapi_conn, _record) -> None:
        await_only(dbapi_conn.driver_connection.set_trace_callback(seen.append))

    return engine, seen


async def _level(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.exec_driver_sql("PRAGMA synchronous")).scalar_one())


async def test_each_operation_is_one_trip_without_sqlalchemy(tmp_path: Path,
                                                             monkeypatch) -> None:
    engine = _engine(tmp_path / "app.db")
    saver = AsyncSQLAlchemySaver(engine)
    assert saver._lane is not None
    await saver.asetup()
    await _run(saver, "warm")  # the schema checked, statements compiled, a checkout kept
    trips: list[Any] = []
    real = aiosqlite.Connection._execute

    async def counted(self, fn, *args, **kwargs):
        trips.append(fn)
        return await real(self, fn, *args, **kwargs)

    monkeypatch.setattr(aiosqlite.Connection, "_execute", counted)
    lane = saver._lane
    statements: list[str] = []
    sa.event.listen(engine.sync_engine, "before_cursor_execute",
                    lambda conn, cur, sql, *a: statements.append(sql))
    ops = 0
    for name in ("aget_tuple", "aput", "aput_writes"):
        real_op = getattr(saver, name)

        async def op(*args, _real=real_op, **kwargs):
            nonlocal ops
            ops += 1
            return await _real(*args, **kwargs)

        monkeypatch.setattr(saver, name, op)
    out = await _run(saver, "t", steps=6)
    assert ops > 15
    # one trip per operation, and no statement through SQLAlchemy
    assert [getattr(fn, "__self__", None) for fn in trips].count(lane) == ops, trips
    assert statements == []
    assert (await saver.aget_tuple(CFG)).checkpoint["channel_values"]["messages"] == (
        out["messages"])
    await engine.dispose()


async def test_the_savers_commits_skip_the_fsync_and_the_callers_do_not(tmp_path: Path) -> None:
    engine, seen = _traced(tmp_path / "app.db")
    saver = AsyncSQLAlchemySaver(engine)
    await saver.asetup()
    assert saver._lane is not None and saver._lane.kept.keep == 0  # a pool of one
    assert await _level(engine) == 2  # the default, which the caller keeps
    seen.clear()
    await _run(saver)
    assert_relaxed_for_the_saver_only(seen)
    assert await _level(engine) == 2  # the same pooled connection, as the caller left it
    await engine.dispose()


async def test_a_statement_for_sqlalchemy_continues_the_same_transaction(
        tmp_path: Path) -> None:
    """Writes stored twice for one task are merged: the merge's statements are built per
    call, so SQLAlchemy runs them, in the transaction the saver's thread began."""
    engine, seen = _traced(tmp_path / "app.db")
    saver = AsyncSQLAlchemySaver(engine)
    await saver.asetup()
    await _run(saver)
    cfg = (await saver.aget_tuple(CFG)).config
    await saver.aput_writes(cfg, [("log", "first"), ("notes", {"a": 1})], "task-1")
    seen.clear()
    # (regular writes keep the first value stored at an index)
    await saver.aput_writes(cfg, [("log", "again"), ("count", 7), ("count", 8)], "task-1")
    merged = [(c, v) for t, c, v in (await saver.aget_tuple(cfg)).pending_writes
              if t == "task-1"]
    assert merged == [("log", "first"), ("notes", {"a": 1}), ("count", 8)]
    i = seen.index("BEGIN IMMEDIATE")
    update = next(j for j, s in enumerate(seen) if s.startswith("UPDATE relaygraph_writes"))
    commit = seen.index("COMMIT", i)
    assert i < update < commit, seen  # one transaction
    assert seen.index("PRAGMA synchronous=FULL", commit) > commit
    assert await _level(engine) == 2
    await engine.dispose()


async def test_a_failure_after_the_handover_rolls_back(tmp_path: Path, monkeypatch) -> None:
    from relaygraph.checkpointers import _aio

    engine = _engine(tmp_path / "app.db", pool_size=1, max_overflow=0)
    saver = AsyncSQLAlchemySaver(engine)
    await saver.asetup()
    await _run(saver)
    cfg = (await saver.aget_tuple(CFG)).config
    await saver.aput_writes(cfg, [("log", "first")], "task-1")

    async def broken(conn, msg, direct=None):
        raise RuntimeError("lost on the way")

    monkeypatch.setattr(_aio, "_exec", broken)
    with pytest.raises(RuntimeError, match="lost on the way"):
        await saver.aput_writes(cfg, [("count", 9)], "task-1")
    monkeypatch.undo()
    writes = [(c, v) for t, c, v in (await saver.aget_tuple(cfg)).pending_writes
              if t == "task-1"]
    assert writes == [("log", "first")]
    async with engine.connect() as conn:  # back in the pool: no transaction, FULL again
        raw = (await conn.get_raw_connection()).driver_connection
        assert not raw.in_transaction
        assert (await conn.exec_driver_sql("PRAGMA synchronous")).scalar_one() == 2
    await engine.dispose()


async def test_reads_that_need_sqlalchemy_read_the_same_as_the_sync_saver(
        tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    engine = _engine(path)
    saver = AsyncSQLAlchemySaver(engine)
    await saver.asetup()
    for t in ("a", "b", "c"):
        await _run(saver, t, steps=4)
    got = [(x.config, x.checkpoint["id"], x.pending_writes) async for x in saver.alist(None)]
    with SQLAlchemySaver.from_conn_string(f"sqlite:///{path}") as sync:
        want = [(x.config, x.checkpoint["id"], x.pending_writes) for x in sync.list(None)]
    assert len(got) == 24 and got == want
    await engine.dispose()


async def test_the_kept_checkout_goes_back_after_a_pause(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(_aiokept, "HOLD_IDLE", 0.1)
    engine = _engine(tmp_path / "app.db")
    saver = AsyncSQLAlchemySaver(engine)
    await saver.asetup()
    await _run(saver)
    assert 1 <= engine.sync_engine.pool.checkedout() <= 2  # kept between operations
    for _ in range(50):
        await asyncio.sleep(0.05)
        if engine.sync_engine.pool.checkedout() == 0:
            break
    assert engine.sync_engine.pool.checkedout() == 0
    assert saver._lane is not None and saver._lane.kept._idle == []
    await _run(saver, "again")  # and a later operation takes one again
    await saver._lane.kept.close()
    assert engine.sync_engine.pool.checkedout() == 0
    await engine.dispose()


async def test_nothing_is_kept_from_a_null_pool(tmp_path: Path) -> None:
    engine = _engine(tmp_path / "app.db", poolclass=sa.pool.NullPool)
    saver = AsyncSQLAlchemySaver(engine)
    await saver.asetup()
    assert saver._lane is not None and saver._lane.kept.keep == 0
    out = await _run(saver)
    assert saver._lane.kept._idle == []
    assert (await saver.aget_tuple(CFG)).checkpoint["channel_values"]["messages"] == (
        out["messages"])
    await engine.dispose()


async def test_an_error_of_the_operation_keeps_the_checkout(tmp_path: Path) -> None:
    engine = _engine(tmp_path / "app.db")
    saver = AsyncSQLAlchemySaver(engine)
    await saver.asetup()
    await _run(saver)
    assert saver._lane is not None
    kept = [c for c, _ in saver._lane.kept._idle]
    cfg = (await saver.aget_tuple(CFG)).config
    with pytest.raises(InvalidKeyError):
        await saver.aput_writes(cfg, [("log", "x")], "t" * 500)
    assert [c for c, _ in saver._lane.kept._idle] == kept  # nothing reached the database
    await _run(saver, "after")
    await engine.dispose()


async def test_concurrent_runs_share_a_small_pool(tmp_path: Path) -> None:
    engine = _engine(tmp_path / "app.db", pool_size=2, max_overflow=0, pool_timeout=30)
    saver = AsyncSQLAlchemySaver(engine)
    await saver.asetup()
    outs = await asyncio.gather(*(_run(saver, f"t{i}", steps=4) for i in range(12)))
    for i, out in enumerate(outs):
        state = await saver.aget_tuple({"configurable": {"thread_id": f"t{i}"}})
        assert state.checkpoint["channel_values"]["messages"] == out["messages"]
        assert state.checkpoint["channel_values"]["count"] == out["count"] == 6
    assert engine.sync_engine.pool.checkedout() <= 1  # a pool of 2 spares one
    await engine.dispose()


def test_a_later_event_loop_takes_the_kept_checkout_over(tmp_path: Path) -> None:
    engine = _engine(tmp_path / "app.db")
    saver = AsyncSQLAlchemySaver(engine)

    async def first() -> None:
        await saver.asetup()
        await _run(saver, "a")

    async def second() -> list[Any]:
        await _run(saver, "b")
        assert 1 <= engine.sync_engine.pool.checkedout() <= 2  # no more than kept
        await saver._lane.kept.close()
        return [x.config async for x in saver.alist(None)]

    asyncio.run(first())
    assert len(asyncio.run(second())) > 8
    asyncio.run(engine.dispose())


async def test_a_disposed_engine_is_followed(tmp_path: Path) -> None:
    engine = _engine(tmp_path / "app.db")
    saver = AsyncSQLAlchemySaver(engine)
    await saver.asetup()
    await _run(saver, "a")
    assert saver._lane is not None
    old = [fairy.driver_connection for _, fairy in saver._lane.kept._idle]
    assert old
    await engine.dispose()  # the application's own shutdown or reconnect
    await _run(saver, "b")  # runs on the new pool; the old connection is closed
    assert all(c._connection is None for c in old)
    await saver._lane.kept.close()
    await engine.dispose()


def test_an_aiosqlite_without_its_thread_hook_goes_statement_by_statement(
        tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delattr(aiosqlite.Connection, "_execute")
    engine = _engine(tmp_path / "app.db")
    assert AsyncSQLAlchemySaver(engine)._lane is None
    monkeypatch.undo()
    assert AsyncSQLAlchemySaver(engine)._lane is not None


def test_in_memory_databases_keep_the_aiosqlite_path() -> None:
    assert AsyncSQLAlchemySaver(create_async_engine("sqlite+aiosqlite://"))._lane is None


async def test_a_pool_sharing_one_connection_keeps_the_aiosqlite_path(tmp_path: Path) -> None:
    """A ``StaticPool`` lends its one connection to every checkout at once, so an
    operation handed over to SQLAlchemy could have another's trip run inside its
    transaction: such an engine goes statement by statement, under the saver's lock."""
    engine = _engine(tmp_path / "app.db", poolclass=sa.pool.StaticPool)
    saver = AsyncSQLAlchemySaver(engine)
    assert saver._lane is None
    await saver.asetup()
    outs = await asyncio.gather(*(_run(saver, f"t{i}") for i in range(4)))
    for i, out in enumerate(outs):
        tup = await saver.aget_tuple({"configurable": {"thread_id": f"t{i}"}})
        assert tup.checkpoint["channel_values"]["messages"] == out["messages"]
    assert AsyncSQLAlchemySaver(_engine(tmp_path / "b.db", poolclass=sa.pool.NullPool))._lane
    await engine.dispose()


async def test_a_database_locked_by_another_writer_is_a_clear_error_that_loses_nothing(
        tmp_path: Path) -> None:
    """Another process's writer holds SQLite's write lock for longer than the caller's
    busy timeout: the saver's put fails with a lock timeout, its connection is not kept
    (nor its write lock held), and once the lock is free the same put goes through."""
    import sqlite3

    from relaygraph.checkpointers import DatabaseTimeoutError

    path = tmp_path / "app.db"
    engine = _engine(path, connect_args={"timeout": 0.05})
    saver = AsyncSQLAlchemySaver(engine)
    await saver.asetup()
    await _run(saver)
    tup = await saver.aget_tuple(CFG)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    checkpoint = {**tup.checkpoint, "id": "1f1f1f1f-0000-6000-8000-000000000001"}
    assert saver._lane is not None
    before = [fairy.driver_connection for _, fairy in saver._lane.kept._idle]
    try:
        with pytest.raises(DatabaseTimeoutError, match="lock"):
            await saver.aput(tup.config, checkpoint, tup.metadata, {})
        assert not saver._lane.write_lock.locked()
        # the connection the put failed on was closed, not handed back as it was
        assert any(c._connection is None for c in before)
    finally:
        other.execute("ROLLBACK")
        other.close()
    stored = await saver.aput(tup.config, checkpoint, tup.metadata, {})
    assert (await saver.aget_tuple(stored)).checkpoint["id"] == checkpoint["id"]
    await saver._lane.kept.close()
    assert engine.sync_engine.pool.checkedout() == 0
    await engine.dispose()


def test_a_later_event_loop_keeps_checkouts_once_the_first_has_ended(tmp_path: Path) -> None:
    engine = _engine(tmp_path / "app.db")
    saver = AsyncSQLAlchemySaver(engine)

    async def first() -> None:
        await saver.asetup()
        await _run(saver, "a")
        await saver._lane.kept.close()  # nothing kept when this loop ends

    async def second() -> int:
        await _run(saver, "b")
        kept = len(saver._lane.kept._idle)
        await saver._lane.kept.close()
        return kept

    asyncio.run(first())
    assert asyncio.run(second()) >= 1
    asyncio.run(engine.dispose())


def test_a_forked_child_forgets_the_parents_checkouts(tmp_path: Path) -> None:
    """aiosqlite's threads do not survive a fork: a child that follows SQLAlchemy's
    advice (``dispose(close=False)``) gets new connections, the saver's kept ones too."""
    import os
    import time

    engine = _engine(tmp_path / "app.db")
    saver = AsyncSQLAlchemySaver(engine)

    async def parent() -> None:
        await saver.asetup()
        await _run(saver, "a")

    asyncio.run(parent())
    assert saver._lane is not None and saver._lane.kept._idle  # kept when the loop ended
    pid = os.fork()
    if pid == 0:  # the child
        code = 1
        try:
            engine.sync_engine.dispose(close=False)

            async def child() -> bool:
                out = await asyncio.wait_for(_run(saver, "b"), 20)
                return out["count"] == 3

            code = 0 if asyncio.run(child()) else 2
        finally:
            os._exit(code)
    deadline = time.monotonic() + 30
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("the child hung on the parent's connections")
        time.sleep(0.05)
    assert os.waitstatus_to_exitcode(status) == 0
    asyncio.run(saver._lane.kept.close())
    asyncio.run(engine.dispose())


@pytest.mark.parametrize("setting", ["checkout listener", "pre-ping"])
async def test_a_pool_that_acts_at_every_checkout_gets_every_operation_back(
        tmp_path: Path, setting: str) -> None:
    """The application asked for something at every checkout (a listener, a ping):
    no checkout is kept, so it happens for every operation of the saver too."""
    engine = _engine(tmp_path / "app.db", pool_pre_ping=setting == "pre-ping")
    seen: list[object] = []
    if setting == "checkout listener":
        sa.event.listen(engine.sync_engine, "checkout", lambda *a: seen.append(a))
    saver = AsyncSQLAlchemySaver(engine)
    await saver.asetup()
    await _run(saver)
    assert saver._lane is not None and saver._lane.kept._idle == []
    assert engine.sync_engine.pool.checkedout() == 0
    if setting == "checkout listener":
        assert len(seen) >= 10  # every operation checked out on its own
    await engine.dispose()


async def test_a_kept_checkout_past_the_pools_recycle_age_goes_back(tmp_path: Path) -> None:
    engine = _engine(tmp_path / "app.db", pool_recycle=0.3)
    saver = AsyncSQLAlchemySaver(engine)
    await saver.asetup()
    await _run(saver)
    assert saver._lane is not None
    old = [c for c, _ in saver._lane.kept._idle]
    assert old
    await asyncio.sleep(0.5)  # within HOLD_IDLE, past pool_recycle
    await saver.aget_tuple(CFG)
    now = [c for c, _ in saver._lane.kept._idle]
    assert now and not set(map(id, now)) & set(map(id, old))
    await saver._lane.kept.close()
    await engine.dispose()
