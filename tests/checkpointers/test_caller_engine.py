"""A saver on the caller's own SQLite engine: the persistent settings setup() applies, and
the caller's connections handed back exactly as they were lent."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa
from langchain_core.messages import HumanMessage
from sqlalchemy.ext.asyncio import create_async_engine
from tests.checkpointers._graphs import chat_graph as _chat

from relaygraph.checkpointers import AsyncSQLAlchemySaver, SQLAlchemySaver
from relaygraph.checkpointers._direct import _SYNC_KEY


def chat_graph(saver):
    return _chat(steps=3).compile(checkpointer=saver)


def _journal_mode(path: Path) -> str:
    con = sqlite3.connect(path)
    try:
        return con.execute("PRAGMA journal_mode").fetchone()[0]
    finally:
        con.close()


def _one_connection_engine(path: Path, **kw) -> sa.Engine:
    """The caller's engine, with one pooled connection that the saver and the caller
    take turns on (so whatever the saver leaves on it, the caller sees)."""
    return sa.create_engine(f"sqlite:///{path}", pool_size=1, max_overflow=0, **kw)


def test_setup_puts_a_callers_file_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    engine = sa.create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:  # the application's own table, in rollback-journal mode
        conn.exec_driver_sql("CREATE TABLE orders (id INTEGER PRIMARY KEY)")
    assert _journal_mode(path) == "delete"
    SQLAlchemySaver(engine).setup()
    assert _journal_mode(path) == "wal"  # stored in the file: every connection, every process
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    engine.dispose()


async def test_asetup_puts_a_callers_file_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    engine = create_async_engine(f"sqlite+aiosqlite:///{path}")
    await AsyncSQLAlchemySaver(engine).asetup()
    await engine.dispose()
    assert _journal_mode(path) == "wal"


def test_setup_leaves_an_in_memory_database_alone() -> None:
    engine = sa.create_engine("sqlite://", poolclass=sa.pool.StaticPool,
                              connect_args={"check_same_thread": False})
    saver = SQLAlchemySaver(engine)
    saver.setup()
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "memory"
    graph = chat_graph(saver)
    cfg = {"configurable": {"thread_id": "t"}}
    graph.invoke({"messages": [HumanMessage("hi", id="h")]}, cfg)
    assert graph.get_state(cfg).values["messages"][0].content == "hi"
    engine.dispose()


def test_the_engine_object_is_not_changed(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'app.db'}")
    pool = engine.pool
    listeners = len(pool.dispatch.connect) + len(pool.dispatch.checkout)
    saver = SQLAlchemySaver(engine)
    saver.setup()
    chat_graph(saver).invoke({"messages": [HumanMessage("hi", id="h")]},
                             {"configurable": {"thread_id": "t"}})
    assert engine.pool is pool
    assert len(pool.dispatch.connect) + len(pool.dispatch.checkout) == listeners
    engine.dispose()


def _traced(path: Path, **kw) -> tuple[sa.Engine, list[str]]:
    """A one-connection engine whose sqlite3 connection records every statement."""
    engine = _one_connection_engine(path, **kw)
    seen: list[str] = []

    @sa.event.listens_for(engine, "connect")
    def _trace(dbapi_conn, _record) -> None:
        dbapi_conn.set_trace_callback(seen.append)

    return engine, seen


def assert_relaxed_for_the_saver_only(seen: list[str]) -> None:
    """In a trace of a caller's connection: each write transaction of the saver ran at
    ``synchronous=NORMAL`` and the caller's ``FULL`` came back after its commit."""
    begins = [i for i, s in enumerate(seen) if s == "BEGIN IMMEDIATE"]
    assert begins, seen
    for i in begins:
        assert seen[i - 1] == "PRAGMA synchronous=NORMAL"
        after = seen[i:].index("PRAGMA synchronous=FULL")
        assert "COMMIT" in seen[i:i + after]


def test_the_savers_commits_skip_the_fsync_and_the_callers_do_not(tmp_path: Path) -> None:
    engine, seen = _traced(tmp_path / "app.db")
    saver = SQLAlchemySaver(engine)
    saver.setup()
    with engine.connect() as conn:  # the default level, which the caller keeps
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2
    seen.clear()
    chat_graph(saver).invoke({"messages": [HumanMessage("hi", id="h")]},
                             {"configurable": {"thread_id": "t"}})
    assert_relaxed_for_the_saver_only(seen)
    with engine.connect() as conn:  # the same pooled connection, as the caller left it
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    engine.dispose()


def test_a_level_the_caller_chose_is_kept(tmp_path: Path) -> None:
    engine, seen = _traced(tmp_path / "app.db")

    @sa.event.listens_for(engine, "connect")
    def _extra(dbapi_conn, _record) -> None:
        dbapi_conn.execute("PRAGMA synchronous=EXTRA")

    saver = SQLAlchemySaver(engine)
    saver.setup()
    chat_graph(saver).invoke({"messages": [HumanMessage("hi", id="h")]},
                             {"configurable": {"thread_id": "t"}})
    assert "BEGIN IMMEDIATE" in seen
    assert not [s for s in seen if s.startswith("PRAGMA synchronous=")
                and s != "PRAGMA synchronous=EXTRA"]
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 3
    engine.dispose()


def test_a_failed_write_still_gives_the_connection_back_as_it_was(tmp_path: Path) -> None:
    engine = _one_connection_engine(tmp_path / "app.db")
    saver = SQLAlchemySaver(engine)
    saver.setup()

    def failing():
        yield saver._op_schema_version().__next__()  # one statement in the transaction
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        saver._run(failing, write=True)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2
        raw = conn.connection.dbapi_connection
        assert raw is not None and not raw.in_transaction
        assert conn.connection.info[_SYNC_KEY] == "FULL"
    engine.dispose()


def test_before_setup_a_rollback_journal_file_is_left_alone(tmp_path: Path) -> None:
    """A saver on a file someone else set up (tables present, journal mode not WAL) works,
    and does not relax the caller's commits in rollback-journal mode, where NORMAL could
    corrupt the file on a power loss."""
    path = tmp_path / "app.db"
    other = sa.create_engine(f"sqlite:///{path}")
    SQLAlchemySaver(other).setup()
    other.dispose()
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=DELETE")
    con.close()
    engine, seen = _traced(path)
    saver = SQLAlchemySaver(engine)  # no setup() here
    chat_graph(saver).invoke({"messages": [HumanMessage("hi", id="h")]},
                             {"configurable": {"thread_id": "t"}})
    assert "BEGIN IMMEDIATE" in seen
    assert not [s for s in seen if s.startswith("PRAGMA synchronous=")]
    assert _journal_mode(path) == "delete"
    engine.dispose()


def test_same_states_through_both_constructors(tmp_path: Path) -> None:
    states = []
    for name in ("url", "engine"):
        url = f"sqlite:///{tmp_path / name}.db"
        cfg = {"configurable": {"thread_id": "t"}}
        if name == "url":
            with SQLAlchemySaver.from_conn_string(url) as s:
                s.setup()
                g = chat_graph(s)
                for i in range(3):
                    g.invoke({"messages": [HumanMessage(f"m{i}", id=f"m{i}")]}, cfg)
                states.append([c.checkpoint["channel_values"] for c in s.list(cfg)])
        else:
            engine = sa.create_engine(url)
            s = SQLAlchemySaver(engine)
            s.setup()
            g = chat_graph(s)
            for i in range(3):
                g.invoke({"messages": [HumanMessage(f"m{i}", id=f"m{i}")]}, cfg)
            states.append([c.checkpoint["channel_values"] for c in s.list(cfg)])
            engine.dispose()
    assert states[0] == states[1]
    assert len(states[0]) >= 6


def test_a_callers_postgres_connections_come_back_transactional(pg_backend) -> None:
    """On a caller's transactional psycopg engine the saver's autocommitted work flips
    psycopg's own flag for its operation only: the caller's next checkout of the very
    same connection is transactional again, and its transactions still roll back."""
    engine = sa.create_engine(pg_backend.url, pool_size=1, max_overflow=0)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE orders (id int PRIMARY KEY)")
    saver = SQLAlchemySaver(engine)
    saver.setup()
    assert saver._switched is saver._reader  # the bare checkout, not SQLAlchemy's switch
    flips: list[bool] = []
    real = saver._run_once

    def spy(op, **kw):
        result = real(op, **kw)
        with engine.connect() as c:  # the pool's only connection, just handed back
            flips.append(c.connection.dbapi_connection.autocommit)
        return result

    saver._run_once = spy
    graph = chat_graph(saver)
    cfg = {"configurable": {"thread_id": "t"}}
    graph.invoke({"messages": [HumanMessage("hi", id="h")]}, cfg)
    assert graph.get_state(cfg).values["messages"][0].content == "hi"
    assert flips and not any(flips)
    with engine.connect() as conn:
        conn.exec_driver_sql("INSERT INTO orders VALUES (1)")
        conn.rollback()  # the caller's own work is still a transaction
        assert conn.exec_driver_sql("SELECT count(*) FROM orders").scalar() == 0
        assert conn.exec_driver_sql("SHOW transaction_isolation").scalar() == "read committed"
    engine.dispose()


async def test_a_callers_async_postgres_connections_come_back_transactional(pg_backend) -> None:
    """The same on a caller's async psycopg engine (``_aio.AutocommitCheckout``): every
    operation of the saver leaves the pool's connection as it found it, a statement the
    cached path cannot run goes through SQLAlchemy on the same checkout, and the caller's
    pool events still run at every checkout."""
    engine = create_async_engine(pg_backend.async_url, pool_size=1, max_overflow=0)
    async with engine.begin() as conn:
        await conn.exec_driver_sql("CREATE TABLE orders (id int PRIMARY KEY)")
    checkouts: list[object] = []
    sa.event.listen(engine.sync_engine, "checkout", lambda *a: checkouts.append(a[0]))
    saver = AsyncSQLAlchemySaver(engine)
    await saver.asetup()
    assert saver._switched is saver._reader  # the bare checkout, not SQLAlchemy's switch
    flips: list[bool] = []
    real = saver._run_once

    async def spy(op, **kw):
        result = await real(op, **kw)
        async with engine.connect() as c:  # the pool's only connection, just handed back
            raw = (await c.get_raw_connection()).driver_connection
            flips.append(raw.autocommit)
        return result

    saver._run_once = spy
    graph = _chat(steps=3).compile(checkpointer=saver)
    cfg = {"configurable": {"thread_id": "t"}}
    before = len(checkouts)
    await graph.ainvoke({"messages": [HumanMessage("hi", id="h")]}, cfg)
    assert (await graph.aget_state(cfg)).values["messages"][0].content == "hi"
    assert flips and not any(flips)
    assert len(checkouts) - before >= 2 * len(flips)  # the saver's and the spy's own
    # list() runs statements built per call (through SQLAlchemy, on the same checkout)
    assert len([t async for t in saver.alist(cfg)]) == len(
        [s async for s in graph.aget_state_history(cfg)]) >= 4
    async with engine.connect() as conn:
        await conn.exec_driver_sql("INSERT INTO orders VALUES (1)")
        await conn.rollback()  # the caller's own work is still a transaction
        assert (await conn.exec_driver_sql("SELECT count(*) FROM orders")).scalar() == 0
    assert engine.sync_engine.pool.checkedout() == 0
    await engine.dispose()


async def test_a_callers_async_postgres_connection_killed_under_the_saver_is_replaced(
        pg_backend, monkeypatch) -> None:
    """A backend ended by the server (a restart, an idle timeout) fails the saver's next
    operation on that connection; the connection is invalidated rather than handed back,
    and the retry runs on a new one."""
    from .test_held import _kill_other_connections

    engine = create_async_engine(pg_backend.async_url, pool_size=2, max_overflow=0)
    saver = AsyncSQLAlchemySaver(engine)
    await saver.asetup()
    graph = _chat(steps=3).compile(checkpointer=saver)
    cfg = {"configurable": {"thread_id": "t"}}
    await graph.ainvoke({"messages": [HumanMessage("hi", id="h")]}, cfg)
    assert _kill_other_connections(pg_backend.url) >= 1  # the pool's idle connections
    from relaygraph.checkpointers import _aio

    retried: list[object] = []
    real_first_retry = _aio._first_retry
    monkeypatch.setattr(_aio, "_first_retry", lambda t: retried.append(real_first_retry(t)))
    state = await graph.aget_state(cfg)
    assert retried  # the read met a dead connection and ran again
    assert state.values["messages"][0].content == "hi"
    await graph.ainvoke({"messages": [HumanMessage("again", id="h2")]}, cfg)
    assert [m.content for m in (await graph.aget_state(cfg)).values["messages"]][-4] == "again"
    # what the saver keeps between operations (one, of a pool of two) is alive
    assert saver._kept is not None
    assert engine.sync_engine.pool.checkedout() == len(saver._kept._idle) <= 1
    assert all(h.fairy.is_valid and h.fairy.driver_connection.pgconn.status == 0
               for h in saver._kept._idle)
    await engine.dispose()
