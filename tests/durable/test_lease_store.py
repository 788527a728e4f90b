"""LeaseStore on every database, sync and async: TTL, tokens, takeover, renew, release,
current, cancel."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from relaygraph._errors import ConfigurationError
from relaygraph.durable import Lease, LeaseLostError, LeaseStore, ThreadBusyError
from relaygraph.testing import ManualClock


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def store(engine, clock) -> LeaseStore:
    s = LeaseStore(engine, ttl=10, clock=clock)
    s.setup()
    s.setup()  # idempotent
    return s


@pytest.fixture
async def astore(backend, clock) -> AsyncIterator[LeaseStore]:
    aengine = create_async_engine(backend.async_url)
    s = LeaseStore(aengine, ttl=10, clock=clock)
    await s.asetup()
    await s.asetup()
    yield s
    await aengine.dispose()


def test_acquire_busy_release_and_tokens(store, clock) -> None:
    a = store.acquire("t", holder="a")
    assert (a.thread_id, a.holder, a.token, a.expires_at) == ("t", "a", 1, clock() + 10)
    with pytest.raises(ThreadBusyError) as err:
        store.acquire("t", holder="b")
    assert (err.value.holder, err.value.expires_at) == ("a", a.expires_at)
    assert store.current("t") == a
    assert store.acquire("other", holder="b").token == 1  # tokens are per thread
    store.release(a)
    assert store.current("t") is None
    tokens = []
    for holder in ("b", "c", "d"):
        lease = store.acquire("t", holder=holder)
        tokens.append(lease.token)
        store.release(lease)
    assert tokens == [2, 3, 4]  # one more on every acquisition, never reused


def test_expiry_and_takeover(store, clock) -> None:
    a = store.acquire("t", holder="a")
    clock.advance(9.999)
    with pytest.raises(ThreadBusyError):
        store.acquire("t", holder="b")
    assert store.current("t") is not None
    clock.advance(0.001)  # expires_at <= now: expired
    assert store.current("t") is None
    b = store.acquire("t", holder="b")
    assert b.token == a.token + 1
    with pytest.raises(LeaseLostError) as err:
        store.renew(a)
    assert (err.value.thread_id, err.value.token) == ("t", a.token)
    store.release(a)  # a no-op for the lost lease: b keeps the thread
    assert store.current("t") == b


def test_renew_extends_and_keeps_the_token(store, clock) -> None:
    a = store.acquire("t", holder="a")
    clock.advance(8)
    a2 = store.renew(a)
    assert a2.token == a.token and a2.expires_at == clock() + 10
    clock.advance(8)  # past the first expiry, within the renewed one
    with pytest.raises(ThreadBusyError):
        store.acquire("t", holder="b")
    # expired but not taken over: the holder may still renew (no one else wrote)
    clock.advance(5)
    assert store.renew(a2).token == a.token
    store.release(a2)
    with pytest.raises(LeaseLostError, match="released"):
        store.renew(a2)


def test_request_cancel(store, clock) -> None:
    assert store.request_cancel("t") is False  # nothing to cancel
    a = store.acquire("t", holder="a")
    assert not a.cancel_requested
    assert store.request_cancel("t") is True
    assert store.renew(a).cancel_requested
    assert store.current("t").cancel_requested
    store.release(a)
    assert store.request_cancel("t") is False
    b = store.acquire("t", holder="b")  # a new lease starts uncancelled
    assert not b.cancel_requested and not store.renew(b).cancel_requested


def test_one_winner_among_concurrent_acquirers(engine, clock, backend) -> None:
    stores = [LeaseStore(engine, ttl=10, clock=clock) for _ in range(8)]
    stores[0].setup()
    for round_ in range(3):
        thread_id = f"race-{round_}"
        barrier = threading.Barrier(len(stores))
        won: list[Lease] = []
        busy: list[str] = []
        errors: list[BaseException] = []

        def go(s: LeaseStore, i: int) -> None:
            barrier.wait()  # noqa: B023
            try:
                won.append(s.acquire(thread_id, holder=f"h{i}"))  # noqa: B023
            except ThreadBusyError as exc:
                busy.append(exc.holder)  # noqa: B023
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)  # noqa: B023

        threads = [threading.Thread(target=go, args=(s, i)) for i, s in enumerate(stores)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert errors == []
        assert len(won) == 1, won
        assert busy == [won[0].holder] * (len(stores) - 1)


def test_validation(engine, store) -> None:
    with pytest.raises(ConfigurationError, match="ttl"):
        LeaseStore(engine, ttl=0)
    with pytest.raises(ConfigurationError, match="Engine"):
        LeaseStore("sqlite://")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="saver"):
        LeaseStore.from_saver(object())
    with pytest.raises(ConfigurationError, match="thread_id"):
        store.acquire("")
    with pytest.raises(ConfigurationError, match="thread_id"):
        store.current(None)  # type: ignore[arg-type]


def test_thread_ids_longer_than_the_column_are_refused(store) -> None:
    # MariaDB outside strict mode cut them to 255 characters: "y" * 300 got the lease of
    # "y" * 255, and a 100,000-character id was reported busy
    for long_id in ("y" * 256, "x" * 100_000):
        with pytest.raises(ConfigurationError, match="limit is 255"):
            store.try_acquire(long_id)
    assert store.acquire("y" * 255).token == 1


async def test_a_store_used_before_setup_says_so(engine, backend) -> None:
    store = LeaseStore(engine, ttl=10)
    for call in (lambda: store.try_acquire("t"), lambda: store.current("t"),
                 lambda: store.request_cancel("t")):
        with pytest.raises(ConfigurationError, match=r"relaygraph_leases .*store\.setup\(\)"):
            call()
    aengine = create_async_engine(backend.async_url)
    try:
        astore = LeaseStore(aengine, ttl=10)
        with pytest.raises(ConfigurationError, match=r"store\.setup\(\)"):
            await astore.atry_acquire("t")
        with pytest.raises(ConfigurationError, match=r"store\.setup\(\)"):
            await astore.acurrent("t")
    finally:
        await aengine.dispose()


def test_thread_ids_are_exact(store) -> None:
    """MySQL/MariaDB compare strings case- and trailing-space-insensitively by default:
    leases on "T" and "t " are not the lease on "t"."""
    leases = [store.acquire(t, holder=t) for t in ("t", "T", "t ", "\u00e9", "e\u0301")]
    assert [le.token for le in leases] == [1] * 5


async def test_async_engine(astore, clock) -> None:
    a = await astore.aacquire("t", holder="a")
    assert a.token == 1
    with pytest.raises(ThreadBusyError):
        await astore.aacquire("t", holder="b")
    assert await astore.acurrent("t") == a
    assert await astore.arequest_cancel("t") is True
    assert (await astore.arenew(a)).cancel_requested
    clock.advance(10)
    b = await astore.aacquire("t", holder="b")
    assert b.token == 2
    with pytest.raises(LeaseLostError):
        await astore.arenew(a)
    await astore.arelease(a)
    assert await astore.acurrent("t") == b
    await astore.arelease(b)
    assert await astore.acurrent("t") is None
    with pytest.raises(ConfigurationError, match="AsyncEngine"):
        astore.acquire("t")


async def test_async_methods_on_a_sync_engine(store, clock) -> None:
    a = await store.aacquire("t", holder="a")
    assert (await store.acurrent("t")) == a
    await store.arelease(a)
    assert await store.arequest_cancel("t") is False


def test_from_saver_shares_the_engine(engine) -> None:
    from relaygraph.checkpointers import SQLAlchemySaver

    saver: Any = SQLAlchemySaver(engine)
    assert LeaseStore.from_saver(saver, ttl=5).engine is engine


@pytest.fixture
def engine(backend) -> Iterator[sa.Engine]:
    eng = sa.create_engine(backend.url)
    yield eng
    eng.dispose()
