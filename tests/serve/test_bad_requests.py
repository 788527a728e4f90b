"""Client mistakes against the app in process (SQLite): each is a 4xx with the reason.

A 500 here is a server fault a client can trigger at will; it also drops the client's
keep-alive connection. After every mistake the tenant's listings must still answer.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from relaygraph.graphs.examples.refund import refund_input
from relaygraph.serve import Principal
from relaygraph.serve._config import ServerConfig
from relaygraph.serve._server import build_app

KEY = "acme-key-0123456789abcdef"
SPECS = ["refund=relaygraph.graphs.examples.refund:build_refund_graph",
         "counter=_protocol_graphs:counter_graph"]
JSON = {"content-type": "application/json"}


def refund_json() -> dict[str, Any]:
    return {"messages": [{"type": m.type, "content": m.content}
                         for m in refund_input()["messages"]]}


@pytest.fixture
async def http(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    config = ServerConfig(keys={KEY: Principal("acme", "ana")})
    app = build_app(config, SPECS, database_url=f"sqlite:///{tmp_path / 'serve.db'}")
    transport = httpx.ASGITransport(app, raise_app_exceptions=False)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=transport, base_url="http://relaygraph.test",
            headers={"x-api-key": KEY}, timeout=60) as client:
        yield client


async def listings_answer(http: httpx.AsyncClient) -> bool:
    for page in (http.get("/threads"), http.post("/threads/search", json={"limit": 100}),
                 http.post("/threads/count", json={})):
        r = await page
        assert r.status_code == 200, r.text
    return True


@pytest.mark.parametrize("path", ["/graphs/counter/invoke", "/graphs/counter/batch",
                                  "/graphs/counter/stream", "/graphs/counter/stream_events"])
async def test_malformed_json_to_langserve_routes_is_422(http: httpx.AsyncClient,
                                                          path: str) -> None:
    r = await http.post(path, content=b'{"input": ', headers=JSON)
    assert r.status_code == 422 and "Invalid JSON body" in r.text, r.text


@pytest.mark.parametrize("body", [b'{"limit": 1e400}', b'{"offset": -1e400}',
                                  b'{"metadata": {"a": 1}, "limit": NaN}'])
async def test_validation_errors_on_non_finite_numbers_are_422(http: httpx.AsyncClient,
                                                                body: bytes) -> None:
    r = await http.post("/threads/search", content=body, headers=JSON)
    assert r.status_code == 422 and "finite number" in r.text, r.text
    r.json()  # the error response is JSON itself
    assert await listings_answer(http)


async def test_offsets_past_what_sql_takes_are_422(http: httpx.AsyncClient) -> None:
    huge = 2**64
    r = await http.post("/threads/search", json={"offset": huge})
    assert r.status_code == 422 and "offset" in r.text, r.text
    assert (await http.post("/threads/search", json={"offset": 2**63 - 1})).json() == []
    tid = (await http.post("/threads", json={})).json()["thread_id"]
    r = await http.get(f"/threads/{tid}/runs", params={"offset": huge})
    assert r.status_code == 422 and "offset" in r.text, r.text
    r = await http.post("/assistants/search", json={"offset": huge})
    assert r.status_code == 422 and "offset" in r.text, r.text
    assert await listings_answer(http)


def surrogate(body: str) -> dict[str, Any]:
    """A JSON body with a ``\\ud800`` escape (what ``json.dumps`` writes for a lone one)."""
    return {"content": body.encode(), "headers": JSON}


async def test_lone_surrogates_in_bodies_are_422_and_nothing_is_stored(
        http: httpx.AsyncClient) -> None:
    tid = (await http.post("/threads", json={})).json()["thread_id"]
    cases = [
        ("POST", "/threads", '{"metadata": {"note": "x\\ud800"}}', "metadata.note"),
        ("POST", "/threads", '{"metadata": {"\\udfff": 1}}', "(the key)"),
        ("PATCH", f"/threads/{tid}", '{"metadata": {"a": "\\ud800"}}', "metadata.a"),
        ("POST", "/threads/search", '{"metadata": {"a": "\\ud800"}}', "metadata.a"),
        ("POST", f"/threads/{tid}/runs/wait",
         '{"assistant_id": "counter", "input": {"stop": 1}, "metadata": {"m": ["\\ud800"]}}',
         "metadata.m[0]"),
        ("POST", "/graphs/counter/invoke",
         '{"input": {"stop": 1}, "config": {"configurable": {"thread_id": "ls"}, '
         '"metadata": {"m": "\\ud800"}}}', "config.metadata.m"),
    ]
    for method, path, body, where in cases:
        r = await http.request(method, path, **surrogate(body))
        assert r.status_code == 422 and "lone surrogate" in r.text and where in r.text, \
            (path, r.text)
    assert await listings_answer(http)
    assert [t["thread_id"] for t in (await http.post("/threads/search", json={})).json()] \
        == [tid]
    assert (await http.get(f"/threads/{tid}")).json()["metadata"] == {}
    # a surrogate pair is fine
    r = await http.post("/threads", **surrogate('{"metadata": {"emoji": "\\ud83d\\ude00"}}'))
    assert r.status_code == 200 and r.json()["metadata"]["emoji"] == "\U0001F600"


async def test_a_review_with_a_lone_surrogate_is_422_and_the_review_stays_open(
        http: httpx.AsyncClient) -> None:
    tid = (await http.post("/threads", json={})).json()["thread_id"]
    r = await http.post(f"/threads/{tid}/runs/wait",
                        json={"assistant_id": "refund", "input": refund_json()})
    assert "__interrupt__" in r.json(), r.text
    r = await http.post(f"/reviews/{tid}", **surrogate('{"action": "reject", '
                                                        '"reason": "\\ud800"}'))
    assert r.status_code == 422 and "reason" in r.text, r.text
    assert (await http.get(f"/threads/{tid}")).json()["status"] == "interrupted"
    assert await listings_answer(http)


async def paused_refund(http: httpx.AsyncClient) -> str:
    tid = (await http.post("/threads", json={})).json()["thread_id"]
    r = await http.post(f"/threads/{tid}/runs/wait",
                        json={"assistant_id": "refund", "input": refund_json()})
    assert "__interrupt__" in r.json(), r.text
    return str(tid)


@pytest.mark.parametrize("resume", ["approve", 5, [], True])
async def test_a_review_resume_that_is_not_a_decision_is_422(http: httpx.AsyncClient,
                                                             resume: Any) -> None:
    tid = await paused_refund(http)
    r = await http.post(f"/threads/{tid}/runs/wait",
                        json={"assistant_id": "refund", "command": {"resume": resume}})
    assert r.status_code == 422 and "not a review decision" in r.text, r.text
    runs = (await http.get(f"/threads/{tid}/runs")).json()
    assert [run["status"] for run in runs] == ["success"]  # the refused resume made no run
    assert (await http.get(f"/threads/{tid}/state")).json()["next"] == ["review"]


@pytest.mark.parametrize("command", [{}, {"resume": None}, {"goto": None, "update": None}])
async def test_an_empty_command_is_422(http: httpx.AsyncClient, command: Any) -> None:
    tid = await paused_refund(http)
    r = await http.post(f"/threads/{tid}/runs/wait",
                        json={"assistant_id": "refund", "command": command})
    assert r.status_code == 422 and "command" in r.text, r.text
    assert (await http.get(f"/threads/{tid}/state")).json()["next"] == ["review"]


async def test_an_empty_command_to_langserve_is_422(http: httpx.AsyncClient) -> None:
    """``RemoteRunnable`` sends a ``Command`` as its four fields."""
    config = {"configurable": {"thread_id": "ls-empty"}}
    r = await http.post("/graphs/counter/invoke", json={"input": {"stop": 1}, "config": config})
    assert r.status_code == 200, r.text
    empty = {"graph": None, "update": None, "resume": None, "goto": []}
    r = await http.post("/graphs/counter/invoke", json={"input": empty, "config": config})
    assert r.status_code == 422 and "command" in r.text.lower(), r.text


async def test_an_unknown_checkpoint_id_is_404_and_the_thread_keeps_its_state(
        http: httpx.AsyncClient) -> None:
    tid = (await http.post("/threads", json={})).json()["thread_id"]
    r = await http.post(f"/threads/{tid}/runs/wait",
                        json={"assistant_id": "counter", "input": {"stop": 3}})
    assert r.json()["n"] == 3, r.text
    before = (await http.get(f"/threads/{tid}/state")).json()
    attempts = [
        http.post(f"/threads/{tid}/state", json={"values": {"n": 0}, "checkpoint_id": "nope"}),
        http.post(f"/threads/{tid}/state",
                  json={"values": {"n": 0}, "checkpoint": {"checkpoint_id": "nope"}}),
        http.post(f"/threads/{tid}/runs/wait", json={"assistant_id": "counter",
                                                     "input": {"stop": 0},
                                                     "checkpoint_id": "nope"}),
        http.post(f"/threads/{tid}/runs", json={"assistant_id": "counter", "input": {"stop": 0},
                                                "checkpoint": {"checkpoint_id": "nope"}}),
    ]
    for attempt in attempts:
        r = await attempt
        assert r.status_code == 404 and "checkpoint 'nope' not found" in r.text, r.text
    assert (await http.get(f"/threads/{tid}/state")).json() == before
    assert len((await http.get(f"/threads/{tid}/runs")).json()) == 1
    # a checkpoint the thread has still works
    cid = before["parent_checkpoint"]["checkpoint_id"]
    r = await http.post(f"/threads/{tid}/state", json={"values": {"n": 10}, "checkpoint_id": cid})
    assert r.status_code == 200, r.text
    assert (await http.get(f"/threads/{tid}/state")).json()["values"]["n"] == 10


async def test_streamed_configs_name_the_clients_thread_id(http: httpx.AsyncClient) -> None:
    """``checkpoints``, ``debug`` and ``events`` carry run configs: a client reuses them
    (time travel), so they must hold its own thread id, not the tenant-namespaced one."""
    tid = (await http.post("/threads", json={})).json()["thread_id"]
    r = await http.post(f"/threads/{tid}/runs/stream", json={
        "assistant_id": "counter", "input": {"stop": 1},
        "stream_mode": ["checkpoints", "debug", "events"]})
    assert r.status_code == 200 and "event: checkpoints" in r.text and "event: debug" in r.text
    assert f'"thread_id":"{tid}"' in r.text.replace(" ", "")
    assert "acme/" not in r.text


async def test_run_errors_name_the_clients_thread_id(tmp_path: Path) -> None:
    from relaygraph.serve import ServerSettings

    config = ServerConfig(keys={KEY: Principal("acme", "ana")},
                          settings=ServerSettings(enqueue_wait=0.2))
    app = build_app(config, SPECS, database_url=f"sqlite:///{tmp_path / 'serve.db'}")
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app), base_url="http://relaygraph.test",
            headers={"x-api-key": KEY}, timeout=60) as http:
        tid = (await http.post("/threads", json={})).json()["thread_id"]
        long = (await http.post(f"/threads/{tid}/runs", json={
            "assistant_id": "counter", "input": {"stop": 10**6},
            "config": {"recursion_limit": 10**7}})).json()
        r = await http.post(f"/threads/{tid}/runs/wait", json={
            "assistant_id": "counter", "input": {"stop": 0}, "multitask_strategy": "enqueue"})
        error = r.json()["__error__"]
        assert tid in error["message"] and "acme/" not in error["message"], error
        queued = (await http.get(f"/threads/{tid}/runs")).json()[0]
        assert queued["status"] == "error" and "acme/" not in queued["error"], queued
        await http.post(f"/threads/{tid}/runs/{long['run_id']}/cancel", params={"wait": True})


@pytest.mark.parametrize("limit", [0, -1, "ten", 2.5, True])
async def test_a_bad_recursion_limit_is_422(http: httpx.AsyncClient, limit: Any) -> None:
    tid = (await http.post("/threads", json={})).json()["thread_id"]
    r = await http.post(f"/threads/{tid}/runs/wait", json={
        "assistant_id": "counter", "input": {"stop": 1}, "config": {"recursion_limit": limit}})
    assert r.status_code == 422 and "recursion_limit" in r.text, r.text
    assert (await http.get(f"/threads/{tid}/runs")).json() == []


@pytest.mark.parametrize("config", [{"configurable": "y"}, {"metadata": ["x"]},
                                    {"configurable": [["a", 1]]}])
async def test_a_run_config_whose_parts_are_not_objects_is_422(http: httpx.AsyncClient,
                                                               config: Any) -> None:
    tid = (await http.post("/threads", json={})).json()["thread_id"]
    r = await http.post(f"/threads/{tid}/runs/wait", json={
        "assistant_id": "counter", "input": {"stop": 1}, "config": config})
    assert r.status_code == 422 and "config." in r.text, r.text
    assert (await http.get(f"/threads/{tid}/runs")).json() == []


@pytest.mark.parametrize("part", ["interrupt_before", "interrupt_after"])
async def test_an_interrupt_at_a_node_the_graph_lacks_is_422(http: httpx.AsyncClient,
                                                             part: str) -> None:
    tid = (await http.post("/threads", json={})).json()["thread_id"]
    r = await http.post(f"/threads/{tid}/runs/wait", json={
        "assistant_id": "counter", "input": {"stop": 1}, part: ["tikc"]})
    assert r.status_code == 422, r.text
    assert f"{part}: graph 'counter' has no node 'tikc'; its nodes are 'tick'" in r.text
    assert (await http.get(f"/threads/{tid}/runs")).json() == []
    # the node's own name and '*' are taken
    for names in (["tick"], "*"):
        other = (await http.post("/threads", json={})).json()["thread_id"]
        r = await http.post(f"/threads/{other}/runs/wait", json={
            "assistant_id": "counter", "input": {"stop": 1}, part: names})
        assert r.status_code == 200, r.text
        if part == "interrupt_before":
            assert (await http.get(f"/threads/{other}/state")).json()["next"] == ["tick"]


async def test_a_scheduled_run_answers_at_once_as_pending(http: httpx.AsyncClient) -> None:
    tid = (await http.post("/threads", json={})).json()["thread_id"]
    started = time.monotonic()
    run = (await http.post(f"/threads/{tid}/runs", json={
        "assistant_id": "counter", "input": {"stop": 1}, "after_seconds": 30})).json()
    assert time.monotonic() - started < 10
    assert run["status"] == "pending", run
    # the thread has a run waiting: another scheduled 'reject' run is refused at once
    r = await http.post(f"/threads/{tid}/runs", json={
        "assistant_id": "counter", "input": {"stop": 1}, "after_seconds": 30})
    assert r.status_code == 409, r.text
    assert f"thread '{tid}' has a pending run ({run['run_id']})" in r.text
    await http.post(f"/threads/{tid}/runs/{run['run_id']}/cancel", params={"wait": True})
    # one that is due soon runs once its delay is over
    soon = (await http.post(f"/threads/{tid}/runs", json={
        "assistant_id": "counter", "input": {"stop": 1}, "after_seconds": 0.2})).json()
    assert soon["status"] == "pending"
    await http.get(f"/threads/{tid}/runs/{soon['run_id']}/join")
    done = (await http.get(f"/threads/{tid}/runs/{soon['run_id']}")).json()
    assert done["status"] == "success", done
