"""A real server (uvicorn subprocess on loopback, SQLite): every bad input of the issue.

Each bad request gets its 4xx with a reason, and the listing pages stay 200 afterwards.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from _serve_live import KEY_ACME, KEY_ACME_BOB, KEY_GLOBEX, Live, live_server

from relaygraph.graphs.examples import EXAMPLES

SPECS = ["refund=relaygraph.graphs.examples.refund:build_refund_graph",
         "gate=_serve_graphs:gate_graph", "loop=_serve_graphs:loop_graph"]
CONFIG = """
[limits]
max_body_bytes = 20000
run_timeout = 60
"""


def refund_input() -> dict[str, Any]:
    inp = EXAMPLES["refund"].make_input()
    inp["messages"] = [{"type": m.type, "content": m.content} for m in inp["messages"]]
    return inp


def invoke(c: httpx.Client, graph: str, thread: Any, inp: Any) -> httpx.Response:
    config = {"configurable": {"thread_id": thread}} if thread is not None else {}
    return c.post(f"/graphs/{graph}/invoke", json={"input": inp, "config": config})


def invoke_new_client(live: Live, graph: str, thread: str, inp: Any) -> httpx.Response:
    with live.client(KEY_ACME) as c:
        return invoke(c, graph, thread, inp)


def start_review(c: httpx.Client, thread: str) -> dict[str, Any]:
    r = invoke(c, "refund", thread, refund_input())
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture(scope="module")
def tmp_module(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("serve")


@pytest.fixture(scope="module")
def live(tmp_module: Path) -> Iterator[Live]:
    gate = tmp_module / "gate"
    with live_server(tmp_module, database_url=f"sqlite:///{tmp_module / 'serve.db'}",
                     specs=SPECS, config=CONFIG,
                     env={"RELAYGRAPH_TEST_GATE": str(gate)}) as server:
        yield server
        # no request of this module made the server fail, except the one that reads a
        # thread whose checkpoint was deliberately corrupted
        failures = [line for line in server.output().splitlines()
                    if line.startswith("server error on")]
        assert failures in ([], ["server error on POST /reviews/broken-1"]), failures
        assert "Exception in ASGI application" not in server.output()


@pytest.fixture
def acme(live: Live) -> Iterator[httpx.Client]:
    with live.client(KEY_ACME) as c:
        yield c
    assert_listings_ok(live)


def assert_listings_ok(live: Live) -> None:
    """The listing pages answer 200 for every tenant, whatever happened before."""
    for key in (KEY_ACME, KEY_GLOBEX):
        with live.client(key) as c:
            for path in ("/reviews", "/threads", "/reviews?limit=1"):
                r = c.get(path)
                assert r.status_code == 200, (path, r.status_code, r.text)


def test_health_needs_no_key_and_everything_else_does(live: Live) -> None:
    with live.client(None) as anon:
        assert anon.get("/health").json() == {"status": "ok"}
        assert anon.get("/ready").status_code == 200
        for method, path in [("GET", "/reviews"), ("GET", "/threads"),
                             ("POST", "/reviews/t"), ("POST", "/graphs/refund/invoke")]:
            r = anon.request(method, path, json={})
            assert r.status_code == 401, (path, r.text)
            assert "x-api-key" in r.json()["detail"]
    with live.client("wrong-key-0123456789abcdef") as wrong:
        assert wrong.get("/reviews").status_code == 401
        assert invoke(wrong, "refund", "t", refund_input()).status_code == 401
    # a key that is a prefix of a real one is no key
    with live.client(KEY_ACME[:-1]) as prefix:
        assert prefix.get("/reviews").status_code == 401
    assert_listings_ok(live)


def test_another_tenants_thread_is_404(live: Live, acme: httpx.Client) -> None:
    start_review(acme, "shared-1")
    with live.client(KEY_GLOBEX) as globex:
        r = globex.post("/reviews/shared-1", json={"action": "approve"})
        assert r.status_code == 404, r.text
        assert globex.get("/reviews").json()["reviews"] == []
        assert globex.get("/threads/shared-1").status_code == 404
        assert all(t["thread_id"] != "shared-1"
                   for t in globex.get("/threads").json()["threads"])
        # the same client id in another tenant is another thread: nothing to resume there
        r = invoke(globex, "refund", "shared-1", {"resume": {"action": "approve"},
                                                  "update": None, "goto": [], "graph": None})
        assert r.status_code == 409, r.text
    mine = acme.get("/reviews").json()["reviews"]
    assert [x["thread_id"] for x in mine if x["thread_id"] == "shared-1"] == ["shared-1"]


def test_malformed_bodies_are_422_with_the_reason(live: Live, acme: httpx.Client) -> None:
    start_review(acme, "bad-1")
    r = acme.post("/reviews/bad-1", json={"action": "maybe"})
    assert r.status_code == 422 and "maybe" in r.text
    r = acme.post("/reviews/bad-1", json={"action": "edit", "edits": {"amount": "lots"}})
    assert r.status_code == 422 and "amount" in r.text
    r = acme.post("/reviews/bad-1", json={"action": "approve", "reviewer": "mallory"})
    assert r.status_code == 422 and "authenticated identity" in r.text
    r = acme.post("/reviews/bad-1", json=["approve"])
    assert r.status_code == 422
    # an unknown message type is refused before anything is written
    r = invoke(acme, "refund", "bad-2", {"messages": [{"type": "alien", "content": "hi"}]})
    assert r.status_code == 422 and "messages" in r.text, r.text
    assert acme.get("/threads/bad-2").status_code == 404
    r = invoke(acme, "refund", None, refund_input())
    assert r.status_code == 422 and "thread_id" in r.text
    r = acme.post("/graphs/refund/invoke", content=b'{"input": {"messages": "\xff\xfe"}}',
                  headers={"content-type": "application/json"})
    assert 400 <= r.status_code < 500, r.text
    r = acme.post("/reviews/bad-1", content=b'{"action": "appr\xffove"}',
                  headers={"content-type": "application/json"})
    assert 400 <= r.status_code < 500, r.text
    r = acme.get("/reviews", params={"cursor": "not-a-cursor"})
    assert r.status_code == 422 and "cursor" in r.text
    r = acme.get("/reviews", params={"limit": 0})
    assert r.status_code == 422
    # nothing above changed the waiting thread
    assert [x["thread_id"] for x in acme.get("/reviews").json()["reviews"]].count("bad-1") == 1


def test_new_input_on_a_waiting_thread_is_409_not_a_restart(acme: httpx.Client) -> None:
    start_review(acme, "wait-1")
    r = invoke(acme, "refund", "wait-1", refund_input())
    assert r.status_code == 409 and "Command(resume" in r.text
    body = {"input": refund_input(), "config": {"configurable": {"thread_id": "wait-1"}}}
    for endpoint in ("stream", "stream_events", "stream_log"):  # before the stream starts
        r = acme.post(f"/graphs/refund/{endpoint}", json=body)
        assert r.status_code == 409 and "Command(resume" in r.text, (endpoint, r.text)
    alien = {"input": {"messages": [{"type": "alien", "content": "hi"}]},
             "config": {"configurable": {"thread_id": "wait-2"}}}
    r = acme.post("/graphs/refund/stream", json=alien)
    assert r.status_code == 422 and "alien" in r.text
    r = acme.post("/graphs/refund/stream", json={"input": refund_input()})
    assert r.status_code == 422 and "thread_id" in r.text
    reviews = [x for x in acme.get("/reviews").json()["reviews"] if x["thread_id"] == "wait-1"]
    assert len(reviews) == 1


def test_resuming_a_thread_that_is_not_waiting_is_409(acme: httpx.Client) -> None:
    start_review(acme, "done-1")
    ok = acme.post("/reviews/done-1", json={"action": "approve"})
    assert ok.status_code == 200, ok.text
    assert ok.json()["values"]["reviews"][-1]["reviewer"] == "ana"
    again = acme.post("/reviews/done-1", json={"action": "reject", "reason": "late"})
    assert again.status_code == 409 and "not waiting" in again.text
    r = invoke(acme, "refund", "done-1", {"resume": {"action": "approve"}, "update": None,
                                          "goto": [], "graph": None})
    assert r.status_code == 409 and "not waiting" in r.text
    assert acme.post("/reviews/never-1", json={"action": "approve"}).status_code == 404


def test_two_decisions_at_once_give_one_200_and_one_409(live: Live, acme: httpx.Client) -> None:
    bodies = [{"action": "approve"}, {"action": "reject", "reason": "duplicate"}]
    keys = [KEY_ACME, KEY_ACME_BOB]
    for i in range(3):
        thread = f"race-{i}"
        start_review(acme, thread)

        def decide(n: int, thread: str = thread) -> httpx.Response:
            with live.client(keys[n]) as c:
                return c.post(f"/reviews/{thread}", json=bodies[n])

        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            results = list(pool.map(decide, range(2)))
        codes = sorted(r.status_code for r in results)
        assert codes == [200, 409], [r.text for r in results]
        winner = next(r for r in results if r.status_code == 200).json()
        assert len(winner["values"]["reviews"]) == 1  # exactly one decision recorded


def test_a_run_or_review_on_a_busy_thread_is_409(live: Live, acme: httpx.Client,
                                                 tmp_module: Path) -> None:
    gate = tmp_module / "gate"
    gate.unlink(missing_ok=True)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        running = pool.submit(invoke_new_client, live, "gate", "busy-1", {"n": 0})
        for _ in range(600):  # until the run holds the thread (the listing says so)
            rows = acme.get("/threads", params={"graph": "gate"}).json()["threads"]
            if any(t["thread_id"] == "busy-1" and t["status"] == "running" for t in rows):
                break
            assert not running.done(), running.result().text
            concurrent.futures.wait([running], timeout=0.05)
        else:
            pytest.fail("the gated run never showed as running")
        r = invoke(acme, "gate", "busy-1", {"n": 5})
        assert r.status_code == 409 and "busy" in r.text, r.text
        r = acme.post("/reviews/busy-1", json={"action": "approve"})
        assert r.status_code == 409 and "busy" in r.text, r.text
        assert_listings_ok(live)
        # enqueue: the decision waits for the run, then finds a question, not a review
        with live.client(KEY_ACME) as other:
            queued = pool.submit(other.post, "/reviews/busy-1", json={"action": "approve"},
                                 params={"multitask_strategy": "enqueue"})
            concurrent.futures.wait([queued], timeout=0.3)
            assert not queued.done()
            gate.touch()
            first = running.result(timeout=60)
            late = queued.result(timeout=60)
    assert first.status_code == 200, first.text
    assert first.json()["output"]["n"] == 1  # the second run never ran
    assert late.status_code == 409 and "not waiting for a review" in late.text, late.text


def test_oversized_bodies_are_413(acme: httpx.Client) -> None:
    big = {"input": {"messages": [{"type": "human", "content": "x" * 30_000}]},
           "config": {"configurable": {"thread_id": "big-1"}}}
    r = acme.post("/graphs/refund/invoke", json=big)
    assert r.status_code == 413 and "max_body_bytes" in r.text

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield b'{"action": "reject", "reason": "'
        for _ in range(30):
            yield b"y" * 1000
        yield b'"}'

    r = acme.post("/reviews/big-1", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413


@pytest.mark.parametrize("thread_id", ["nul\x00id", "lone\ud800surrogate", "a/b", "x" * 10_000,
                                       "", "tab\tid"])
def test_bad_thread_ids_in_a_run_config_are_4xx(acme: httpx.Client, thread_id: str) -> None:
    import json

    body = json.dumps({"input": refund_input(),
                       "config": {"configurable": {"thread_id": thread_id}}})
    r = acme.post("/graphs/refund/invoke", content=body.encode("utf-8", "surrogatepass"),
                  headers={"content-type": "application/json"})
    assert 400 <= r.status_code < 500, r.text
    assert "thread_id" in r.text or r.status_code == 413


@pytest.mark.parametrize("raw_path", ["/reviews/nul%00id", "/reviews/lone%ED%A0%80x",
                                      "/reviews/a%2Fb", "/reviews/" + "x" * 10_000])
def test_bad_thread_ids_in_a_path_are_4xx(live: Live, acme: httpx.Client, raw_path: str) -> None:
    r = acme.post(httpx.URL(live.url + raw_path), json={"action": "approve"})
    assert 400 <= r.status_code < 500, r.text


def test_an_unreadable_thread_is_an_error_row_not_a_broken_page(
        live: Live, acme: httpx.Client, tmp_module: Path) -> None:
    from relaygraph.checkpointers._schema import checkpoints

    start_review(acme, "broken-1")
    start_review(acme, "fine-1")
    engine = sa.create_engine(f"sqlite:///{tmp_module / 'serve.db'}")
    with engine.begin() as conn:
        n = conn.execute(checkpoints.update().where(
            checkpoints.c.thread_id == "acme/broken-1").values(checkpoint=b"\x00garbage")
        ).rowcount
    engine.dispose()
    assert n > 0
    r = acme.post("/reviews/broken-1", json={"action": "approve"})
    assert r.status_code >= 400
    rows = {t["thread_id"]: t for t in acme.get("/threads").json()["threads"]}
    assert rows["broken-1"]["status"] == "error" and "cannot be read" in rows["broken-1"]["error"]
    assert rows["fine-1"]["status"] == "waiting"
    assert "fine-1" in {x["thread_id"] for x in acme.get("/reviews").json()["reviews"]}


def test_pages_are_cursor_paginated(acme: httpx.Client) -> None:
    for i in range(5):
        start_review(acme, f"page-{i}")
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = acme.get("/reviews", params=params).json()
        assert len(page["reviews"]) <= 2
        seen += [x["thread_id"] for x in page["reviews"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen))
    assert {f"page-{i}" for i in range(5)} <= set(seen)


def test_run_timeout_stops_at_a_step_boundary(tmp_path: Path) -> None:
    config = "[limits]\nrun_timeout = 1\n"
    with live_server(tmp_path, database_url=f"sqlite:///{tmp_path / 't.db'}",
                     specs=["loop=_serve_graphs:loop_graph"], config=config) as server:
        with server.client() as c:
            r = invoke(c, "loop", "slow-1", {"n": 0})
            assert r.status_code == 408, r.text
            assert "run_timeout" in r.text and "step boundary" in r.text
            row = next(t for t in c.get("/threads").json()["threads"]
                       if t["thread_id"] == "slow-1")
            assert row["status"] == "interrupted" and row["next"] == ["tick"]
            n1 = c.get("/threads/slow-1/state").json()["values"]["n"]
            assert 0 < n1 < 10_000
            # continuing (input None) picks up from the checkpoint, not from scratch
            r = invoke(c, "loop", "slow-1", None)
            assert r.status_code == 408
            assert c.get("/threads/slow-1/state").json()["values"]["n"] > n1


def test_sigterm_drains_running_runs_and_exits(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'd.db'}"
    with live_server(tmp_path, database_url=db, specs=["loop=_serve_graphs:loop_graph"]
                     ) as server:
        with concurrent.futures.ThreadPoolExecutor(1) as pool, server.client() as c:
            running = pool.submit(invoke_new_client, server, "loop", "drain-1", {"n": 0})
            # running, with a step saved (a loaded machine may take a while to save one)
            for _ in range(600):
                rows = c.get("/threads").json()["threads"]
                if rows and rows[0]["status"] == "running" and c.get(
                        "/threads/drain-1/state").json()["values"].get("n", 0) > 0:
                    break
                concurrent.futures.wait([running], timeout=0.05)
            server.proc.send_signal(signal.SIGTERM)
            r = running.result(timeout=60)
            assert r.status_code == 503 and "shutting down" in r.text, r.text
            # uvicorn re-raises the signal after a clean shutdown
            assert server.proc.wait(timeout=30) in (0, -signal.SIGTERM), server.output()
            assert "Traceback" not in server.output()
    with live_server(tmp_path, database_url=db, specs=["loop=_serve_graphs:loop_graph"]
                     ) as server, server.client() as c:
        row = c.get("/threads").json()["threads"][0]
        assert row["thread_id"] == "drain-1" and row["status"] == "interrupted"
        assert c.get("/threads/drain-1/state").json()["values"]["n"] > 0


def test_examples_served_when_no_graph_is_named(tmp_path: Path) -> None:
    with live_server(tmp_path, database_url=f"sqlite:///{tmp_path / 'e.db'}") as server, \
            server.client() as c:
        assert c.get("/ready").json()["graphs"] == sorted(EXAMPLES)
        assert os.path.exists(tmp_path / "e.db")


def test_remote_runnable_pauses_at_review_and_command_resumes(live: Live) -> None:
    from langchain_core.messages import HumanMessage
    from langgraph.types import Command
    from langserve import RemoteRunnable

    remote = RemoteRunnable(f"{live.url}/graphs/refund", headers={"x-api-key": KEY_ACME_BOB},
                            timeout=60)
    try:
        _remote_flow(live, remote, Command, HumanMessage)
    finally:
        remote.sync_client.close()


def _remote_flow(live: Live, remote: Any, Command: Any, HumanMessage: Any) -> None:  # noqa: N803
    config = {"configurable": {"thread_id": "remote-1"}}
    out = remote.invoke(EXAMPLES["refund"].make_input(), config=config)
    assert out["resolution"]["order_id"] == "A-10293"
    assert out["__interrupt__"][0]["value"]["kind"] == "human_review"
    # new input on the waiting thread is refused, not a silent restart
    with pytest.raises(httpx.HTTPStatusError) as refused:
        remote.invoke({"messages": [HumanMessage("start over")]}, config=config)
    assert refused.value.response.status_code == 409
    # Command(resume=...) resumes the waiting run, through the review path
    done = remote.invoke(Command(resume={"action": "approve", "comment": "ok"}), config=config)
    assert "__interrupt__" not in done
    assert [r["decision"] for r in done["reviews"]] == ["approve"]
    assert done["reviews"][-1]["reviewer"] == "bob"
    with live.client(KEY_ACME) as c:
        steps = [step["node"] for step in c.get("/threads/remote-1/history").json()]
    assert steps.count("intake") == 1  # the run was resumed, never restarted
    # a stream of a resumed run, and batch over two threads
    chunks = list(remote.stream(EXAMPLES["refund"].make_input(),
                                config={"configurable": {"thread_id": "remote-2"}}))
    assert chunks and "__interrupt__" in chunks[-1]
    async def collect() -> list[Any]:
        try:
            return [e async for e in remote.astream_events(
                EXAMPLES["refund"].make_input(), version="v2",
                config={"configurable": {"thread_id": "remote-5"}})]
        finally:
            await remote.async_client.aclose()

    events = asyncio.run(collect())
    assert any(e["event"] == "on_chain_stream" for e in events)
    assert events[-1]["event"] == "on_chain_end"
    outs = remote.batch([EXAMPLES["refund"].make_input()] * 2,
                        config=[{"configurable": {"thread_id": "remote-3"}},
                                {"configurable": {"thread_id": "remote-4"}}])
    assert all(o["resolution"]["order_id"] == "A-10293" for o in outs)
    with pytest.raises(httpx.HTTPStatusError) as wrong:
        remote.invoke(Command(resume={"action": "approve"}),
                      config={"configurable": {"thread_id": "never-started"}})
    assert wrong.value.response.status_code == 409


def test_playground_and_schemas_declare_the_thread(live: Live) -> None:
    with live.client() as c:
        schema = c.get("/graphs/refund/config_schema").json()
        assert "thread_id" in schema["$defs"]["Configurable"]["properties"]
        assert c.get("/graphs/refund/input_schema").status_code == 200
        assert c.get("/graphs/refund/output_schema").status_code == 200
        page = c.get("/graphs/refund/playground/")
        assert page.status_code == 200
        assert "cdn" not in page.text.lower()
