"""The SQLite writer connection a saver keeps between its writes (``HeldWriter``).

Kept only while writes keep coming, only under the saver's write lock, never holding a
transaction between writes, and given back to the pool as it was lent: after a pause,
when the saver closes or goes away, after a failure.
"""

from __future__ import annotations

import contextlib
import gc
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from langchain_core.messages import HumanMessage

from relaygraph.checkpointers import AsyncSQLAlchemySaver, SQLAlchemySaver, _sync

from ._graphs import chat_graph
from .test_lite import _next_put


def _run(saver, thread: str = "t", steps: int = 3) -> dict:
    g = chat_graph(steps).compile(checkpointer=saver)
    return g.invoke({"messages": [HumanMessage("hi", id="h")], "count": 0},
                    {"configurable": {"thread_id": thread}})


def _count_checkouts(engine: sa.Engine) -> list[object]:
    """The saver's checkouts of ``engine``'s pool, counted without a pool listener (with
    one the saver keeps no connection: see the test below)."""
    seen: list[object] = []
    real = engine.raw_connection

    def counted() -> Any:
        seen.append(1)
        return real()

    engine.raw_connection = counted  # type: ignore[method-assign]
    return seen


@pytest.fixture
def quick_idle(monkeypatch):
    monkeypatch.setattr(_sync, "HOLD_IDLE", 0.2)


def _until(cond, timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


def test_writes_keep_one_connection_which_goes_back_after_a_pause(tmp_path: Path,
                                                                  quick_idle) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'app.db'}")
    saver = SQLAlchemySaver(engine)
    saver.setup()
    opened: list[object] = []
    sa.event.listen(engine, "connect", lambda c, r: opened.append(c))
    _run(saver, "a")
    _run(saver, "b")
    # every write of both runs went through the one kept connection: one connection was
    # opened for writes, and reads found theirs in the pool
    assert saver._writer is not None and saver._writer._conn is not None
    assert engine.pool.checkedout() == 1
    kept = saver._writer._conn.connection.dbapi_connection
    assert not kept.in_transaction  # nothing held between writes: others can write
    other = sqlite3.connect(engine.url.database, timeout=0)
    other.execute("CREATE TABLE app_own (x)")
    other.commit()
    other.close()
    assert _until(lambda: engine.pool.checkedout() == 0)
    assert saver._writer._conn is None
    # back in the pool as lent: at the caller's default level
    assert kept.execute("PRAGMA synchronous").fetchone()[0] == 2
    assert engine.pool.checkedin() == len(opened) + 1
    assert len(opened) <= 1  # (the kept one was opened before the listener)
    # and the next write takes one again
    _run(saver, "c")
    assert engine.pool.checkedout() == 1
    engine.dispose()


def test_the_kept_connection_writes_at_normal_and_the_callers_stay_at_full(
        tmp_path: Path, quick_idle) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'app.db'}")
    saver = SQLAlchemySaver(engine)
    saver.setup()
    seen: list[str] = []
    sa.event.listen(engine, "connect", lambda c, r: c.set_trace_callback(seen.append))
    engine.dispose()  # connections from here on are traced
    _run(saver, "a", steps=4)
    # NORMAL once for the kept connection, not around every write
    assert seen.count("PRAGMA synchronous=NORMAL") == 1
    assert seen.count("BEGIN IMMEDIATE") > 4
    with engine.connect() as c:  # the application's own connection meanwhile
        assert c.exec_driver_sql("PRAGMA synchronous").scalar() == 2
    assert _until(lambda: engine.pool.checkedout() == 0)
    assert seen[-1] == "PRAGMA synchronous=FULL"
    engine.dispose()


def test_a_failed_write_gives_the_kept_connection_back(tmp_path: Path) -> None:
    with SQLAlchemySaver.from_conn_string(f"sqlite:///{tmp_path / 'f.db'}") as saver:
        saver.setup()
        _run(saver, "a")
        assert saver.engine.pool.checkedout() == 1
        with saver.engine.begin() as c:
            c.exec_driver_sql("CREATE TRIGGER refuse BEFORE INSERT ON relaygraph_checkpoints "
                              "BEGIN SELECT RAISE(ABORT, 'refused by trigger'); END")
        parent, cp, versions = _next_put(saver, {"configurable": {"thread_id": "a"}})
        with pytest.raises(sa.exc.DBAPIError, match="refused by trigger"):
            saver.put(parent, cp, {"step": 9}, versions)
        assert saver._writer._conn is None
        assert saver.engine.pool.checkedout() == 0
        with saver.engine.begin() as c:
            c.exec_driver_sql("DROP TRIGGER refuse")
        saver.put(parent, cp, {"step": 9}, versions)  # and writes go on
        assert saver.engine.pool.checkedout() == 1
    assert saver.engine.pool.checkedout() == 0  # given back when the saver closed


def test_a_saver_that_goes_away_gives_its_connection_back(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'app.db'}")
    saver = SQLAlchemySaver(engine)
    saver.setup()
    _run(saver)
    assert engine.pool.checkedout() == 1
    del saver
    gc.collect()
    assert engine.pool.checkedout() == 0
    engine.dispose()


@pytest.mark.parametrize("kw", [{"poolclass": sa.pool.NullPool},
                                {"pool_size": 1, "max_overflow": 0}],
                         ids=["NullPool", "a pool of one"])
def test_pools_that_cannot_spare_a_connection_keep_none(tmp_path: Path, kw) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'app.db'}", **kw)
    saver = SQLAlchemySaver(engine)
    saver.setup()
    assert saver._writer is None
    out = _run(saver)
    assert [m.id for m in out["messages"]][0] == "h"
    if not isinstance(engine.pool, sa.pool.NullPool):
        assert engine.pool.checkedout() == 0
    engine.dispose()


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
def test_an_in_memory_database_is_one_database_for_every_thread(url: str) -> None:
    """From a URL, an in-memory database is one database on one shared connection, which
    LangGraph's threads take turns on; no writer is kept apart from it."""
    import concurrent.futures

    with SQLAlchemySaver.from_conn_string(url) as saver:
        saver.setup()
        assert saver._writer is None
        with concurrent.futures.ThreadPoolExecutor(6) as pool:  # a failure is raised here
            outs = list(pool.map(lambda i: _run(saver, f"m{i}", steps=4), range(6)))
        g = chat_graph(4).compile(checkpointer=saver)
        for i in range(6):
            state = g.get_state({"configurable": {"thread_id": f"m{i}"}})
            assert state.values == outs[i]
        assert len({c.config["configurable"]["thread_id"] for c in saver.list(None)}) == 6


def test_a_forked_child_does_not_write_on_its_parents_connection(tmp_path: Path,
                                                                 monkeypatch) -> None:
    with SQLAlchemySaver.from_conn_string(f"sqlite:///{tmp_path / 'f.db'}") as saver:
        saver.setup()
        _run(saver, "a")
        parents = saver._writer._conn
        assert parents is not None
        monkeypatch.setattr(_sync.os, "getpid", lambda: -1)  # as in a child after fork
        assert saver._writer.take() is None
        monkeypatch.undo()
        parents.close()


@contextlib.asynccontextmanager
async def _async_saver_after_a_run(path: Path) -> AsyncIterator[tuple[Any, dict]]:
    """An async saver on a SQLite file (its worker path), after a 4-step run of ``w``."""
    async with AsyncSQLAlchemySaver.from_conn_string(f"sqlite+aiosqlite:///{path}") as s:
        await s.asetup()
        g = chat_graph(4).compile(checkpointer=s)
        out = await g.ainvoke({"messages": [HumanMessage("hi", id="h")], "count": 0},
                              {"configurable": {"thread_id": "w"}})
        assert s._worker is not None and s._worker.writer is not None
        yield s, out


async def test_the_async_saver_keeps_its_worker_connection(tmp_path: Path) -> None:
    async with _async_saver_after_a_run(tmp_path / "w.db") as (s, _):
        pool = s._worker.engine.pool
        assert pool.checkedout() == 1
    assert pool.checkedout() == 0


def test_get_tuple_reads_on_the_kept_connection_unless_a_write_holds_it(
        tmp_path: Path) -> None:
    """A thread's checkpoint is read on the writer's connection while it is idle (its
    pages are warm), and on a pool connection, without waiting, while a write holds it."""
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'app.db'}")
    saver = SQLAlchemySaver(engine)
    saver.setup()
    out = _run(saver, "a")
    assert saver._writer is not None and saver._writer._conn is not None
    kept = saver._writer._conn
    checkouts = _count_checkouts(engine)
    cfg = {"configurable": {"thread_id": "a"}}
    tup = saver.get_tuple(cfg)
    assert tup is not None and tup.checkpoint["channel_values"]["count"] == out["count"]
    assert saver.get_tuple({"configurable": {"thread_id": "nobody"}}) is None
    assert checkouts == [] and saver._writer._conn is kept  # no pool connection taken
    assert not kept.connection.dbapi_connection.in_transaction

    saver._write_lock.acquire()  # a write under way
    try:
        t0 = time.monotonic()
        tup = saver.get_tuple(cfg)
        assert time.monotonic() - t0 < 5  # did not wait for the write
    finally:
        saver._write_lock.release()
    assert tup is not None and tup.checkpoint["channel_values"]["count"] == out["count"]
    assert len(checkouts) == 1  # read on a pool connection
    # list() and history, which may read many rows, never hold up writes: the pool's
    n = len(list(saver.list(cfg)))
    assert n > 1 and len(checkouts) >= 2
    engine.dispose()


async def test_async_get_tuple_reads_on_the_workers_kept_connection(tmp_path: Path) -> None:
    async with _async_saver_after_a_run(tmp_path / "a.db") as (s, out):
        kept = s._worker.writer._conn
        assert kept is not None
        checkouts = _count_checkouts(s._worker.engine)
        tup = await s.aget_tuple({"configurable": {"thread_id": "w"}})
        assert tup is not None and tup.checkpoint["channel_values"]["count"] == out["count"]
        assert checkouts == [] and s._worker.writer._conn is kept
        assert [t async for t in s.alist({"configurable": {"thread_id": "w"}})]
        assert len(checkouts) >= 1  # list() reads on the pool


@pytest.mark.parametrize("setting", ["checkout listener", "reset listener", "pre-ping"])
def test_nothing_is_kept_from_a_pool_that_acts_at_every_checkout(tmp_path: Path,
                                                                setting: str) -> None:
    """The application asked for something at every checkout or return: the saver's
    writes check out and return their connection each time, so it happens for them too."""
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'app.db'}",
                              pool_pre_ping=setting == "pre-ping")
    seen: list[object] = []
    if setting != "pre-ping":
        sa.event.listen(engine, setting.split()[0], lambda *a: seen.append(a))
    saver = SQLAlchemySaver(engine)
    saver.setup()
    _run(saver, "a")
    assert saver._writer is not None and saver._writer._conn is None
    assert engine.pool.checkedout() == 0
    if setting != "pre-ping":
        assert len(seen) >= 10
    engine.dispose()


def test_a_listener_added_later_applies_from_the_next_connection(tmp_path: Path) -> None:
    """Whether the pool acts at every checkout is asked when a connection is first kept:
    a listener the application adds while the writer keeps one applies once that one
    has gone back (after a pause in the writes)."""
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'app.db'}")
    saver = SQLAlchemySaver(engine)
    saver.setup()
    _run(saver, "a")
    assert saver._writer is not None and saver._writer._conn is not None
    seen: list[object] = []

    def on_checkout(*a: Any) -> None:
        seen.append(a)

    sa.event.listen(engine, "checkout", on_checkout)
    saver._writer.release()  # the pause
    _run(saver, "b")
    assert saver._writer._conn is None and len(seen) >= 5
    sa.event.remove(engine, "checkout", on_checkout)
    _run(saver, "c")
    assert saver._writer._conn is not None
    saver._writer.release()
    engine.dispose()
