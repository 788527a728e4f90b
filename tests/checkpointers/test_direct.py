"""PostgreSQL writes on the psycopg connection itself: same rows, same errors, retried."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.memory import InMemorySaver

from relaygraph.checkpointers import SQLAlchemySaver
from relaygraph.checkpointers import _schema as S
from relaygraph.checkpointers._direct import DirectWriter

from ._graphs import chat_graph


@pytest.fixture
def pg_saver(pg_backend):
    engine = sa.create_engine(pg_backend.url)
    saver = SQLAlchemySaver(engine)
    saver.setup()
    assert isinstance(saver._direct, DirectWriter)
    yield saver
    engine.dispose()


def _kill_connections(saver: SQLAlchemySaver) -> int:
    admin = sa.create_engine(saver.engine.url, poolclass=sa.pool.NullPool)
    with admin.connect() as c:
        n = c.execute(sa.text(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()")).scalar()
    admin.dispose()
    return int(n or 0)


def test_a_dropped_connection_is_replaced_and_the_put_retried(pg_saver) -> None:
    g = chat_graph(4).compile(checkpointer=pg_saver)
    cfg = {"configurable": {"thread_id": "drop"}}
    g.invoke({"messages": [HumanMessage("hi", id="h")], "count": 0}, cfg)
    assert _kill_connections(pg_saver) >= 1  # the pooled connections are now dead
    head = pg_saver.get_tuple(cfg)
    cp = dict(head.checkpoint)
    v = pg_saver.get_next_version(max(cp["channel_versions"].values()))
    cp["id"] = "1ffffffff-ffff-6fff-ffff-ffffffffffff"[1:]
    cp["channel_values"] = {**cp["channel_values"], "messages": [
        *cp["channel_values"]["messages"], AIMessage("after", id="after")]}
    cp["channel_versions"] = {**cp["channel_versions"], "messages": v}
    _kill_connections(pg_saver)
    pg_saver.put(head.config, cp, {"step": 9}, {"messages": v})
    _kill_connections(pg_saver)
    pg_saver.put_writes(head.config, [("messages", [AIMessage("w", id="w")])], "t1")
    got = pg_saver.get_tuple(cfg)
    assert got.checkpoint["channel_values"]["messages"][-1].id == "after"
    pending = pg_saver.get_tuple({"configurable": {**head.config["configurable"]}})
    assert [w[0] for w in pending.pending_writes] == ["t1"]


def test_driver_errors_surface_as_sqlalchemy_errors(pg_saver) -> None:
    cfg = {"configurable": {"thread_id": "x", "checkpoint_ns": ""}}
    cp = empty_checkpoint()
    cp["channel_values"] = {"n": 1}
    cp["channel_versions"] = {"n": pg_saver.get_next_version(None)}
    with pg_saver.engine.begin() as c:
        c.exec_driver_sql("ALTER TABLE relaygraph_checkpoints ADD CONSTRAINT no_x "
                          "CHECK (thread_id <> 'x')")
    with pytest.raises(sa.exc.IntegrityError, match="no_x"):
        pg_saver.put(cfg, cp, {}, dict(cp["channel_versions"]))
    # the connection stays usable after the failed pipeline
    ok = {"configurable": {"thread_id": "y", "checkpoint_ns": ""}}
    pg_saver.put(ok, cp, {}, dict(cp["channel_versions"]))
    assert pg_saver.get_tuple(ok).checkpoint["channel_values"] == {"n": 1}


def test_statements_it_cannot_run_fall_back_to_sqlalchemy(pg_saver) -> None:
    w = DirectWriter(pg_saver.engine.dialect)
    expanding = sa.delete(sa.table("t", sa.column("a"))).where(
        sa.column("a").in_(sa.bindparam("xs", expanding=True)))
    assert w.compiled(expanding) is None


async def test_async_saver_takes_the_same_path_and_survives_a_dropped_connection(
        pg_backend) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    from relaygraph.checkpointers import AsyncSQLAlchemySaver

    engine = create_async_engine(pg_backend.async_url)
    saver = AsyncSQLAlchemySaver(engine)
    await saver.asetup()
    assert isinstance(saver._direct, DirectWriter)
    calls = []
    run = saver._direct.arun

    async def counted(conn, writes):  # noqa: ANN001, ANN202
        calls.append(len(writes))
        return await run(conn, writes)

    saver._direct.arun = counted  # type: ignore[method-assign]
    reads = []
    aread = saver._direct.aread

    async def counted_read(conn, stmt, params):  # noqa: ANN001, ANN202
        reads.append(stmt)
        return await aread(conn, stmt, params)

    saver._direct.aread = counted_read  # type: ignore[method-assign]
    try:
        g = chat_graph(4).compile(checkpointer=saver)
        cfg = {"configurable": {"thread_id": "adrop"}}
        await g.ainvoke({"messages": [HumanMessage("hi", id="h")], "count": 0}, cfg)
        # a put: frames and checkpoint row in one statement, straight on psycopg
        assert any(isinstance(stmt, sa.Insert) and stmt.table is S.checkpoints
                   for stmt in reads)
        assert 1 in calls  # put_writes
        sync_saver = SQLAlchemySaver(sa.create_engine(pg_backend.url))
        assert _kill_connections(sync_saver) >= 1
        sync_saver.engine.dispose()
        await g.ainvoke({"messages": [HumanMessage("again", id="h2")], "count": 0}, cfg)
        state = await g.aget_state(cfg)
        assert [m.id for m in state.values["messages"]][:1] == ["h"]
        assert "h2" in [m.id for m in state.values["messages"]]
    finally:
        await engine.dispose()


def test_statements_built_per_call_do_not_grow_the_caches(pg_saver) -> None:
    from relaygraph.checkpointers import _direct

    w = DirectWriter(pg_saver.engine.dialect)
    t = sa.table("t", sa.column("a"))
    for i in range(_direct.CACHE_MAX + 50):
        assert w.compiled(sa.insert(t).values(a=sa.bindparam(f"p{i}"))) is not None
    assert len(w._compiled) == _direct.CACHE_MAX


def test_server_side_prepares_follow_the_connection_setting(pg_backend) -> None:
    # PgBouncer in transaction mode needs prepare_threshold=None: nothing is prepared
    engine = sa.create_engine(pg_backend.url, pool_size=1, max_overflow=0,
                              connect_args={"prepare_threshold": None})
    saver = SQLAlchemySaver(engine)
    saver.setup()
    try:
        g = chat_graph(8).compile(checkpointer=saver)
        cfg = {"configurable": {"thread_id": "bouncer"}}
        g.invoke({"messages": [HumanMessage("hi", id="h")], "count": 0}, cfg)
        for _ in range(8):
            saver.get_tuple(cfg)
        with engine.connect() as c:
            assert c.exec_driver_sql("SELECT count(*) FROM pg_prepared_statements").scalar() == 0
    finally:
        engine.dispose()


def _count_switches(engine: sa.Engine) -> list[str]:
    """Isolation-level switches the dialect performs on driver connections."""
    seen: list[str] = []
    original = engine.dialect.set_isolation_level

    def counting(dbapi_conn, level):  # noqa: ANN001, ANN202
        seen.append(level)
        return original(dbapi_conn, level)

    engine.dialect.set_isolation_level = counting  # type: ignore[method-assign]
    return seen


def test_an_autocommit_engine_is_used_as_is(backend) -> None:
    """Given an engine created with isolation_level="AUTOCOMMIT", reads and puts run on it
    without switching the connection; transactions (merges, retention) still are ones."""
    if backend.kind == "sqlite":
        return
    engine = sa.create_engine(backend.url, isolation_level="AUTOCOMMIT")
    saver = SQLAlchemySaver(engine)
    saver.setup()
    switches = _count_switches(engine)
    g = chat_graph(4).compile(checkpointer=saver)
    ref = chat_graph(4).compile(checkpointer=InMemorySaver())
    cfg = {"configurable": {"thread_id": "ac"}}
    for graph in (g, ref):
        graph.invoke({"messages": [HumanMessage("hi", id="h")], "count": 0}, cfg)
    assert [s.values for s in g.get_state_history(cfg)] == [
        s.values for s in ref.get_state_history(cfg)]
    # a new connection is set to AUTOCOMMIT once; no checkout switched it to anything else
    assert set(switches) <= {"AUTOCOMMIT"}, switches
    with saver._tx.begin() as conn:
        assert conn.get_isolation_level() == "READ COMMITTED"
    saver.prune(["ac"], keep_last=2)  # a transaction: switched to it and back
    assert "READ COMMITTED" in switches
    assert len(list(saver.list(cfg))) == 2
    engine.dispose()


def test_from_conn_string_keeps_the_engine_transactional(backend) -> None:
    with SQLAlchemySaver.from_conn_string(backend.url) as saver:
        saver.setup()
        if backend.kind == "sqlite":
            assert saver._reader is saver.engine
            return
        switches = _count_switches(saver._reader)
        g = chat_graph(2).compile(checkpointer=saver)
        g.invoke({"messages": [HumanMessage("hi", id="h")], "count": 0},
                 {"configurable": {"thread_id": "fc"}})
        saver.get_tuple({"configurable": {"thread_id": "fc"}})
        # the saver's own autocommitted pool: set once per new connection, never switched
        assert switches and set(switches) == {"AUTOCOMMIT"}, switches
        with saver.engine.connect() as conn:  # the engine others share is as it was
            assert conn.get_isolation_level() != "AUTOCOMMIT"
