"""The async saver from a URL keeps its autocommitted connections between operations."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa
from langchain_core.messages import HumanMessage

from relaygraph.checkpointers import AsyncSQLAlchemySaver
from relaygraph.checkpointers._aio import HeldConnections

from ._graphs import chat_graph


@pytest.fixture(params=["postgres", "mysql"])
def server(request):
    return request.getfixturevalue(f"{'pg' if request.param == 'postgres' else 'mysql'}_backend")


def _kill_other_connections(url: str) -> int:
    admin = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with admin.connect() as c:
        if admin.dialect.name == "postgresql":
            n = c.execute(sa.text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()")).scalar()
        else:
            ids = c.execute(sa.text(
                "SELECT id FROM information_schema.processlist "
                "WHERE db = DATABASE() AND id <> CONNECTION_ID()")).scalars().all()
            for i in ids:
                c.execute(sa.text(f"KILL {int(i)}"))
            n = len(ids)
    admin.dispose()
    return int(n or 0)


def _counting(held: HeldConnections) -> list[int]:
    """Checkouts from the pool of the held connections' engine."""
    opened: list[int] = []
    sa.event.listen(held.engine.sync_engine, "checkout", lambda *a: opened.append(1))
    return opened


async def test_operations_reuse_a_few_connections(server) -> None:
    async with AsyncSQLAlchemySaver.from_conn_string(server.async_url) as saver:
        await saver.asetup()
        assert saver._held is not None
        opened = _counting(saver._held)
        g = chat_graph(6).compile(checkpointer=saver)
        for i in range(5):
            cfg = {"configurable": {"thread_id": f"t{i}"}}
            out = await g.ainvoke({"messages": [HumanMessage("hi", id="h")], "count": 0}, cfg)
            assert (await g.aget_state(cfg)).values["messages"] == out["messages"]
        # five threads of seven checkpoints, each a few operations: a handful of connections
        assert 1 <= len(opened) <= saver._held.keep
        fast = saver._held.engine
        assert fast.sync_engine.pool.checkedout() == len(saver._held._idle)
    # closed on the way out: nothing left checked out
    assert fast.sync_engine.pool.checkedout() == 0


async def test_no_more_connections_stay_open_than_the_pool_would_keep(server) -> None:
    async with AsyncSQLAlchemySaver.from_conn_string(server.async_url) as saver:
        await saver.asetup()
        assert saver._held is not None
        pool = saver._held.engine.sync_engine.pool
        assert saver._held.keep == pool.size()
        # a burst wider than the pool: overflow connections go back, not into the list
        got = await asyncio.gather(*(saver.aget_tuple({"configurable": {"thread_id": f"b{i}"}})
                                     for i in range(12)))
        assert got == [None] * 12
        assert len(saver._held._idle) <= pool.size()
        assert pool.checkedout() == len(saver._held._idle)


async def test_a_dropped_connection_is_replaced_and_the_operation_retried(server) -> None:
    async with AsyncSQLAlchemySaver.from_conn_string(server.async_url) as saver:
        await saver.asetup()
        g = chat_graph(4).compile(checkpointer=saver)
        cfg = {"configurable": {"thread_id": "drop"}}
        await g.ainvoke({"messages": [HumanMessage("hi", id="h")], "count": 0}, cfg)
        assert saver._held is not None and saver._held._idle
        assert _kill_other_connections(server.url) >= 1  # the held connections are dead
        await g.ainvoke({"messages": [HumanMessage("again", id="h2")], "count": 0}, cfg)
        ids = [m.id for m in (await g.aget_state(cfg)).values["messages"]]
        assert ids[0] == "h" and "h2" in ids


async def test_a_database_error_closes_the_connection_instead_of_keeping_it(server) -> None:
    async with AsyncSQLAlchemySaver.from_conn_string(server.async_url) as saver:
        await saver.asetup()
        assert await saver.aget_tuple({"configurable": {"thread_id": "x"}}) is None
        assert saver._held is not None
        before = list(saver._held._idle)
        assert before

        async def failing(conn):  # noqa: ANN001, ANN202
            await conn.execute(sa.text("SELECT * FROM no_such_table_here"))

        with pytest.raises(sa.exc.DBAPIError):
            await saver._on_held(failing)
        assert before[-1] not in saver._held._idle
        assert before[-1].conn.closed
        # the op's own errors leave the connection as it was: it is kept
        used = []

        async def refusing(conn):  # noqa: ANN001, ANN202
            used.append(conn)
            raise ValueError("refused before any SQL ran")

        with pytest.raises(ValueError):
            await saver._on_held(refusing)
        assert used[0] in saver._held._idle and not used[0].conn.closed


async def test_a_cancelled_operation_does_not_leave_its_connection_for_reuse(pg_backend) -> None:
    async with AsyncSQLAlchemySaver.from_conn_string(pg_backend.async_url) as saver:
        await saver.asetup()
        assert saver._held is not None

        async def slow(conn):  # noqa: ANN001, ANN202
            await conn.execute(sa.text("SELECT pg_sleep(5)"))

        task = asyncio.ensure_future(saver._on_held(slow))
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert saver._held._idle == []  # closed, not kept
        # the saver goes on with a fresh connection
        assert await saver.aget_tuple({"configurable": {"thread_id": "x"}}) is None


def test_held_connections_belong_to_the_loop_that_opened_them() -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    held = HeldConnections(create_async_engine("sqlite+aiosqlite://"))

    async def usable() -> bool:
        return held.usable()

    assert asyncio.run(usable()) is True
    assert asyncio.run(usable()) is False  # another loop: the saver connects as usual


def test_task_writes_go_through_a_pool_of_their_own(server) -> None:
    """from_conn_string: puts and reads on one autocommitted pool, task writes on another,
    so that each kind of insert keeps to its own connection (and PostgreSQL backend)."""
    from relaygraph.checkpointers import SQLAlchemySaver

    with SQLAlchemySaver.from_conn_string(server.url) as saver:
        saver.setup()
        assert saver._writes_reader is not None
        assert saver._writes_reader is not saver._reader
        main: list[int] = []
        lane: list[int] = []
        if saver.engine.dialect.name == "postgresql":
            # operations take their connection from the kept checkouts of their pool
            assert saver._kept is not None and saver._kept.engine is saver._reader
            assert (saver._kept_lane is not None
                    and saver._kept_lane.engine is saver._writes_reader)
            for kept, seen in ((saver._kept, main), (saver._kept_lane, lane)):
                def counted(_real=kept.acquire, _seen=seen):  # noqa: ANN001, ANN202
                    _seen.append(1)
                    return _real()

                kept.acquire = counted  # type: ignore[method-assign]
        else:  # every operation checks a connection out of its pool
            assert saver._kept is None and saver._kept_lane is None
            sa.event.listen(saver._reader, "checkout", lambda *a: main.append(1))
            sa.event.listen(saver._writes_reader, "checkout", lambda *a: lane.append(1))
        puts: list[int] = []
        put_writes: list[int] = []
        real_put, real_writes = saver.put, saver.put_writes

        def counted_put(*a, **kw):  # noqa: ANN002, ANN003, ANN202
            puts.append(1)
            return real_put(*a, **kw)

        def counted_writes(*a, **kw):  # noqa: ANN002, ANN003, ANN202
            put_writes.append(1)
            return real_writes(*a, **kw)

        saver.put, saver.put_writes = counted_put, counted_writes  # type: ignore[method-assign]
        g = chat_graph(4).compile(checkpointer=saver)
        cfg = {"configurable": {"thread_id": "lanes"}}
        out = g.invoke({"messages": [HumanMessage("hi", id="h")], "count": 0}, cfg)
        assert len(lane) == len(put_writes) > 0
        assert len(main) >= len(puts) > 0  # puts and get_tuple
        assert g.get_state(cfg).values["messages"] == out["messages"]


async def test_async_task_writes_go_through_held_connections_of_their_own(server) -> None:
    async with AsyncSQLAlchemySaver.from_conn_string(server.async_url) as saver:
        await saver.asetup()
        assert saver._held is not None and saver._writes_held is not None
        main = _counting(saver._held)
        lane = _counting(saver._writes_held)
        calls: list[str] = []
        real_writes = saver._op_put_writes

        def counted(*a, **kw):  # noqa: ANN002, ANN003, ANN202
            calls.append("w")
            return real_writes(*a, **kw)

        saver._op_put_writes = counted  # type: ignore[method-assign]
        g = chat_graph(4).compile(checkpointer=saver)
        cfg = {"configurable": {"thread_id": "alanes"}}
        out = await g.ainvoke({"messages": [HumanMessage("hi", id="h")], "count": 0}, cfg)
        # task writes opened connections on their own pool only, reusing them
        assert 1 <= len(lane) <= len(calls)
        assert len(main) >= 1
        assert saver._writes_held._idle and saver._held._idle
        assert (await g.aget_state(cfg)).values["messages"] == out["messages"]
        pools = [h.engine.sync_engine.pool for h in (saver._held, saver._writes_held)]
    assert [p.checkedout() for p in pools] == [0, 0]
