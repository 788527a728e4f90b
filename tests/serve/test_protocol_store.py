"""The protocol's run registry and thread metadata on every database (sync and async engines)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from relaygraph.serve._index import ThreadIndex
from relaygraph.serve._runstore import RunStore


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        self.now += 1
        return self.now


@pytest.fixture(params=["sync", "async"])
async def store(request: pytest.FixtureRequest, backend: Any) -> AsyncIterator[RunStore]:
    if request.param == "sync":
        engine: Any = sa.create_engine(backend.url)
    else:
        engine = create_async_engine(backend.async_url)
    s = RunStore(engine, clock=Clock())
    await s.asetup()
    await s.asetup()  # idempotent
    await ThreadIndex(engine).asetup()
    yield s
    if request.param == "sync":
        engine.dispose()
    else:
        await engine.dispose()


async def test_runs_round_trip_and_status_changes(store: RunStore) -> None:
    first = await store.acreate_run(run_id="r1", thread_id="acme/t", tenant="acme",
                                    assistant_id="refund", multitask_strategy="reject",
                                    metadata={"source": "sdk"})
    assert first.status == "pending" and not first.terminal
    await store.acreate_run(run_id="r2", thread_id="acme/t", tenant="acme",
                            assistant_id="refund", multitask_strategy="enqueue")
    assert await store.aset_status("r1", "running", only_if=["pending"])
    assert not await store.aset_status("r1", "running", only_if=["pending"])
    assert [r.run_id for r in await store.aactive_runs("acme/t")] == ["r1", "r2"]
    assert await store.aset_status("r1", "error", error="boom " * 2000)
    got = await store.aget_run("r1")
    assert got is not None and got.terminal and got.metadata == {"source": "sdk"}
    assert got.error is not None and len(got.error) == 4000
    assert [r.run_id for r in await store.alist_runs("acme/t")] == ["r2", "r1"]
    assert [r.run_id for r in await store.alist_runs("acme/t", status="error")] == ["r1"]
    assert await store.alist_runs("acme/T") == []  # ids compare exactly
    await store.adelete_run("r2")
    assert await store.aget_run("r2") is None


async def test_thread_metadata_merges_and_filters_exactly(store: RunStore) -> None:
    await store.aput_thread("acme/a", "acme", "refund", {"team": "x", "n": 1})
    await store.aput_thread("acme/b", "acme", None, {"team": "x", "n": 2, "deep": {"k": [1]}})
    await store.aput_thread("globex/a", "globex", None, {"team": "x"})
    merged = await store.aput_thread("acme/a", "acme", None, {"owner": "ana"})
    assert merged.metadata == {"team": "x", "n": 1, "owner": "ana"}
    assert merged.graph_id == "refund"  # kept when not given

    async def ids(**kw: Any) -> list[str]:
        return [m.thread_id for m in await store.asearch_threads("acme", **kw)]

    assert await ids() == ["acme/a", "acme/b"]  # newest update first
    await store.atouch_thread("acme/b")
    assert await ids() == ["acme/b", "acme/a"]
    await store.atouch_thread("acme/a")
    assert await ids(order="asc") == ["acme/b", "acme/a"]
    assert await ids(sort_by="created_at", order="asc") == ["acme/a", "acme/b"]
    assert await ids(meta={"team": "x"}) == ["acme/a", "acme/b"]
    assert await ids(meta={"n": 2}) == ["acme/b"]
    assert await ids(meta={"n": "2"}) == []  # exact JSON value, not its text
    assert await ids(meta={"deep": {"k": [1]}}) == ["acme/b"]
    assert await ids(meta={"team": "x", "owner": "ana"}) == ["acme/a"]
    assert await ids(ids=["acme/b", "globex/a"]) == ["acme/b"]
    assert await ids(limit=1, offset=1) == ["acme/b"]
    assert await store.asearch_threads("acme", meta={"team": "x"}, count=True) == 2
    await store.adelete_thread("acme/a")
    assert await store.aget_thread("acme/a") is None
    assert await ids(meta={"owner": "ana"}) == []


async def test_search_includes_threads_only_the_listing_index_knows(store: RunStore) -> None:
    index = ThreadIndex(store.engine, clock=Clock())
    await store.aput_thread("acme/a", "acme", "refund", {"team": "x"})
    await index.aput("acme/a", "acme", "refund", "finished", {})
    await index.aput("acme/served", "acme", "refund", "waiting", {})  # via LangServe
    await index.aput("globex/other", "globex", "refund", "waiting", {})

    async def ids(**kw: Any) -> list[str]:
        return [m.thread_id for m in await store.asearch_threads("acme", **kw)]

    assert sorted(await ids()) == ["acme/a", "acme/served"]
    assert await ids(statuses=["waiting"]) == ["acme/served"]
    assert await ids(meta={"team": "x"}) == ["acme/a"]
    assert await store.asearch_threads("acme", count=True) == 2
    (served,) = await store.asearch_threads("acme", ids=["acme/served"])
    assert served.metadata == {} and served.graph_id == "refund"
    # by the SDK's status: "idle" (finished) before "interrupted" (waiting), and back
    await store.aput_thread("acme/b", "acme", "refund", {})
    await index.aput("acme/b", "acme", "refund", "failed", {})
    assert await ids(sort_by="status", order="asc") == ["acme/b", "acme/a", "acme/served"]
    assert await ids(sort_by="status") == ["acme/served", "acme/a", "acme/b"]


async def test_in_memory_index_and_runs_take_turns_on_their_one_connection() -> None:
    # Without a database the index and the run store share one sqlite3 connection; worker
    # threads using it at once fail inside sqlite3 ("not an error"), so calls take turns.
    index = ThreadIndex()
    store = RunStore(index.engine)
    await index.asetup()
    await store.asetup()

    async def one(i: int) -> None:
        await index.aput(f"a/t{i}", "a", "g", "finished", {"i": i})
        await store.atouch_thread(f"a/t{i}")
        assert (await index.aget(f"a/t{i}")) is not None

    await asyncio.gather(*(one(i) for i in range(300)))
