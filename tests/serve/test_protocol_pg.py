"""Multitask strategies across two server processes on one PostgreSQL database.

The busy run executes on one server; the second server sees it (runs table, thread lease),
refuses, queues behind it, stops it or rolls it back through the database alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from _serve_live import KEY_ACME, Live, live_server
from langgraph_sdk import get_client
from test_protocol import CONFIG, FOREVER, LONG, SPECS, refused, until

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    import uuid

    import sqlalchemy as sa

    from conftest import PG_SERVER, require_backend

    require_backend("postgres")
    name = f"rg_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_SERVER + "/postgres", isolation_level="AUTOCOMMIT",
                             poolclass=sa.pool.NullPool)
    with admin.connect() as c:
        c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{PG_SERVER}/{name}"
    finally:
        with admin.connect() as c:
            c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory, database: str) -> Iterator[tuple[Live, Live]]:
    tmp = tmp_path_factory.mktemp("protocol-pg")
    with live_server(tmp, database_url=database, specs=SPECS, config=CONFIG) as one, \
            live_server(tmp, database_url=database, specs=SPECS, config=CONFIG) as two:
        yield one, two


@pytest.fixture
async def clients(pair: tuple[Live, Live]) -> AsyncIterator[tuple[Any, Any]]:
    async with get_client(url=pair[0].url, api_key=KEY_ACME) as one, \
            get_client(url=pair[1].url, api_key=KEY_ACME) as two:
        yield one, two


async def _busy_on(client: Any, tid: str, above: int = 2) -> dict[str, Any]:
    run = await client.runs.create(tid, "counter", input={"stop": FOREVER}, config=LONG)

    async def ticking() -> bool:
        return bool((await client.threads.get_state(tid))["values"].get("n", 0) > above)

    await until(ticking, "the busy run to write checkpoints")
    return run  # type: ignore[no-any-return]


async def _n_written_by(client: Any, tid: str, run_id: str) -> int:
    history = await client.threads.get_history(tid, limit=1000, metadata={"run_id": run_id})
    return max(h["values"].get("n", 0) for h in history)


async def test_reject_and_interrupt_across_processes(clients: tuple[Any, Any]) -> None:
    one, two = clients
    tid = (await one.threads.create())["thread_id"]
    busy = await _busy_on(one, tid)
    # the other process sees the run and the thread as busy
    assert (await two.runs.get(tid, busy["run_id"]))["status"] == "running"
    assert (await two.threads.get(tid))["status"] == "busy"
    assert await refused(two.runs.wait(tid, "counter", input={"stop": 0}), 409, "busy")

    out = await two.runs.wait(tid, "counter", input={"stop": 0}, multitask_strategy="interrupt")
    stopped_at = await _n_written_by(two, tid, busy["run_id"])
    assert out["n"] == stopped_at + 1
    assert (await two.runs.get(tid, busy["run_id"]))["status"] == "interrupted"
    joined = await two.runs.join(tid, busy["run_id"])  # a run that executed on the other one
    assert joined["n"] == out["n"]


async def test_enqueue_and_cancel_across_processes(clients: tuple[Any, Any]) -> None:
    one, two = clients
    tid = (await one.threads.create())["thread_id"]
    busy = await _busy_on(one, tid)
    queued = await two.runs.create(tid, "counter", input={"stop": 0},
                                   multitask_strategy="enqueue")
    assert (await one.runs.get(tid, queued["run_id"]))["status"] == "pending"
    await two.runs.cancel(tid, busy["run_id"])  # executing on the other server
    out = await one.runs.join(tid, queued["run_id"])  # executing on the other server
    assert out["n"] == await _n_written_by(one, tid, busy["run_id"]) + 1
    assert (await one.runs.get(tid, busy["run_id"]))["status"] == "interrupted"
    assert (await one.runs.get(tid, queued["run_id"]))["status"] == "success"


async def test_rollback_across_processes(clients: tuple[Any, Any]) -> None:
    one, two = clients
    tid = (await one.threads.create())["thread_id"]
    assert (await one.runs.wait(tid, "counter", input={"stop": 3}))["n"] == 3
    busy = await _busy_on(one, tid, above=4)
    out = await two.runs.wait(tid, "counter", input={"stop": 0}, multitask_strategy="rollback")
    assert out["n"] == 4
    for client in (one, two):
        assert await refused(client.runs.get(tid, busy["run_id"]), 404)
    history = await one.threads.get_history(tid, limit=1000)
    assert not [h for h in history if h["metadata"].get("run_id") == busy["run_id"]]


async def test_concurrent_resumes_on_two_servers_apply_once(clients: tuple[Any, Any]) -> None:
    from test_protocol import refund_json

    one, two = clients
    tid = (await one.threads.create())["thread_id"]
    await one.runs.wait(tid, "refund", input=refund_json())

    async def decide(client: Any, action: dict[str, Any]) -> int:
        try:
            await client.runs.wait(tid, "refund", command={"resume": action})
        except Exception as exc:  # noqa: BLE001 - the status code is what we compare
            return int(exc.response.status_code)  # type: ignore[attr-defined]
        return 200

    codes = await asyncio.gather(decide(one, {"action": "approve"}),
                                 decide(two, {"action": "reject", "reason": "no"}))
    assert sorted(codes) == [200, 409]
    reviews = (await one.threads.get_state(tid))["values"]["reviews"]
    assert len(reviews) == 1


async def test_a_run_whose_server_died_ends_as_error_and_frees_the_thread(
        tmp_path: Any, database: str, clients: tuple[Any, Any]) -> None:
    one, _ = clients
    with live_server(tmp_path, database_url=database, specs=SPECS, config=CONFIG) as doomed:
        async with get_client(url=doomed.url, api_key=KEY_ACME) as three:
            tid = (await three.threads.create())["thread_id"]
            busy = await _busy_on(three, tid)
        doomed.proc.kill()  # no drain, no release: the lease runs out
        doomed.proc.wait()
    assert (await one.runs.get(tid, busy["run_id"]))["status"] == "running"
    out = await one.runs.join(tid, busy["run_id"])
    assert "stopped" in out["__error__"]["message"]
    assert (await one.runs.get(tid, busy["run_id"]))["status"] == "error"
    assert (await one.threads.get(tid))["status"] == "interrupted"  # pending work, no holder
    # the thread is free again: a new run takes it (reject: no one holds it)
    resumed = await one.runs.create(tid, "counter", input={"stop": 0})
    assert (await one.runs.join(tid, resumed["run_id"]))["n"] >= 2
    assert (await one.runs.get(tid, resumed["run_id"]))["status"] == "success"
    assert (await one.threads.get(tid))["status"] == "idle"
