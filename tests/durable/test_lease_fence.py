"""Fencing: a writer whose lease was taken over cannot write a checkpoint."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import sqlalchemy as sa
from langgraph.checkpoint.base import empty_checkpoint
from sqlalchemy.ext.asyncio import create_async_engine

from relaygraph._errors import RelaygraphError
from relaygraph.checkpointers import AsyncSQLAlchemySaver, SQLAlchemySaver
from relaygraph.checkpointers._fence import FENCE_KEY, WriteFence
from relaygraph.durable import Lease, LeaseLostError, LeaseStore
from relaygraph.testing import ManualClock

from ._lease_helpers import checkpoint_rows, counter_graph


def refused(exc: BaseException) -> LeaseLostError:
    """The fence's refusal behind ``exc``: raised as it is, or as the cause of the
    savers' CheckpointSaveError (a plain run stops at the boundary after a failed save)."""
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, LeaseLostError):
        cause = cause.__cause__
    assert cause is not None, f"not a refused write: {exc!r}"
    return cause


def fenced(thread_id: str, lease: Any) -> dict[str, Any]:
    return {"configurable": {"thread_id": thread_id, FENCE_KEY: lease}}


def test_a_lease_is_a_write_fence() -> None:
    assert isinstance(Lease("t", "h", 1, 0.0), WriteFence)


def test_sync_saver_refuses_a_taken_over_writer(backend) -> None:
    clock = ManualClock()
    engine = sa.create_engine(backend.url)
    try:
        saver = SQLAlchemySaver(engine)
        saver.setup()
        store = LeaseStore.from_saver(saver, ttl=10, clock=clock)
        store.setup()
        graph = counter_graph(3).compile(checkpointer=saver)
        old = store.acquire("t", holder="old")
        assert graph.invoke({"count": 0}, fenced("t", old))["count"] == 3
        written = checkpoint_rows(backend.url, "t")
        assert len(written) == 5  # the input, then one per superstep

        clock.advance(11)  # the old holder stalls past its TTL; another takes over
        new = store.acquire("t", holder="new")
        assert new.token > old.token
        with pytest.raises(RelaygraphError) as err:
            graph.invoke({"count": 0}, fenced("t", old), durability="sync")
        assert refused(err.value).token == old.token
        assert checkpoint_rows(backend.url, "t") == written  # nothing was written

        # a put straight through the saver, too
        tip = saver.get_tuple({"configurable": {"thread_id": "t"}})
        assert tip is not None
        cfg = {**tip.config, "configurable": {**tip.config["configurable"], FENCE_KEY: old}}
        with pytest.raises(LeaseLostError):
            saver.put(cfg, empty_checkpoint(), {"source": "loop", "step": 9}, {})
        assert checkpoint_rows(backend.url, "t") == written

        # the new holder writes; its checkpoints carry no trace of the fence
        out = graph.invoke({"count": 0}, fenced("t", new))
        assert out["count"] == 3
        latest = saver.get_tuple({"configurable": {"thread_id": "t"}})
        assert latest is not None and not any(k.startswith("__") for k in latest.metadata)
        assert len(checkpoint_rows(backend.url, "t")) > len(written)
    finally:
        engine.dispose()


async def test_async_saver_refuses_a_taken_over_writer(backend) -> None:
    clock = ManualClock()
    aengine = create_async_engine(backend.async_url)
    try:
        saver = AsyncSQLAlchemySaver(aengine)
        await saver.asetup()
        store = LeaseStore.from_saver(saver, ttl=10, clock=clock)
        await store.asetup()
        graph = counter_graph(2).compile(checkpointer=saver)
        old = await store.aacquire("t", holder="old")
        assert (await graph.ainvoke({"count": 0}, fenced("t", old)))["count"] == 2
        written = checkpoint_rows(backend.url, "t")
        clock.advance(11)
        new = await store.aacquire("t", holder="new")
        with pytest.raises(RelaygraphError) as err:
            await graph.ainvoke({"count": 0}, fenced("t", old), durability="sync")
        assert refused(err.value).token == old.token
        assert checkpoint_rows(backend.url, "t") == written
        assert (await graph.ainvoke({"count": 0}, fenced("t", new)))["count"] == 2
        assert len(checkpoint_rows(backend.url, "t")) > len(written)
    finally:
        await aengine.dispose()


def test_async_saver_from_url_refuses_a_taken_over_writer(backend) -> None:
    """From a URL (on SQLite: sqlite3 on worker threads, a separate write path)."""
    import asyncio

    async def main() -> None:
        clock = ManualClock()
        async with AsyncSQLAlchemySaver.from_conn_string(backend.async_url) as saver:
            await saver.asetup()
            store = LeaseStore.from_saver(saver, ttl=10, clock=clock)
            await store.asetup()
            graph = counter_graph(2).compile(checkpointer=saver)
            old = await store.aacquire("t", holder="old")
            await graph.ainvoke({"count": 0}, fenced("t", old))
            written = checkpoint_rows(backend.url, "t")
            clock.advance(11)
            await store.aacquire("t", holder="new")
            with pytest.raises(RelaygraphError) as err:
                await graph.ainvoke({"count": 0}, fenced("t", old), durability="sync")
            assert refused(err.value).token == old.token
            assert checkpoint_rows(backend.url, "t") == written

    asyncio.run(main())


class _PausingFence:
    """Delegates to a lease, and pauses inside the put's transaction after the check."""

    def __init__(self, lease: Lease) -> None:
        self.lease = lease
        self.checked = threading.Event()
        self.go = threading.Event()

    def fence_statement(self) -> tuple[Any, dict[str, Any]]:
        return self.lease.fence_statement()

    def fence_check(self, rows: Any) -> None:
        self.lease.fence_check(rows)
        self.checked.set()
        assert self.go.wait(30)


def _lock_waiters(url: str, kind: str) -> int:
    """Statements of this test's database updating the lease row and waiting on a lock
    (PostgreSQL), or still running after 200 ms (MariaDB: its lock waits do not always
    show in ``innodb_trx``)."""
    if kind == "postgres":
        q = ("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
             "AND wait_event_type = 'Lock' AND query LIKE 'UPDATE relaygraph_leases%'")
    else:
        q = ("SELECT count(*) FROM information_schema.processlist WHERE db = DATABASE() "
             "AND info LIKE 'UPDATE relaygraph_leases%' AND time_ms >= 200")
    eng = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with eng.connect() as c:
            return int(c.execute(sa.text(q)).scalar_one())
    finally:
        eng.dispose()


@pytest.mark.parametrize("backend", ["postgres", "mysql"], indirect=True)
def test_takeover_waits_for_a_fenced_put_in_flight(backend) -> None:
    """The check and the write are atomic: between them, a takeover blocks on the lease
    row until the checkpoint is committed, and then the new holder sees it.

    (SQLite needs no such test: a fenced put holds the database's write lock.)
    """
    clock = ManualClock()
    engine = sa.create_engine(backend.url)
    try:
        saver = SQLAlchemySaver(engine)
        saver.setup()
        store = LeaseStore.from_saver(saver, ttl=10, clock=clock)
        store.setup()
        old = store.acquire("t", holder="old")
        fence = _PausingFence(old)
        put_error: list[BaseException] = []

        def put() -> None:
            try:
                saver.put(fenced("t", fence), empty_checkpoint(),
                          {"source": "input", "step": -1}, {})
            except BaseException as exc:  # noqa: BLE001 - reported below
                put_error.append(exc)

        writer = threading.Thread(target=put)
        writer.start()
        assert fence.checked.wait(30)
        clock.advance(11)
        taken: list[Any] = []

        def take() -> None:
            try:
                taken.append(store.acquire("t", holder="new"))
            except BaseException as exc:  # noqa: BLE001 - reported below
                taken.append(exc)

        taker = threading.Thread(target=take)
        taker.start()
        deadline = time.monotonic() + 20
        while _lock_waiters(backend.url, backend.kind) == 0:  # the takeover is blocked
            assert not taken, f"the takeover did not wait for the fenced put: {taken}"
            assert time.monotonic() < deadline, "the takeover never waited on the lease row"
            time.sleep(0.01)
        assert not taken
        fence.go.set()
        writer.join(30)
        taker.join(30)
        assert put_error == []
        assert taken and taken[0].token == old.token + 1
        assert len(checkpoint_rows(backend.url, "t")) == 1
    finally:
        engine.dispose()
