"""Checkouts of a caller's async PostgreSQL pool (transactional or autocommitted), kept
between the async saver's operations (``_aio.CallerAutocommit``).

Kept in autocommit and outside any transaction, at most two, only while the pool has
more to lend, and given back as they were lent (autocommit off): after a pause, after a
failure, at once when the application disposes of its engine, and when the event loop
ends. A loop closed without ending its async generators leaves them to the next loop,
which closes them instead of using them.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import sqlalchemy as sa
from langchain_core.messages import HumanMessage
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from relaygraph.checkpointers import AsyncSQLAlchemySaver, _aiokept
from relaygraph.checkpointers._aio import CallerAutocommit

from ._graphs import chat_graph
from .test_caller_kept import _sessions
from .test_held import _kill_other_connections


async def _arun(saver: AsyncSQLAlchemySaver, thread: str = "t", steps: int = 3) -> dict:
    g = chat_graph(steps).compile(checkpointer=saver)
    return await g.ainvoke({"messages": [HumanMessage("hi", id="h")], "count": 0},
                           {"configurable": {"thread_id": thread}})


def _pool(engine: AsyncEngine) -> Any:
    return engine.sync_engine.pool


async def _until(cond: Any, within: float = 5.0) -> bool:
    loop = asyncio.get_running_loop()
    end = loop.time() + within
    while loop.time() < end:
        if cond():
            return True
        await asyncio.sleep(0.02)
    return bool(cond())


def _settles(url: str, n: int = 0, within: float = 5.0) -> bool:
    """``url`` comes down to ``n`` server sessions: a backend whose client has closed its
    connection may still show in ``pg_stat_activity`` for a moment."""
    end = time.monotonic() + within
    while _sessions(url) != n:
        if time.monotonic() > end:
            return False
        time.sleep(0.02)
    return True


def _count_opens(saver: AsyncSQLAlchemySaver) -> list[object]:
    """The checkouts the saver takes of its caller's pool."""
    kept = saver._kept
    assert kept is not None
    seen: list[object] = []
    real = kept.open

    async def counted() -> Any:
        seen.append(1)
        return await real()

    kept.open = counted  # type: ignore[method-assign]
    return seen


@pytest.fixture
def quick_idle(monkeypatch):
    monkeypatch.setattr(_aiokept, "HOLD_IDLE", 0.2)


@pytest.fixture(params=["transactional", "autocommit"])
async def any_engine(request, pg_backend) -> AsyncIterator[AsyncEngine]:
    """A caller's async engine, transactional (the default) or autocommitted."""
    kw = {"isolation_level": "AUTOCOMMIT"} if request.param == "autocommit" else {}
    e = create_async_engine(pg_backend.async_url, **kw)
    yield e
    await e.dispose()


@pytest.fixture
async def engine(pg_backend) -> AsyncIterator[AsyncEngine]:
    e = create_async_engine(pg_backend.async_url)
    yield e
    await e.dispose()


async def test_operations_reuse_kept_checkouts(any_engine) -> None:
    saver = AsyncSQLAlchemySaver(any_engine)
    await saver.asetup()
    assert isinstance(saver._kept, CallerAutocommit)
    await _arun(saver, "warm")
    opens = _count_opens(saver)
    ops: list[int] = []
    real = saver._run_once

    async def counted(*a: Any, **kw: Any) -> Any:
        ops.append(1)
        return await real(*a, **kw)

    saver._run_once = counted  # type: ignore[method-assign]
    outs = [await _arun(saver, f"t{i}", steps=4) for i in range(4)]
    # tens of operations, a few checkouts (a put and a task's writes run side by side)
    assert len(ops) >= 30
    assert len(opens) <= len(ops) // 4
    assert _pool(any_engine).checkedout() <= 2
    for held in saver._kept._idle:  # type: ignore[union-attr]
        raw: Any = held.fairy.driver_connection
        assert raw.autocommit and raw.info.transaction_status == 0  # idle: no locks
    snap = await chat_graph(4).compile(checkpointer=saver).aget_state(
        {"configurable": {"thread_id": "t3"}})
    assert snap.values["count"] == outs[3]["count"]
    assert [m.id for m in snap.values["messages"]] == [m.id for m in outs[3]["messages"]]


async def test_kept_checkouts_go_back_as_lent_after_a_pause(engine, quick_idle) -> None:
    saver = AsyncSQLAlchemySaver(engine)
    await saver.asetup()
    await _arun(saver, "a")
    assert _pool(engine).checkedout() >= 1
    assert await _until(lambda: _pool(engine).checkedout() == 0)
    assert saver._kept._idle == []  # type: ignore[union-attr]
    # what the application checks out is transactional again
    async with engine.connect() as c:
        raw: Any = (await c.get_raw_connection()).driver_connection
        assert raw.autocommit is False
        await c.execute(sa.text("CREATE TABLE app_own (x int)"))
        await c.rollback()
    async with engine.connect() as c:
        assert (await c.execute(sa.text("SELECT to_regclass('app_own')"))).scalar() is None
    await _arun(saver, "b")  # and the next operation keeps some again
    assert _pool(engine).checkedout() >= 1


async def test_disposing_the_engine_ends_the_kept_sessions(pg_backend) -> None:
    engine = create_async_engine(pg_backend.async_url)
    saver = AsyncSQLAlchemySaver(engine)
    await saver.asetup()
    await _arun(saver, "a")
    assert _pool(engine).checkedout() >= 1
    async with engine.connect() as c:  # the application's own work: a connection pooled
        await c.execute(sa.text("SELECT 1"))
    # a listener on the pool, not on the engine (that would switch on SQLAlchemy's event
    # dispatch for every statement the application runs)
    assert engine.sync_engine._has_events is False
    await engine.dispose()
    # nothing of the saver's is left on the server (a DROP DATABASE would work now);
    # a backend whose client has closed may show in pg_stat_activity a moment longer
    assert _settles(pg_backend.url)
    await _arun(saver, "b")  # and the saver goes on with the engine's new pool
    assert await saver.aget_tuple({"configurable": {"thread_id": "a"}}) is not None
    async with engine.connect() as c:  # (a pool holding nothing else: the test below)
        await c.execute(sa.text("SELECT 1"))
    await engine.dispose()
    assert _settles(pg_backend.url)


async def test_a_dispose_with_nothing_in_the_pool_ends_them_soon_after(
        pg_backend, quick_idle) -> None:
    engine = create_async_engine(pg_backend.async_url)
    saver = AsyncSQLAlchemySaver(engine)
    await saver.asetup()
    await engine.dispose()  # setup's connection is closed: the pool holds none
    cfg = {"configurable": {"thread_id": "t"}}
    await saver.aget_tuple(cfg)  # one operation: its checkout is kept, none is pooled
    assert _pool(engine).checkedout() == 1 and _pool(engine).checkedin() == 0
    await engine.dispose()  # nothing in the pool to close: no event reaches the saver
    # the next operation finds the old pool's checkout: its session is ended, not handed
    # back open to a pool nothing will close again
    await saver.aget_tuple(cfg)
    assert _settles(pg_backend.url, 1)  # the new pool's, now kept
    await engine.dispose()
    # and without a next operation the timer ends it after the pause (the wait is async:
    # the loop runs the timer)
    assert await _until(lambda: _sessions(pg_backend.url) == 0)


def test_two_kept_across_a_dispose_that_closed_nothing_end_with_the_loop(pg_backend) -> None:
    engine = create_async_engine(pg_backend.async_url)
    saver = AsyncSQLAlchemySaver(engine)

    async def work() -> None:
        await saver.asetup()
        await engine.dispose()  # the pool holds nothing
        kept = saver._kept
        assert kept is not None
        a, b = await kept.acquire(), await kept.acquire()  # as two operations side by side
        await kept.release(a, True)
        await kept.release(b, True)
        assert len(kept._idle) == 2 and _pool(engine).checkedin() == 0
        await engine.dispose()  # closes nothing, so no event
        assert _sessions(pg_backend.url) == 2

    asyncio.run(work())
    # the loop's end closed both (invalidating the first closes a connection of the old
    # pool, whose event must not hand the second back open to that pool)
    gc.collect()
    assert _settles(pg_backend.url)


def test_the_loops_end_gives_them_back(pg_backend) -> None:
    engine = create_async_engine(pg_backend.async_url)
    saver = AsyncSQLAlchemySaver(engine)
    kept: list[int] = []

    async def work(thread: str) -> None:
        await saver.asetup()
        await _arun(saver, thread)
        kept.append(_pool(engine).checkedout())

    asyncio.run(work("a"))
    assert kept[0] >= 1
    # the loop ended: they were given back (not left to the collector, which SQLAlchemy
    # reports, and warnings fail this suite), autocommit off
    gc.collect()
    assert _pool(engine).checkedout() == 0
    assert _pool(engine).checkedin() >= 1
    asyncio.run(work("b"))  # a later loop keeps its own
    assert kept[1] >= 1
    asyncio.run(engine.dispose())
    assert _settles(pg_backend.url)


def test_a_loop_closed_without_ending_its_generators_leaves_them_closed(pg_backend) -> None:
    engine = create_async_engine(pg_backend.async_url)
    saver = AsyncSQLAlchemySaver(engine)
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(saver.asetup())
        loop.run_until_complete(_arun(saver, "a"))
        left = list(saver._kept._idle)  # type: ignore[union-attr]
        assert left
    finally:
        loop.close()  # no shutdown_asyncgens(): the kept checkouts outlive the loop

    async def later() -> None:
        cfg = {"configurable": {"thread_id": "a"}}
        assert await saver.aget_tuple(cfg) is not None
        # the old loop's checkouts were closed, not used by this one
        assert all(held.fairy.dbapi_connection is None for held in left)
        assert not any(held in saver._kept._idle for held in left)  # type: ignore[union-attr]
        await engine.dispose()

    asyncio.run(later())
    gc.collect()
    assert _settles(pg_backend.url)


@pytest.mark.parametrize("kwargs", [{"pool_pre_ping": True}, {"pool_size": 1},
                                    {"poolclass": sa.pool.NullPool}])
async def test_pools_that_cannot_spare_one_or_act_on_each_checkout_keep_nothing(
        pg_backend, kwargs: dict[str, Any]) -> None:
    engine = create_async_engine(pg_backend.async_url, **kwargs)
    try:
        saver = AsyncSQLAlchemySaver(engine)
        await saver.asetup()
        await _arun(saver, "a")
        if "pool_pre_ping" in kwargs:
            assert _pool(engine).checkedout() == 0
        else:  # no pool to keep from
            assert saver._kept is None
        assert await saver.aget_tuple({"configurable": {"thread_id": "a"}}) is not None
    finally:
        await engine.dispose()


async def test_a_checkout_listener_keeps_nothing(engine) -> None:
    seen: list[object] = []
    sa.event.listen(engine.sync_engine, "checkout", lambda *a: seen.append(1))
    saver = AsyncSQLAlchemySaver(engine)
    await saver.asetup()
    await _arun(saver, "a")
    assert _pool(engine).checkedout() == 0
    assert len(seen) >= 10  # every operation went through the application's listener


async def test_a_checkout_killed_while_kept_is_replaced(engine, pg_backend) -> None:
    saver = AsyncSQLAlchemySaver(engine)
    await saver.asetup()
    await _arun(saver, "a")
    assert _kill_other_connections(pg_backend.url) >= 1
    # the next operations find the kept checkouts dead, are retried on fresh ones, and
    # nothing dead is kept
    await _arun(saver, "b")
    assert await saver.aget_tuple({"configurable": {"thread_id": "b"}}) is not None
    for held in saver._kept._idle:  # type: ignore[union-attr]
        assert held.fairy.is_valid
        assert held.fairy.driver_connection.pgconn.status == 0


async def test_a_saver_dropped_while_the_loop_runs_gives_them_back(engine,
                                                                   quick_idle) -> None:
    saver = AsyncSQLAlchemySaver(engine)
    await saver.asetup()
    await _arun(saver, "a")
    assert _pool(engine).checkedout() >= 1
    del saver
    gc.collect()
    assert await _until(lambda: _pool(engine).checkedout() == 0)
    assert _pool(engine).checkedin() >= 1


async def test_from_a_url_its_own_pools_are_held_instead(pg_backend) -> None:
    async with AsyncSQLAlchemySaver.from_conn_string(pg_backend.url) as saver:
        assert saver._kept is None
        await saver.asetup()
        await _arun(saver, "a")
