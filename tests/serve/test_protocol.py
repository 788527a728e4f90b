"""LangGraph's client protocol against a real server, with the real clients.

A uvicorn subprocess on a loopback port serves the refund example and a counter graph on
SQLite; ``langgraph_sdk`` (async and sync) and ``RemoteGraph`` talk to it unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from _serve_live import KEY_ACME, KEY_GLOBEX, Live, live_server
from langgraph.pregel.remote import RemoteGraph
from langgraph.types import Command
from langgraph_sdk import get_client, get_sync_client

from relaygraph.graphs.examples.refund import refund_input

SPECS = ["refund=relaygraph.graphs.examples.refund:build_refund_graph",
         "counter=_protocol_graphs:counter_graph",
         "nested=_protocol_graphs:nested_graph"]
CONFIG = """
[limits]
lease_ttl = 1.5
enqueue_wait = 60
run_timeout = 300
"""
FOREVER = 10**6
LONG = {"recursion_limit": 10**7}


def refund_json() -> dict[str, Any]:
    """The refund example's input as JSON messages (what a client sends)."""
    return {"messages": [{"type": m.type, "content": m.content}
                         for m in refund_input()["messages"]]}


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    tmp = tmp_path_factory.mktemp("protocol")
    with live_server(tmp, database_url=f"sqlite:///{tmp / 'relaygraph.db'}", specs=SPECS,
                     config=CONFIG) as server:
        yield server


@pytest.fixture
async def client(live: Live) -> Any:
    async with get_client(url=live.url, api_key=KEY_ACME) as c:
        yield c


@contextlib.asynccontextmanager
async def other_client(live: Live, key: str | None) -> Any:
    async with get_client(url=live.url, api_key=key) as c:
        yield c


@contextlib.contextmanager
def remote_graph(live: Live, assistant_id: str) -> Iterator[RemoteGraph]:
    """A RemoteGraph on its own clients, closed afterwards."""
    with get_sync_client(url=live.url, api_key=KEY_ACME) as sync:
        yield RemoteGraph(assistant_id, sync_client=sync)


async def refused(call: Any, status: int, reason: str = "") -> bool:
    """Whether the call fails with ``status`` and ``reason`` in the response body."""
    with pytest.raises(httpx.HTTPStatusError) as info:
        await call
    response = info.value.response
    assert response.status_code == status, response.text
    assert reason in response.text
    return True


async def until(predicate: Any, what: str, attempts: int = 600) -> Any:
    """Poll ``predicate`` (async) until it returns something truthy."""
    for _ in range(attempts):
        got = await predicate()
        if got:
            return got
        await asyncio.sleep(0.05)
    raise AssertionError(f"gave up waiting for {what}")


# ------------------------------------------------------------------- the refund example


async def test_refund_pauses_at_review_shows_the_interrupt_and_resumes(client: Any) -> None:
    thread = await client.threads.create(metadata={"case": "desk", "team": "refunds"})
    tid = thread["thread_id"]
    assert thread["status"] == "idle" and thread["metadata"]["case"] == "desk"

    out = await client.runs.wait(tid, "refund", input=refund_json())
    assert out["resolution"]["amount"] == "249.99"
    (pending,) = out["__interrupt__"]
    assert pending["value"]["kind"] == "human_review"

    state = await client.threads.get_state(tid)
    assert state["next"] == ["review"]
    assert state["checkpoint"]["thread_id"] == tid  # the client's id, not the stored one
    (task,) = [t for t in state["tasks"] if t["interrupts"]]
    assert task["name"] == "review"
    assert task["interrupts"][0]["id"] == pending["id"]
    assert state["interrupts"][0]["id"] == pending["id"]

    got = await client.threads.get(tid)
    assert got["status"] == "interrupted"
    assert [i["id"] for i in got["interrupts"][task["id"]]] == [pending["id"]]
    assert got["values"]["case"]["order_id"] == "A-10293"

    # the decision records the authenticated reviewer; the body cannot name another one
    mallory = {"resume": {"action": "approve", "reviewer": "mallory"}}
    assert await refused(client.runs.wait(tid, "refund", command=mallory), 422, "reviewer")
    edits = {"resume": {"action": "edit", "edits": {"amount": "lots"}}}
    assert await refused(client.runs.wait(tid, "refund", command=edits), 422, "amount")
    done = await client.runs.wait(tid, "refund", command={"resume": {"action": "approve"}})
    assert "__interrupt__" not in done
    assert done["reviews"][-1]["decision"] == "approve"
    assert done["reviews"][-1]["reviewer"] == "ana"

    after = await client.threads.get(tid)
    assert after["status"] == "idle" and after["interrupts"] == {}
    runs = await client.runs.list(tid)
    assert [r["status"] for r in runs] == ["success", "success"]
    assert {r["thread_id"] for r in runs} == {tid}

    history = await client.threads.get_history(tid, limit=100)
    assert history[0]["checkpoint"]["checkpoint_id"] == after_checkpoint(await
                                                                         client.threads.get_state(tid))
    assert len(history) > 6 and history[-1]["metadata"]["step"] == -1
    found = await client.threads.search(metadata={"case": "desk"})
    assert [t["thread_id"] for t in found] == [tid]
    assert await client.threads.search(metadata={"case": "chair"}) == []


def after_checkpoint(state: dict[str, Any]) -> str:
    return state["checkpoint"]["checkpoint_id"]  # type: ignore[no-any-return]


def test_refund_with_the_sync_client_background_run_join_and_stream(live: Live) -> None:
    with get_sync_client(url=live.url, api_key=KEY_ACME) as sync:
        _sync_refund(sync)


def _sync_refund(sync: Any) -> None:
    tid = sync.threads.create()["thread_id"]
    run = sync.runs.create(tid, "refund", input=refund_json())
    assert run["status"] in ("pending", "running", "success") and run["thread_id"] == tid
    joined = sync.runs.join(tid, run["run_id"])
    assert joined["__interrupt__"][0]["value"]["kind"] == "human_review"
    assert sync.runs.get(tid, run["run_id"])["status"] == "success"

    parts = list(sync.runs.stream(tid, "refund", command={"resume": {"action": "approve"}},
                                  stream_mode=["values", "updates"]))
    events = [p.event for p in parts]
    assert events[0] == "metadata"
    assert {"values", "updates"} <= set(events)
    assert any(p.event == "updates" and "review" in p.data for p in parts)
    final = [p.data for p in parts if p.event == "values"][-1]
    assert final["reviews"][-1]["decision"] == "approve"
    assert sync.threads.get(tid)["status"] == "idle"


def test_remote_graph_runs_pauses_and_resumes_the_refund(live: Live) -> None:
    with remote_graph(live, "refund") as remote:
        _remote_refund(remote)


def _remote_refund(remote: RemoteGraph) -> None:
    config: Any = {"configurable": {"thread_id": "remote-1"}}
    paused = remote.invoke(refund_json(), config)
    assert paused["__interrupt__"][0]["value"]["kind"] == "human_review"

    snap = remote.get_state(config)
    assert snap.next == ("review",)
    assert snap.interrupts[0].value["decision_kind"] == "refund"
    assert snap.config["configurable"]["thread_id"] == "remote-1"

    updates = list(remote.stream(Command(resume={"action": "reject", "reason": "no receipt"}),
                                 config, stream_mode="updates"))
    assert any("review" in u for u in updates)
    snap = remote.get_state(config)
    assert snap.next == ()
    assert snap.values["reviews"][-1]["decision"] == "reject"
    assert [s.config["configurable"]["thread_id"] for s in
            remote.get_state_history(config, limit=3)] == ["remote-1"] * 3

    drawn = remote.get_graph()
    assert {"intake", "review"} <= set(drawn.nodes)


async def test_remote_graph_async_and_stateless(live: Live) -> None:
    async with get_client(url=live.url, api_key=KEY_ACME) as c:
        remote = RemoteGraph("refund", client=c)
        config: Any = {"configurable": {"thread_id": "remote-async"}}
        paused = await remote.ainvoke(refund_json(), config)
        assert "__interrupt__" in paused
        done = await remote.ainvoke(Command(resume={"action": "approve"}), config)
        assert done["reviews"][-1]["decision"] == "approve"
        # no thread: a stateless run on a throwaway thread
        counted = await RemoteGraph("counter", client=c).ainvoke({"stop": 3})
        assert counted == {"n": 3, "stop": 3}


async def test_stream_modes_values_updates_messages_and_events(client: Any) -> None:
    tid = (await client.threads.create())["thread_id"]
    parts = [p async for p in client.runs.stream(
        tid, "refund", input=refund_json(),
        stream_mode=["values", "updates", "messages-tuple", "events"])]
    by_event: dict[str, list[Any]] = {}
    for p in parts:
        by_event.setdefault(p.event, []).append(p.data)
    assert parts[0].event == "metadata"
    assert set(by_event) == {"metadata", "values", "updates", "messages", "events"}
    kinds = {e["event"] for e in by_event["events"]}
    assert {"on_chain_start", "on_chain_end", "on_chat_model_start"} <= kinds
    assert "on_chain_stream" not in {e["event"] for e in by_event["events"]
                                     if not e.get("parent_ids")}
    message, meta = by_event["messages"][0]
    assert message["type"] in ("ai", "AIMessageChunk") and meta["langgraph_node"] == "intake"
    assert [list(u) for u in by_event["updates"]][:3] == [["intake"], ["to_resolver"],
                                                          ["check"]]
    assert by_event["updates"][-1]["__interrupt__"][0]["value"]["kind"] == "human_review"
    assert by_event["values"][-1]["__interrupt__"][0]["value"]["kind"] == "human_review"

    v2 = [p async for p in client.runs.stream(
        tid, "refund", command={"resume": {"action": "approve"}}, stream_mode="values",
        version="v2")]
    assert v2[-1]["type"] == "values" and v2[-1]["interrupts"] == []


async def test_subgraph_events_only_when_asked(client: Any) -> None:
    tid = (await client.threads.create())["thread_id"]
    flat = [p.event async for p in client.runs.stream(
        tid, "nested", input={"stop": 2}, stream_mode="updates")]
    assert flat == ["metadata", "updates"]
    deep = [p async for p in client.runs.stream(
        tid, "nested", input={"stop": 0}, stream_mode=["updates"], stream_subgraphs=True)]
    inner = [p for p in deep if p.event.startswith("updates|inner:")]
    assert [p.data for p in inner] == [{"tick": {"n": 3}}]
    assert deep[-1].event == "updates" and deep[-1].data["inner"]["n"] == 3


async def test_assistants_one_per_graph(client: Any) -> None:
    found = await client.assistants.search()
    assert sorted(a["assistant_id"] for a in found) == ["counter", "nested", "refund"]
    refund = await client.assistants.get("refund")
    assert refund["graph_id"] == "refund"
    drawn = await client.assistants.get_graph("refund")
    assert {"intake", "review"} <= {n["id"] for n in drawn["nodes"]}
    schemas = await client.assistants.get_schemas("counter")
    assert set(schemas["input_schema"]["properties"]) == {"n", "stop"}
    assert await refused(client.assistants.get("nope"), 404)
    assert await refused(client.assistants.update("refund", metadata={"a": 1}), 405, "fixed")
    assert await refused(client.assistants.delete("refund"), 405, "fixed")
    tid = (await client.threads.create())["thread_id"]
    assert await refused(_drain(await client.threads.join_stream(tid)), 501, "runs.stream")


# ---------------------------------------------------------------------------- bad input


async def test_missing_or_wrong_key_is_401(live: Live) -> None:
    for key in (None, "not-a-key-0123456789"):
        async with other_client(live, key) as anon:
            assert await refused(anon.threads.create(), 401)
            assert await refused(anon.assistants.search(), 401)


async def test_another_tenants_thread_is_404(live: Live, client: Any) -> None:
    tid = (await client.threads.create())["thread_id"]
    await client.runs.wait(tid, "counter", input={"stop": 2})
    async with other_client(live, KEY_GLOBEX) as other:
        await _as_other_tenant(client, other, tid)


async def _as_other_tenant(client: Any, other: Any, tid: str) -> None:
    assert await refused(other.threads.get(tid), 404)
    assert await refused(other.threads.get_state(tid), 404)
    assert await refused(other.runs.wait(tid, "counter", input={"stop": 0}), 404)
    assert await refused(other.runs.list(tid), 404)
    assert await other.threads.search() == []
    # the same id in the other tenant is another thread altogether
    mine = await other.threads.create(thread_id=tid)
    assert mine["thread_id"] == tid and mine["values"] is None
    assert (await client.threads.get(tid))["values"] == {"n": 2, "stop": 2}


async def test_resuming_a_thread_that_is_not_waiting_is_409(client: Any) -> None:
    tid = (await client.threads.create())["thread_id"]
    approve = {"resume": {"action": "approve"}}
    assert await refused(client.runs.wait(tid, "refund", command=approve), 409, "not waiting")
    await client.runs.wait(tid, "refund", input=refund_json())
    await client.runs.wait(tid, "refund", command=approve)
    late = {"resume": {"action": "reject", "reason": "late"}}  # the decision applies once
    assert await refused(client.runs.wait(tid, "refund", command=late), 409, "not waiting")
    assert (await client.threads.get_state(tid))["values"]["reviews"][-1]["decision"] == \
        "approve"


async def test_client_mistakes_are_4xx_with_the_reason(live: Live, client: Any) -> None:
    tid = (await client.threads.create())["thread_id"]
    await client.runs.wait(tid, "refund", input=refund_json())
    maybe = {"resume": {"action": "maybe"}}
    assert await refused(client.runs.wait(tid, "refund", command=maybe), 422, "action")
    wizard = {"messages": [{"type": "wizard", "content": "x"}]}
    assert await refused(client.runs.wait(tid, "refund", input=wizard), 422, "messages")
    assert await refused(client.runs.wait(tid, "nope", input={}), 404, "assistant")
    assert await refused(client.runs.wait("never-created", "counter", input={"stop": 1}),
                         404, "not found")
    assert await refused(client.threads.create(thread_id=tid), 409, "already exists")
    assert await refused(client.runs.create(tid, "counter", input={"stop": 1},
                                            webhook="http://127.0.0.1:9/hook"), 422, "webhook")
    assert await refused(client.threads.get("a/b"), 404)  # no such route
    for bad_id in ("a/b", "a\x00b", "x" * 10_000):
        assert await refused(client.threads.create(thread_id=bad_id), 422, "thread_id")
    assert await refused(client.threads.get("a\x00b"), 422, "thread_id")
    async with httpx.AsyncClient(base_url=live.url, headers={"x-api-key": KEY_ACME}) as raw:
        bad = await raw.post(f"/threads/{tid}/runs/wait", json={"assistant_id": "refund",
                                                           "stream_mode": "loudly"})
        assert bad.status_code == 422 and "stream_mode" in bad.text
        assert (await raw.post("/threads/search", json={"limit": "ten"})).status_code == 422
        surrogate = await raw.post("/threads", content=b'{"thread_id": "a\\ud800"}',
                                   headers={"content-type": "application/json"})
        assert surrogate.status_code == 422 and "surrogate" in surrogate.text
        assert (await raw.post("/threads", content=b"\xff\xfe")).status_code in (400, 422)
        # relaygraph's own listing still answers, and shows the thread waiting for review
        listing = (await raw.get("/threads")).json()["threads"]
        row = next(r for r in listing if r["thread_id"] == tid)
        assert row["status"] == "waiting" and row["graph_id"] == "refund"
        steps = (await raw.get(f"/threads/{tid}/history")).json()
        assert [s["node"] for s in steps][-1] == "review"
        assert (await raw.get(f"/threads/{tid}/timeline")).json()["thread_id"] == tid
    # the thread is still waiting on the same review
    assert (await client.threads.get(tid))["status"] == "interrupted"


async def test_update_state_and_delete(client: Any) -> None:
    tid = (await client.threads.create())["thread_id"]
    out = await client.runs.wait(tid, "counter", input={"stop": 2}, durability="exit")
    assert out["n"] == 2
    # durability="exit": one checkpoint for the whole run instead of one per step
    assert len(await client.threads.get_history(tid, limit=100)) == 1
    updated = await client.threads.update_state(tid, {"n": 40}, as_node="tick")
    assert updated["checkpoint"]["thread_id"] == tid
    assert (await client.threads.get_state(tid))["values"]["n"] == 40
    out = await client.runs.wait(tid, "counter", input={"stop": 0})
    assert out["n"] == 41
    seeded = await client.threads.create(graph_id="counter", supersteps=[
        {"updates": [{"values": {"n": 5, "stop": 5}, "as_node": "tick"}]},
        {"updates": [{"values": {"n": 6}, "as_node": "tick"}]}])
    assert seeded["values"] == {"n": 6, "stop": 5}
    assert len(await client.threads.get_history(seeded["thread_id"], limit=10)) == 2
    assert await refused(client.threads.create(graph_id="counter", supersteps=[
        {"updates": [{"values": {"n": 1}, "as_node": "nowhere"}]}]), 422, "nowhere")
    patched = await client.threads.update(tid, metadata={"owner": "ana"})
    assert patched["metadata"]["owner"] == "ana"
    await client.threads.delete(tid)
    assert await refused(client.threads.get(tid), 404)


# ------------------------------------------------------------------ multitask strategies


async def _busy_run(client: Any, tid: str) -> dict[str, Any]:
    """A run that keeps the thread busy until it is stopped."""
    run = await client.runs.create(tid, "counter", input={"stop": FOREVER}, config=LONG)

    async def ticking() -> bool:
        state = await client.threads.get_state(tid)
        return bool(state["values"].get("n", 0) >= 2)

    await until(ticking, "the busy run to write checkpoints")
    return run  # type: ignore[no-any-return]


async def test_reject_is_the_default_and_answers_409(client: Any) -> None:
    tid = (await client.threads.create())["thread_id"]
    busy = await _busy_run(client, tid)
    assert (await client.threads.get(tid))["status"] == "busy"
    assert await refused(client.runs.create(tid, "counter", input={"stop": 0}), 409, "busy")
    assert await refused(client.runs.wait(tid, "counter", input={"stop": 0},
                                          multitask_strategy="reject"), 409, "busy")
    assert await refused(client.threads.update_state(tid, {"n": 0}, as_node="tick"), 409)
    assert [r["run_id"] for r in await client.runs.list(tid)] == [busy["run_id"]]
    await client.runs.cancel(tid, busy["run_id"], wait=True)
    assert (await client.runs.get(tid, busy["run_id"]))["status"] == "interrupted"
    stopped = await client.threads.get(tid)  # not running, with the next tick pending
    assert stopped["status"] == "interrupted" and stopped["next"] == ["tick"]
    assert stopped["relaygraph_status"] == "interrupted"


async def test_enqueue_waits_for_the_running_run(client: Any) -> None:
    tid = (await client.threads.create())["thread_id"]
    busy = await _busy_run(client, tid)
    queued = await client.runs.create(tid, "counter", input={"stop": 0},
                                      multitask_strategy="enqueue")
    assert (await client.runs.get(tid, queued["run_id"]))["status"] == "pending"
    await client.runs.cancel(tid, busy["run_id"])
    out = await client.runs.join(tid, queued["run_id"])
    stopped_at = await _n_written_by(client, tid, busy["run_id"])
    assert out["n"] == stopped_at + 1  # ran after the first, on its state
    assert (await client.runs.get(tid, queued["run_id"]))["status"] == "success"
    assert (await client.runs.get(tid, busy["run_id"]))["status"] == "interrupted"


async def test_queued_runs_take_the_thread_in_order(client: Any) -> None:
    tid = (await client.threads.create())["thread_id"]
    busy = await _busy_run(client, tid)
    queued = [await client.runs.create(tid, "counter", input={"stop": 0},
                                       multitask_strategy="enqueue") for _ in range(3)]
    await client.runs.cancel(tid, busy["run_id"])
    outs = [(await client.runs.join(tid, q["run_id"]))["n"] for q in queued]
    stopped_at = await _n_written_by(client, tid, busy["run_id"])
    assert [await _n_written_by(client, tid, q["run_id"]) for q in queued] == [
        stopped_at + 1, stopped_at + 2, stopped_at + 3]
    assert outs[-1] == stopped_at + 3


async def _n_written_by(client: Any, tid: str, run_id: str) -> int:
    history = await client.threads.get_history(tid, limit=1000,
                                               metadata={"run_id": run_id})
    return max(h["values"].get("n", 0) for h in history)


async def test_interrupt_stops_the_running_run_and_runs(client: Any) -> None:
    tid = (await client.threads.create())["thread_id"]
    busy = await _busy_run(client, tid)
    out = await client.runs.wait(tid, "counter", input={"stop": 0},
                                 multitask_strategy="interrupt")
    first = await client.runs.get(tid, busy["run_id"])
    assert first["status"] == "interrupted"
    stopped_at = await _n_written_by(client, tid, busy["run_id"])
    assert stopped_at >= 2 and out["n"] == stopped_at + 1


async def test_rollback_stops_the_running_run_and_deletes_what_it_wrote(client: Any) -> None:
    tid = (await client.threads.create())["thread_id"]
    assert (await client.runs.wait(tid, "counter", input={"stop": 3}))["n"] == 3
    busy = await _busy_run(client, tid)

    async def past_three() -> bool:
        return bool((await client.threads.get_state(tid))["values"]["n"] > 4)

    await until(past_three, "the busy run to count past 4")
    out = await client.runs.wait(tid, "counter", input={"stop": 0},
                                 multitask_strategy="rollback")
    assert out["n"] == 4  # started from where the first run (n = 3) left the thread
    assert await refused(client.runs.get(tid, busy["run_id"]), 404)
    history = await client.threads.get_history(tid, limit=1000)
    assert not [h for h in history if h["metadata"].get("run_id") == busy["run_id"]]


async def test_cancel_with_rollback_action(client: Any) -> None:
    tid = (await client.threads.create())["thread_id"]
    assert (await client.runs.wait(tid, "counter", input={"stop": 2}))["n"] == 2
    busy = await _busy_run(client, tid)
    await client.runs.cancel(tid, busy["run_id"], action="rollback")
    assert (await client.threads.get_state(tid))["values"]["n"] == 2
    assert await refused(client.runs.get(tid, busy["run_id"]), 404)


async def test_a_failing_run_shows_as_error(client: Any) -> None:
    tid = (await client.threads.create())["thread_id"]
    with pytest.raises(Exception, match="stop must be >= 0"):
        await client.runs.wait(tid, "counter", input={"stop": -1})
    (run,) = await client.runs.list(tid)
    assert run["status"] == "error" and "stop must be" in run["error"]
    assert (await client.threads.get(tid))["status"] == "error"
    parts = [p async for p in client.runs.stream(tid, "counter", input={"stop": -1})]
    assert parts[-1].event == "error"
    assert parts[-1].data == {"error": "ValueError", "message": "stop must be >= 0, got -1"}
    assert await client.threads.search(status="error", ids=[tid]) != []
    # a good run afterwards recovers the thread
    assert (await client.runs.wait(tid, "counter", input={"stop": 2}))["n"] == 2
    assert (await client.threads.get(tid))["status"] == "idle"


async def test_search_by_status_and_paging(client: Any) -> None:
    tag = {"suite": str(uuid.uuid4())}
    waiting = (await client.threads.create(metadata=tag))["thread_id"]
    await client.runs.wait(waiting, "refund", input=refund_json())
    done = []
    for _ in range(3):
        tid = (await client.threads.create(metadata=tag))["thread_id"]
        await client.runs.wait(tid, "counter", input={"stop": 1})
        done.append(tid)
    found = await client.threads.search(metadata=tag, status="interrupted")
    assert [t["thread_id"] for t in found] == [waiting]
    idle = await client.threads.search(metadata=tag, status="idle", limit=2)
    rest = await client.threads.search(metadata=tag, status="idle", limit=2, offset=2)
    assert [t["thread_id"] for t in idle + rest] == done[::-1]  # newest first
    assert await client.threads.count(metadata=tag) == 4
    assert await client.threads.count(metadata=tag, status="interrupted") == 1


async def test_resumable_stream_ids_and_last_event_id(client: Any) -> None:
    tid = (await client.threads.create())["thread_id"]
    parts = [p async for p in client.runs.stream(tid, "counter", input={"stop": 3},
                                                 stream_mode="updates", stream_resumable=True)]
    assert [p.id for p in parts] == ["0", "1", "2", "3"]
    run_id = parts[0].data["run_id"]
    again = [p async for p in client.runs.join_stream(tid, run_id, last_event_id="1")]
    assert [(p.id, p.data) for p in again] == [("2", {"tick": {"n": 2}}),
                                               ("3", {"tick": {"n": 3}})]
    assert await refused(_drain(client.runs.join_stream(tid, run_id, last_event_id="x")),
                         422, "Last-Event-ID")


async def _drain(stream: Any) -> list[Any]:
    return [p async for p in stream]


async def test_join_stream_and_stateless_wait(client: Any) -> None:
    tid = (await client.threads.create())["thread_id"]
    run = await client.runs.create(tid, "counter", input={"stop": 3},
                                   stream_mode=["values", "updates"])
    parts = [p async for p in client.runs.join_stream(tid, run["run_id"])]
    assert parts[0].event == "metadata" and parts[0].data["run_id"] == run["run_id"]
    assert [p.data for p in parts if p.event == "values"][-1] == {"n": 3, "stop": 3}
    assert [p.data for p in parts if p.event == "updates"] == [
        {"tick": {"n": 1}}, {"tick": {"n": 2}}, {"tick": {"n": 3}}]
    out = await client.runs.wait(None, "counter", input={"stop": 2})
    assert out == {"n": 2, "stop": 2}
    assert (await client.threads.get(tid))["values"] == {"n": 3, "stop": 3}


async def test_a_long_run_keeps_its_first_and_newest_events() -> None:
    from relaygraph.serve import _runs
    from relaygraph.serve._runstore import RunRecord

    rec = RunRecord("r", "acme/t", "acme", "counter", "running", "reject", 0.0, 0.0, None, {})
    handle = _runs.RunHandle(record=rec, spec=_runs.RunSpec(graph_id="counter"))
    handle.publish("metadata", {"run_id": "r"})
    early = handle.follow()
    assert await anext(early) == (0, "metadata", {"run_id": "r"})
    total = 3 * _runs._KEEP_EVENTS
    for i in range(total):
        handle.publish("values", {"i": i})
        if i == 10:
            assert await anext(early) == (1, "values", {"i": 0})  # reads as they come
    handle.done.set()
    assert len(handle.events) <= _runs._KEEP_EVENTS + 1
    late = [e async for e in handle.follow()]
    assert late[0] == (0, "metadata", {"run_id": "r"})
    seq = [d["i"] for _, _, d in late[1:]]
    assert seq == list(range(seq[0], total))  # no gaps, ends with the last event
    assert all(event_id == d["i"] + 1 for event_id, _, d in late[1:])  # ids are positions
    rest = [d["i"] async for _, _, d in early]
    assert rest == sorted(set(rest)) and rest[-1] == total - 1  # skipped only what was dropped
    after = [d["i"] async for _, _, d in handle.follow(after=total - 3)]  # ids > total - 3
    assert after == [total - 3, total - 2, total - 1]


async def test_in_process_on_an_in_memory_saver() -> None:
    """``create_app`` on an ``InMemorySaver`` (in-process leases), through the SDK over ASGI."""
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph_sdk.client import LangGraphClient

    from relaygraph.graphs import examples
    from relaygraph.graphs.examples import EXAMPLES
    from relaygraph.serve import create_app
    from relaygraph.serve._auth import Principal

    saver = InMemorySaver(serde=examples.serde())
    graph = EXAMPLES["refund"].build().compile(checkpointer=saver)
    app = create_app({"refund": graph}, checkpointer=saver, langserve_routes=False,
                     auth={KEY_ACME: Principal("acme", "ana")})
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app), base_url="http://relaygraph.test",
            headers={"x-api-key": KEY_ACME}) as http:
        client = LangGraphClient(http)
        tid = (await client.threads.create())["thread_id"]
        paused = await client.runs.wait(tid, "refund", input=refund_json())
        assert paused["__interrupt__"][0]["value"]["kind"] == "human_review"
        assert (await client.threads.get(tid))["status"] == "interrupted"
        parts = [p async for p in client.runs.stream(
            tid, "refund", command={"resume": {"action": "approve"}}, stream_mode="updates")]
        assert any(p.event == "updates" and "review" in p.data for p in parts)
        state = await client.threads.get_state(tid)
        assert state["next"] == [] and state["values"]["reviews"][-1]["reviewer"] == "ana"
        assert [r["status"] for r in await client.runs.list(tid)] == ["success", "success"]


async def test_batch_cancel_many_and_prune(client: Any) -> None:
    first, second = [(await client.threads.create())["thread_id"] for _ in range(2)]
    runs = await client.runs.create_batch([
        {"thread_id": first, "assistant_id": "counter", "input": {"stop": 2}},
        {"thread_id": second, "assistant_id": "counter", "input": {"stop": 3}}])
    assert [r["thread_id"] for r in runs] == [first, second]
    assert (await client.runs.join(first, runs[0]["run_id"]))["n"] == 2
    assert (await client.runs.join(second, runs[1]["run_id"]))["n"] == 3

    busy = await _busy_run(client, first)
    await client.runs.cancel_many(thread_id=first, status="running")
    await client.runs.join(first, busy["run_id"])
    assert (await client.runs.get(first, busy["run_id"]))["status"] == "interrupted"

    assert len(await client.threads.get_history(second, limit=100)) > 1
    assert await client.threads.prune([second], strategy="keep_latest") == {
        "pruned_count": 1}
    (latest,) = await client.threads.get_history(second, limit=100)
    assert latest["values"] == {"n": 3, "stop": 3}
    assert await client.threads.prune([first]) == {"pruned_count": 1}
    assert await refused(client.threads.get(first), 404)


async def test_breakpoints_and_time_travel(client: Any) -> None:
    tid = (await client.threads.create())["thread_id"]
    paused = await client.runs.wait(tid, "counter", input={"stop": 3},
                                    interrupt_before=["tick"])
    assert paused == {"stop": 3}
    thread = await client.threads.get(tid)
    assert thread["status"] == "interrupted" and thread["next"] == ["tick"]
    assert (await client.runs.wait(tid, "counter", input=None))["n"] == 3  # continue
    # fork from the checkpoint where n was 1: the new run ticks once from there
    history = await client.threads.get_history(tid, limit=100)
    at_one = next(h for h in history if h["values"].get("n") == 1)
    forked = await client.runs.wait(tid, "counter", input={"stop": 0},
                                    checkpoint_id=at_one["checkpoint"]["checkpoint_id"])
    assert forked == {"n": 2, "stop": 0}
    past = await client.threads.get_state(tid, checkpoint_id=at_one["checkpoint"][
        "checkpoint_id"])
    assert past["values"] == {"n": 1, "stop": 3}
    assert await refused(client.threads.get_state(tid, checkpoint_id="1f0-not-there"), 404)
    ordered = await client.threads.search(ids=[tid, (await client.threads.create())[
        "thread_id"]], sort_by="created_at", sort_order="asc")
    assert ordered[0]["thread_id"] == tid


async def test_a_run_over_its_time_limit_stops_at_a_step_boundary() -> None:
    from _protocol_graphs import counter_graph
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph_sdk.client import LangGraphClient

    from relaygraph.serve import create_app
    from relaygraph.serve._auth import Principal
    from relaygraph.serve._context import ServerSettings

    saver = InMemorySaver()
    app = create_app({"counter": counter_graph().compile(checkpointer=saver)},
                     checkpointer=saver, langserve_routes=False,
                     auth={KEY_ACME: Principal("acme", "ana")},
                     settings=ServerSettings(run_timeout=0.3))
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app), base_url="http://relaygraph.test",
            headers={"x-api-key": KEY_ACME}) as http:
        client = LangGraphClient(http)
        tid = (await client.threads.create())["thread_id"]
        out = await client.runs.wait(tid, "counter", input={"stop": FOREVER}, config=LONG,
                                     raise_error=False)
        assert out["__error__"]["error"] == "timeout"
        assert "step boundary (timeout)" in out["__error__"]["message"]
        (run,) = await client.runs.list(tid)
        assert run["status"] == "timeout"
        state = await client.threads.get_state(tid)
        assert state["next"] == ["tick"] and state["values"]["n"] > 0  # kept, resumable
        n = state["values"]["n"]
        assert (await client.runs.wait(tid, "counter", input={"stop": 0}))["n"] == n + 1


async def test_copy_delete_run_and_remote_update_state(live: Live, client: Any) -> None:
    tid = (await client.threads.create(metadata={"k": 1}))["thread_id"]
    run = await client.runs.create(tid, "counter", input={"stop": 2})
    await client.runs.join(tid, run["run_id"])
    copy = await client.threads.copy(tid)
    assert copy["thread_id"] != tid and copy["values"] == {"n": 2, "stop": 2}
    assert copy["metadata"]["k"] == 1
    await client.runs.delete(tid, run["run_id"])
    assert await client.runs.list(tid) == []
    assert await refused(client.runs.get(tid, run["run_id"]), 404)

    async with get_client(url=live.url, api_key=KEY_ACME) as c:
        remote = RemoteGraph("counter", client=c)
        config: Any = {"configurable": {"thread_id": copy["thread_id"]}}
        new = await remote.aupdate_state(config, {"n": 10}, as_node="tick")
        assert new["configurable"]["thread_id"] == copy["thread_id"]
        assert (await remote.aget_state(config)).values == {"n": 10, "stop": 2}
    assert (await client.threads.get_state(tid))["values"] == {"n": 2, "stop": 2}


async def test_a_thread_whose_state_cannot_be_read_is_an_error_row() -> None:
    from _protocol_graphs import counter_graph
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph_sdk.client import LangGraphClient

    from relaygraph.serve import create_app
    from relaygraph.serve._auth import Principal

    saver = InMemorySaver()
    app = create_app({"counter": counter_graph().compile(checkpointer=saver)},
                     checkpointer=saver, langserve_routes=False,
                     auth={KEY_ACME: Principal("acme", "ana")})
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app), base_url="http://relaygraph.test",
            headers={"x-api-key": KEY_ACME}) as http:
        client = LangGraphClient(http)
        good, bad = [(await client.threads.create())["thread_id"] for _ in range(2)]
        for tid in (good, bad):
            await client.runs.wait(tid, "counter", input={"stop": 1})
        for key in [k for k in saver.blobs if k[0] == f"acme/{bad}"]:
            saver.blobs[key] = ("msgpack", b"\xc1 not msgpack")
        rows = {t["thread_id"]: t for t in await client.threads.search()}
        assert rows[good]["status"] == "idle" and rows[good]["values"] == {"n": 1, "stop": 1}
        assert rows[bad]["status"] == "error" and "cannot be read" in rows[bad]["error"]
        assert (await client.threads.get(bad))["status"] == "error"


async def test_a_stream_with_on_disconnect_cancel_stops_its_run(client: Any) -> None:
    tid = (await client.threads.create())["thread_id"]
    stream = client.runs.stream(tid, "counter", input={"stop": FOREVER}, config=LONG,
                                stream_mode="updates", on_disconnect="cancel")
    first = await anext(stream)
    assert first.event == "metadata"
    run_id = first.data["run_id"]
    assert (await anext(stream)).event == "updates"
    await stream.aclose()  # the client goes away

    async def stopped() -> bool:
        return (await client.runs.get(tid, run_id))["status"] == "interrupted"

    await until(stopped, "the run to stop after its client left")
    assert (await client.threads.get(tid))["status"] == "interrupted"



async def test_a_wait_with_on_disconnect_cancel_stops_its_run(live: Live, client: Any) -> None:
    tid = (await client.threads.create())["thread_id"]
    async with get_client(url=live.url, api_key=KEY_ACME, timeout=2.0) as impatient:
        with pytest.raises(httpx.TimeoutException):  # the client gives up and leaves
            await impatient.runs.wait(tid, "counter", input={"stop": FOREVER}, config=LONG,
                                      on_disconnect="cancel")
    (run,) = await client.runs.list(tid)

    async def stopped() -> bool:
        return (await client.runs.get(tid, run["run_id"]))["status"] == "interrupted"

    await until(stopped, "the run to stop after its client left")
