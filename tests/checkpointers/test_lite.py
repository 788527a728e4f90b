"""SQLite operations on the pooled sqlite3 connection itself (``LiteConnection``).

Same rows as through SQLAlchemy's Connection, one transaction per write, the same error
types, and nothing left behind by an operation that failed.
"""

from __future__ import annotations

import sqlite3
import threading

import pytest
import sqlalchemy as sa
from langchain_core.messages import AIMessage, HumanMessage

from relaygraph.checkpointers import DatabaseUnavailableError, SQLAlchemySaver
from relaygraph.checkpointers._direct import LiteConnection

from ._graphs import chat_graph


@pytest.fixture
def saver(tmp_path):
    with SQLAlchemySaver.from_conn_string(f"sqlite:///{tmp_path}/lite.db") as s:
        s.setup()
        assert s._lite is not None
        yield s


def _kept(writer) -> int:
    """1 while the saver keeps its writer connection checked out (see ``HeldWriter``)."""
    return int(writer is not None and writer._conn is not None)


def _lent(saver: SQLAlchemySaver) -> int:
    """Connections checked out of the saver's pool besides its kept writer."""
    return saver.engine.pool.checkedout() - _kept(saver._writer)


def _rows(saver: SQLAlchemySaver, table: str) -> int:
    with saver.engine.connect() as c:
        return int(c.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar_one())


def _next_put(saver: SQLAlchemySaver, cfg: dict) -> tuple[dict, dict, dict]:
    head = saver.get_tuple(cfg)
    cp = dict(head.checkpoint)
    v = saver.get_next_version(max(cp["channel_versions"].values()))
    cp["id"] = "ffffffff-ffff-6fff-bfff-ffffffffffff"  # sorts after every id LangGraph makes
    cp["channel_values"] = {**cp["channel_values"], "messages": [
        *cp["channel_values"]["messages"], AIMessage("x" * 200, id="extra")]}
    cp["channel_versions"] = {**cp["channel_versions"], "messages": v}
    return head.config, cp, {"messages": v}


def test_operations_skip_sqlalchemys_connection(saver, monkeypatch) -> None:
    """Puts, writes and get_tuple run on the driver connection; the graph reads back intact.

    Statements built per call (the saver's one-time schema check, list()'s page query)
    run through a Connection made on the same checkout."""
    cfg = {"configurable": {"thread_id": "lite"}}
    assert saver.get_tuple(cfg) is None
    built: list[object] = []
    real = sa.Connection.__init__

    def spy(self, *a, **kw):
        built.append(self)
        real(self, *a, **kw)

    monkeypatch.setattr(sa.Connection, "__init__", spy)
    g = chat_graph(6).compile(checkpointer=saver)
    out = g.invoke({"messages": [HumanMessage("hi", id="h")], "count": 0}, cfg)
    assert built == []
    assert g.get_state(cfg).values["messages"] == out["messages"]
    assert built == []
    history = list(g.get_state_history(cfg))
    assert len(list(saver.list(cfg))) == len(history) == 8
    assert history[0].values["messages"] == out["messages"]
    assert _lent(saver) == 0


def test_a_statement_built_per_call_gets_a_connection_on_the_same_checkout(saver) -> None:
    """delete_for_runs needs an expanding IN list: SQLAlchemy runs it, in the same
    transaction, and the connection goes back to the pool once."""
    g = chat_graph(2).compile(checkpointer=saver)
    for i in range(2):
        g.invoke({"messages": [HumanMessage("hi", id=f"h{i}")], "count": 0},
                 {"configurable": {"thread_id": f"r{i}", "run_id": f"run-{i}"}})
    saver.delete_for_runs(["run-0"])
    assert saver.get_tuple({"configurable": {"thread_id": "r0"}}) is None
    assert saver.get_tuple({"configurable": {"thread_id": "r1"}}) is not None
    assert _lent(saver) == 0


def test_a_failed_put_leaves_nothing_and_releases_the_write_lock(saver) -> None:
    """A put whose checkpoint row is refused rolls back its frames, raises SQLAlchemy's
    error, and leaves the database writable for the next put and for other connections."""
    g = chat_graph(2).compile(checkpointer=saver)
    cfg = {"configurable": {"thread_id": "fail"}}
    g.invoke({"messages": [HumanMessage("hi", id="h")], "count": 0}, cfg)
    frames, ckpts = _rows(saver, "relaygraph_blobs"), _rows(saver, "relaygraph_checkpoints")
    with saver.engine.begin() as c:
        c.exec_driver_sql("CREATE TRIGGER refuse BEFORE INSERT ON relaygraph_checkpoints "
                          "BEGIN SELECT RAISE(ABORT, 'refused by trigger'); END")
    parent, cp, versions = _next_put(saver, cfg)
    with pytest.raises(sa.exc.DBAPIError, match="refused by trigger"):
        saver.put(parent, cp, {"step": 9}, versions)
    assert (_rows(saver, "relaygraph_blobs"), _rows(saver, "relaygraph_checkpoints")) == (
        frames, ckpts)
    assert _lent(saver) == 0
    # another connection can write at once: no transaction was left open
    other = sqlite3.connect(saver.engine.url.database, timeout=0)
    other.execute("DROP TRIGGER refuse")
    other.commit()
    other.close()
    saver.put(parent, cp, {"step": 9}, versions)
    got = saver.get_tuple(cfg)
    assert got.checkpoint["channel_values"]["messages"][-1].id == "extra"


def test_writes_from_many_threads_each_commit(saver) -> None:
    g = chat_graph(3).compile(checkpointer=saver)

    def run(i: int) -> None:
        g.invoke({"messages": [HumanMessage("hi", id=f"h{i}")], "count": 0},
                 {"configurable": {"thread_id": f"t{i}"}})

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(8):
        state = g.get_state({"configurable": {"thread_id": f"t{i}"}})
        assert [m.id for m in state.values["messages"]][0] == f"h{i}"
        assert state.values["count"] == 3
    assert _lent(saver) == 0


def test_a_database_that_cannot_be_opened_is_a_clear_error(tmp_path) -> None:
    missing = tmp_path / "no" / "such" / "dir" / "x.db"
    with SQLAlchemySaver.from_conn_string(f"sqlite:///{missing}") as s:
        with pytest.raises(DatabaseUnavailableError, match="unable to open"):
            s.get_tuple({"configurable": {"thread_id": "t"}})


def test_a_commit_that_fails_is_raised_and_rolled_back(tmp_path) -> None:
    """On an engine that does not reset connections it hands back, the saver still rolls
    back what did not commit: a connection never goes back holding SQLite's write lock."""
    engine = sa.create_engine(f"sqlite:///{tmp_path}/noreset.db", pool_reset_on_return=None)
    saver = SQLAlchemySaver(engine)
    saver.setup()

    class Refusing:
        """A driver connection whose COMMIT fails (a full disk, an I/O error)."""

        def __init__(self, raw: sqlite3.Connection) -> None:
            self.raw = raw
            self.rollbacks = 0

        @property
        def in_transaction(self) -> bool:
            return self.raw.in_transaction

        def commit(self) -> None:
            raise sqlite3.OperationalError("disk I/O error")

        def rollback(self) -> None:
            self.rollbacks += 1
            self.raw.rollback()

    conn = LiteConnection(saver.engine, saver._lite)
    raw = conn.connection.dbapi_connection
    raw.execute("BEGIN IMMEDIATE")
    raw.execute("DELETE FROM relaygraph_migrations")
    fake = Refusing(raw)
    conn.connection.dbapi_connection = fake  # type: ignore[misc]
    try:
        with pytest.raises(sa.exc.OperationalError, match="disk I/O error"):
            conn.commit()
    finally:
        conn.close()
    assert fake.rollbacks == 1
    assert not raw.in_transaction
    assert _lent(saver) == 0
    with engine.connect() as c:  # the delete did not commit
        assert c.exec_driver_sql("SELECT count(*) FROM relaygraph_migrations").scalar_one()
    engine.dispose()


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 9, 300])
def test_in_lists_bind_one_parameter_per_value_padded_to_a_power_of_two(saver, n) -> None:
    values = [f"v{i}" for i in range(n)]
    slots, params = saver._in_list("ids", values)
    assert slots is not None and slots >= n and slots & (slots - 1) == 0 and slots < 2 * n + 1
    assert list(params) == [f"ids{i}" for i in range(slots)]
    assert list(params.values())[:n] == values
    assert set(params.values()) == set(values)  # padding repeats, never invents


def test_reads_with_many_versions_and_checkpoints_match_inmemory(saver) -> None:
    """list() fetches writes for up to 400 checkpoints and frames for many versions at a
    time: every IN-list size reads back what InMemorySaver holds."""
    from langgraph.checkpoint.memory import InMemorySaver

    ref = chat_graph(40).compile(checkpointer=InMemorySaver())
    g = chat_graph(40).compile(checkpointer=saver)
    for graph in (ref, g):
        for t in range(3):
            graph.invoke({"messages": [HumanMessage("hi", id=f"h{t}")], "count": 0},
                         {"configurable": {"thread_id": f"many-{t}"}})
    def snap(graph, t):
        return [(s.values, s.next, [(t.name, t.result, t.interrupts) for t in s.tasks])
                for s in graph.get_state_history({"configurable": {"thread_id": f"many-{t}"}})]
    for t in range(3):
        assert snap(g, t) == snap(ref, t)
    assert len(list(saver.list(None))) == len(list(ref.checkpointer.list(None))) > 120


@pytest.mark.parametrize(("url", "is_file"), [
    ("sqlite://", False), ("sqlite:///:memory:", False),
    ("sqlite:///file:mem1?mode=memory&uri=true", False),
    ("sqlite+aiosqlite:///file:mem2?mode=memory&cache=shared&uri=true", False),
    ("sqlite:///relaygraph.db", True), ("sqlite+aiosqlite:////tmp/x/y.db", True),
    ("sqlite:///file:data.db?mode=rwc&uri=true", True),
    ("postgresql://u@h/db", False)])
def test_which_urls_name_a_sqlite_file(url, is_file) -> None:
    from sqlalchemy.engine import make_url

    from relaygraph.checkpointers._urls import is_sqlite_file

    assert is_sqlite_file(make_url(url)) is is_file


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
async def test_async_saver_keeps_an_in_memory_database_on_its_own_engine(url) -> None:
    """A second engine would open a new, empty in-memory database: no worker then."""
    from relaygraph.checkpointers import AsyncSQLAlchemySaver

    async with AsyncSQLAlchemySaver.from_conn_string(url) as s:
        assert s._worker is None
        await s.asetup()
        g = chat_graph(2).compile(checkpointer=s)
        cfg = {"configurable": {"thread_id": "mem"}}
        out = await g.ainvoke({"messages": [HumanMessage("hi", id="h")], "count": 0}, cfg)
        assert (await g.aget_state(cfg)).values["messages"] == out["messages"]


async def test_async_saver_on_a_file_runs_operations_on_worker_threads(tmp_path) -> None:
    """From a URL, the async saver runs each operation with sqlite3 on a worker thread:
    the same rows as the aiosqlite path writes, readable by either."""
    from relaygraph.checkpointers import AsyncSQLAlchemySaver

    url = f"sqlite+aiosqlite:///{tmp_path}/worker.db"
    cfg = {"configurable": {"thread_id": "w"}}
    async with AsyncSQLAlchemySaver.from_conn_string(url) as s:
        assert s._worker is not None
        await s.asetup()
        g = chat_graph(6).compile(checkpointer=s)
        out = await g.ainvoke({"messages": [HumanMessage("hi", id="h")], "count": 0}, cfg)
        history = [st async for st in g.aget_state_history(cfg)]
        assert s._worker.engine.pool.checkedout() == _kept(s._worker.writer)
    # the same database through a caller's engine (aiosqlite all the way)
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(url)
    other = AsyncSQLAlchemySaver(engine)
    assert other._worker is None
    g2 = chat_graph(6).compile(checkpointer=other)
    assert (await g2.aget_state(cfg)).values["messages"] == out["messages"]
    assert [st.values async for st in g2.aget_state_history(cfg)] == [
        st.values for st in history]
    await engine.dispose()


async def test_async_saver_on_a_file_that_cannot_be_opened_is_a_clear_error(tmp_path) -> None:
    from relaygraph.checkpointers import AsyncSQLAlchemySaver

    missing = tmp_path / "no" / "such" / "dir" / "x.db"
    async with AsyncSQLAlchemySaver.from_conn_string(f"sqlite:///{missing}") as s:
        assert s._worker is not None
        with pytest.raises(DatabaseUnavailableError, match="unable to open"):
            await s.aget_tuple({"configurable": {"thread_id": "t"}})


def test_binary_and_none_bind_through_registered_identity_adapters(tmp_path):
    """A SQLite saver registers adapters that return ``bytes``, ``memoryview`` and
    ``None`` as they are (``plain_sqlite_binds``): the values any sqlite3 connection
    stores do not change, and an adapter the application registered first stays."""
    from relaygraph.checkpointers._direct import plain_sqlite_binds

    key_bytes = (bytes, sqlite3.PrepareProtocol)
    key_none = (type(None), sqlite3.PrepareProtocol)
    key_view = (memoryview, sqlite3.PrepareProtocol)
    saved = {k: sqlite3.adapters.get(k) for k in (key_bytes, key_none, key_view)}
    try:
        for k in saved:
            sqlite3.adapters.pop(k, None)

        def mine(value: bytes) -> bytes:
            return b"app:" + value

        sqlite3.register_adapter(bytes, mine)
        with SQLAlchemySaver.from_conn_string(f"sqlite:///{tmp_path}/a.db") as s:
            s.setup()
        assert sqlite3.adapters[key_bytes] is mine  # the application's own, kept
        assert key_none in sqlite3.adapters and key_view in sqlite3.adapters  # were none

        del sqlite3.adapters[key_bytes]
        plain_sqlite_binds()
        conn = sqlite3.connect(":memory:")
        conn.execute("CREATE TABLE t (a, b, c)")
        conn.execute("INSERT INTO t VALUES (?, ?, ?)",
                     (b"\x00\x01raw", None, memoryview(b"view")[1:]))
        assert conn.execute("SELECT a, typeof(a), b, typeof(b), c FROM t").fetchone() == (
            b"\x00\x01raw", "blob", None, "null", b"iew")
        conn.close()
    finally:
        for k, v in saved.items():
            if v is None:
                sqlite3.adapters.pop(k, None)
            else:
                sqlite3.adapters[k] = v


def test_a_put_serializes_before_it_takes_the_write_locks(saver, monkeypatch) -> None:
    """Another writer, in this process or another, waits only for a put's statements:
    its values are serialized and compressed before the saver's write lock and SQLite's."""
    g = chat_graph(2).compile(checkpointer=saver)
    cfg = {"configurable": {"thread_id": "early"}}
    g.invoke({"messages": [HumanMessage("hi", id="h")], "count": 0}, cfg)
    parent, cp, versions = _next_put(saver, cfg)
    seen: list[tuple[bool, bool]] = []
    real = saver.serde.dumps_typed

    def watching(value):  # noqa: ANN001, ANN202
        other = sqlite3.connect(saver.engine.url.database, timeout=0)
        try:
            other.execute("BEGIN IMMEDIATE")  # fails at once if a write transaction is open
            other.rollback()
            free = True
        except sqlite3.OperationalError:
            free = False
        finally:
            other.close()
        seen.append((saver._write_lock.locked(), free))
        return real(value)

    monkeypatch.setattr(saver.serde, "dumps_typed", watching)
    saver.put(parent, cp, {"step": 9}, versions)
    saver.put_writes(saver.get_tuple(cfg).config, [("messages", ["w"])], "task-1")
    assert seen and all(s == (False, True) for s in seen), seen
    monkeypatch.undo()
    got = saver.get_tuple(cfg)
    assert got.checkpoint["channel_values"]["messages"][-1].id == "extra"
    assert got.pending_writes == [("task-1", "messages", ["w"])]
