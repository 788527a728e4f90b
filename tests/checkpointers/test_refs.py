"""Deltas that point at the task writes holding their items (``_refs``)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Annotated, Any

import ormsgpack
import pytest
import sqlalchemy as sa
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.serde.encrypted import EncryptedSerializer
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from sqlalchemy.ext.asyncio import AsyncEngine
from typing_extensions import TypedDict

from relaygraph.checkpointers import CorruptCheckpointError, SQLAlchemySaver
from relaygraph.checkpointers._codec import DELTA, FULL, SEGMENT, SLICE, unpack
from relaygraph.checkpointers._refs import (
    REF,
    REF_VALUE,
    WriteCache,
    compose,
    pack_id,
    ref_checkpoint,
    split_array,
    unpack_id,
)
from relaygraph.checkpointers._schema import blobs, checkpoints, writes
from relaygraph.checkpointers._serde import default_serde
from relaygraph.checkpointers._tdict import DICT_TYPE, Dictionaries, ThreadDict

from ._graphs import chat_graph


def _hist(graph: Any, cfg: dict[str, Any]) -> list[tuple[Any, Any]]:
    return [(s.values, s.next) for s in graph.get_state_history(cfg)]


def _frames(engine: sa.Engine, thread_id: str, *where: Any) -> list[tuple[str, Any]]:
    """(row type, unpacked frame) of the thread's frames, read with its dictionaries."""
    dicts = Dictionaries()
    with engine.connect() as c:
        for (blob,) in c.execute(sa.select(blobs.c.blob).where(
                blobs.c.thread_id == thread_id, blobs.c.type == DICT_TYPE)):
            dicts.add(thread_id, ThreadDict(blob))
        rows = c.execute(sa.select(blobs.c.type, blobs.c.blob).where(
            blobs.c.thread_id == thread_id, blobs.c.type != DICT_TYPE, *where)).all()
    return [(r.type, unpack(r.type, r.blob, "frame", thread_id, dicts)) for r in rows]


def _message_entries(engine: sa.Engine, thread_id: str) -> list[tuple[str, list[Any]]]:
    """(row type, entry) of every stored ``messages`` entry of the thread."""
    return [(t, e["messages"]) for t, e in _frames(engine, thread_id,
                                                    blobs.c.channel == "messages")]


def _run(graph: Any, cfg: dict[str, Any], steps: int = 0) -> None:
    graph.invoke({"messages": [HumanMessage("hi", id="h")], "count": 0}, cfg)


def _run_both(saver: Any, steps: int, thread_id: str) -> tuple[Any, Any, dict[str, Any]]:
    """The chat graph run on ``saver`` and on an InMemorySaver, for comparison."""
    g = chat_graph(steps).compile(checkpointer=saver)
    ref = chat_graph(steps).compile(checkpointer=InMemorySaver())
    cfg = {"configurable": {"thread_id": thread_id}}
    for graph in (g, ref):
        _run(graph, cfg)
    return g, ref, cfg


@pytest.mark.parametrize("n", [0, 1, 15, 16, 17, 65_535, 65_536])
def test_compose_rebuilds_msgpack_arrays_exactly(n: int) -> None:
    items = [{"i": i} for i in range(n)]
    whole = ormsgpack.packb(items)
    assert split_array(whole) is not None
    assert compose([whole]) == whole
    # split anywhere, and a single (non-list) write counts as one item
    half = n // 2
    parts = [ormsgpack.packb(items[:half]), *(ormsgpack.packb(x) for x in items[half:])]
    assert compose(parts) == whole
    assert split_array(ormsgpack.packb({"not": "a list"})) is None
    assert split_array(b"") is None


def test_deltas_point_at_the_writes_and_read_back_exactly(saver: SQLAlchemySaver) -> None:
    g, ref, cfg = _run_both(saver, 40, "refs")
    entries = _message_entries(saver.engine, "refs")
    kinds = [e[0] for _, e in entries]
    # one whole value, one segment (after 32 deltas), and deltas that are references,
    # which the segment did not need to rewrite. LangGraph saves a task's writes on a
    # background thread: each put waited for its parent's, so none was stored inline.
    assert kinds.count(FULL) == 1 and kinds.count(SEGMENT) == 1, kinds
    assert kinds.count(REF) == len(kinds) - 2 >= 40, kinds
    assert _hist(g, cfg) == _hist(ref, cfg)
    # a fresh saver (another process) has no cache: it reads the references from the rows
    fresh = chat_graph(40).compile(checkpointer=SQLAlchemySaver(saver.engine))
    assert _hist(fresh, cfg) == _hist(ref, cfg)
    assert fresh.get_state(cfg).values == ref.get_state(cfg).values


async def test_async_saver_points_at_writes_too(any_saver: Any) -> None:
    g = chat_graph(6).compile(checkpointer=any_saver)
    ref = chat_graph(6).compile(checkpointer=InMemorySaver())
    cfg = {"configurable": {"thread_id": "arefs"}}
    for graph in (g, ref):
        await graph.ainvoke({"messages": [HumanMessage("hi", id="h")], "count": 0}, cfg)
    assert [s.values async for s in g.aget_state_history(cfg)] == [
        s.values async for s in ref.aget_state_history(cfg)]
    # the input's message is stored whole, each of the 6 steps' is a reference
    query = sa.select(sa.func.count()).select_from(blobs).where(
        blobs.c.thread_id == "arefs", blobs.c.channel == "messages",
        blobs.c.type.startswith("rg1r"))
    engine = any_saver.engine
    if isinstance(engine, AsyncEngine):
        async with engine.connect() as c:
            n = (await c.execute(query)).scalar_one()
    else:
        with engine.connect() as c:
            n = c.execute(query).scalar_one()
    assert n == 6


def test_prune_copies_items_back_before_deleting_writes(saver: SQLAlchemySaver) -> None:
    g, ref, cfg = _run_both(saver, 15, "cap")
    saver.prune(["cap"], keep_last=3)
    with saver.engine.connect() as c:
        alive = set(c.execute(sa.select(checkpoints.c.checkpoint_id).where(
            checkpoints.c.thread_id == "cap")).scalars())
        assert len(alive) == 3
        assert set(c.execute(sa.select(writes.c.checkpoint_id).where(
            writes.c.thread_id == "cap")).scalars()) <= alive
    # every reference left points at a checkpoint that still has its writes
    left = [e for _, e in _message_entries(saver.engine, "cap") if e[0] == REF]
    assert all(ref_checkpoint(e) in alive for e in left), left
    assert _hist(g, cfg) == _hist(ref, cfg)[:3]
    fresh = chat_graph(15).compile(checkpointer=SQLAlchemySaver(saver.engine))
    assert fresh.get_state(cfg).values == ref.get_state(cfg).values
    # the thread goes on from the pruned state
    for graph in (g, ref):
        graph.invoke({"messages": [HumanMessage("more", id="more")], "count": 0}, cfg)
    assert g.get_state(cfg).values == ref.get_state(cfg).values


def test_delete_for_runs_keeps_later_runs_readable(saver: SQLAlchemySaver) -> None:
    g = chat_graph(4).compile(checkpointer=saver)
    cfg = {"configurable": {"thread_id": "runs"}}
    g.invoke({"messages": [HumanMessage("one", id="one")], "count": 0},
             {**cfg, "metadata": {"run_id": "run-a"}})
    g.invoke({"messages": [HumanMessage("two", id="two")], "count": 0},
             {**cfg, "metadata": {"run_id": "run-b"}})
    before = g.get_state(cfg).values
    saver.delete_for_runs(["run-a"])
    with saver.engine.connect() as c:
        runs = set(c.execute(sa.select(checkpoints.c.run_id).where(
            checkpoints.c.thread_id == "runs")).scalars())
    assert runs == {"run-b"}
    fresh = chat_graph(4).compile(checkpointer=SQLAlchemySaver(saver.engine))
    assert fresh.get_state(cfg).values == before
    for snap in fresh.get_state_history(cfg):
        assert snap.values["messages"][0].id == "one"  # rebuilt from run-a's items


def _notes(i: int) -> dict[str, Any]:
    return {"step": i, "summary": f"what step {i} found, in a sentence or two"}


def _plain_entries(engine: sa.Engine, thread_id: str, channel: str) -> list[list[Any]]:
    return [e[channel] for _, e in _frames(engine, thread_id) if channel in e]


def _steps(saver: SQLAlchemySaver, thread_id: str, n: int, run: Any = lambda i: "run",
           start: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """``n`` checkpoints, each appending the message its parent's task wrote (and
    counting in a plain channel); ``start`` continues from that checkpoint."""
    if start is None:
        cfg: dict[str, Any] = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}
        msgs = [HumanMessage("start", id="start")]
        version = saver.get_next_version(None)
        cp = {**empty_checkpoint(),
              "channel_values": {"messages": list(msgs), "count": 0, "notes": _notes(0)},
              "channel_versions": {"messages": version, "count": version, "notes": version}}
        configs = [saver.put(cfg, cp, {"step": 0, "run_id": run(0)},
                             {"messages": version, "count": version, "notes": version})]
        first = 1
    else:
        head = saver.get_tuple(start)
        msgs = list(head.checkpoint["channel_values"]["messages"])
        version = head.checkpoint["channel_versions"]["messages"]
        configs, first = [head.config], head.checkpoint["channel_values"]["count"] + 1
        n += first  # n more
    for i in range(first, n):
        m = AIMessage(f"reply {i}", id=f"r{i}")
        saver.put_writes(configs[-1], [("messages", [m]), ("count", i), ("notes", _notes(i))],
                         f"task-{i}")
        msgs.append(m)
        version = saver.get_next_version(version)
        cp = {**empty_checkpoint(),
              "channel_values": {"messages": list(msgs), "count": i, "notes": _notes(i)},
              "channel_versions": {"messages": version, "count": version, "notes": version}}
        configs.append(saver.put(configs[-1], cp, {"step": i, "run_id": run(i)},
                                 {"messages": version, "count": version, "notes": version}))
    return configs if start is None else configs[1:]


def test_each_delta_points_at_its_parents_writes(saver: SQLAlchemySaver) -> None:
    configs = _steps(saver, "direct", 6)
    kinds = [e[0] for _, e in _message_entries(saver.engine, "direct")]
    assert sorted(kinds) == [FULL] + [REF] * 5, kinds
    # the notes each step wrote are the notes it stored: referenced too; a count is
    # smaller than a reference and stays as it is
    notes = [e[0] for e in _plain_entries(saver.engine, "direct", "notes")]
    assert sorted(notes) == [FULL] + [REF_VALUE] * 5, notes
    assert {e[0] for e in _plain_entries(saver.engine, "direct", "count")} == {FULL}
    with saver.engine.connect() as c:  # a step's row of references is small, and compressed
        types = set(c.execute(sa.select(blobs.c.type).where(
            blobs.c.thread_id == "direct", blobs.c.type.startswith("rg1r"))).scalars())
    assert types == {"rg1r|zf"}, types
    fresh = SQLAlchemySaver(saver.engine)
    for i, cfg in enumerate(configs):
        values = fresh.get_tuple(cfg).checkpoint["channel_values"]
        assert [m.id for m in values["messages"]] == ["start"] + [
            f"r{j}" for j in range(1, i + 1)]
        assert values["notes"] == _notes(i) and values["count"] == i
    assert [len(t.checkpoint["channel_values"]["messages"]) for t in fresh.list(
        {"configurable": {"thread_id": "direct"}})] == [6, 5, 4, 3, 2, 1]


def _ids(saver: SQLAlchemySaver, cfg: dict[str, Any]) -> list[str]:
    return [m.id for m in saver.get_tuple(cfg).checkpoint["channel_values"]["messages"]]


@pytest.mark.parametrize("how", ["prune", "delete_for_runs"])
def test_retention_copies_items_in_before_the_writes_go(saver, how) -> None:
    configs = _steps(saver, "ret", 6, run=lambda i: "old" if i < 4 else "new")
    if how == "prune":
        saver.prune(["ret"], keep_last=2)
    else:
        saver.delete_for_runs(["old"])
    kinds = [e[0] for _, e in _message_entries(saver.engine, "ret")]
    # the last two deltas point at writes of checkpoints 3 and 4; 3's writes are gone
    assert DELTA in kinds and REF in kinds, kinds
    fresh = SQLAlchemySaver(saver.engine, segment_every=3)
    assert _ids(fresh, configs[-1]) == ["start", "r1", "r2", "r3", "r4", "r5"]
    assert _ids(fresh, configs[-2]) == ["start", "r1", "r2", "r3", "r4"]
    assert fresh.get_tuple(configs[-2]).checkpoint["channel_values"]["count"] == 4
    assert fresh.get_tuple(configs[-2]).checkpoint["channel_values"]["notes"] == _notes(4)
    notes = [e[0] for e in _plain_entries(saver.engine, "ret", "notes")]
    assert FULL in notes and REF_VALUE in notes, notes  # 4's copied in, 5's still shared
    assert fresh.get_tuple(configs[-3]) is None
    # the copied-in deltas left the plain values' row: the segments written next may
    # rewrite them as slices without touching the counts
    more = _steps(fresh, "ret", 7, start=configs[-1])
    again = SQLAlchemySaver(saver.engine)
    for cfg in [*configs[-2:], *more]:
        values = again.get_tuple(cfg).checkpoint["channel_values"]
        n = values["count"]
        assert values["notes"] == _notes(n)
        assert [m.id for m in values["messages"]] == ["start"] + [f"r{j}" for j in
                                                                  range(1, n + 1)]
    assert again.get_tuple(more[-1]).checkpoint["channel_values"]["count"] == 12
    assert SLICE in [e[0] for _, e in _message_entries(saver.engine, "ret")]


def test_a_missing_writes_row_is_a_clear_error(saver: SQLAlchemySaver) -> None:
    configs = _steps(saver, "broken", 4)
    with saver.engine.begin() as c:  # the writes the second delta points at
        c.execute(sa.delete(writes).where(
            writes.c.thread_id == "broken",
            writes.c.checkpoint_id == configs[1]["configurable"]["checkpoint_id"]))
    fresh = SQLAlchemySaver(saver.engine)
    assert len(fresh.get_tuple(configs[1]).checkpoint["channel_values"]["messages"]) == 2
    with pytest.raises(CorruptCheckpointError, match=(
            "thread 'broken': channel '(messages|notes)' version '.*' refers to write "
            "[02] of task 'task-2' at checkpoint '.*', which is missing")):
        fresh.get_tuple(configs[3])


def _upper_add(left: list[str], right: list[str]) -> list[str]:
    return left + [x.upper() for x in right]


class Items(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], add_messages]
    items: Annotated[list[str], _upper_add]
    count: int


def _writer_graph(make: Any) -> StateGraph:
    def node(state: Items) -> dict[str, Any]:
        n = state.get("count", 0) + 1
        return {"messages": make(n), "items": [f"item {n}"], "count": n}

    b = StateGraph(Items)
    b.add_node("agent", node)
    b.add_edge(START, "agent")
    b.add_conditional_edges("agent", lambda s: END if s["count"] >= 4 else "agent")
    return b


@pytest.mark.parametrize("make", [
    lambda n: [("ai", f"tuple {n}")],
    lambda n: [{"role": "ai", "content": f"dict {n}", "id": f"d{n}"}],
    # add_messages gives it an id in place, before or after the writes were serialized
    lambda n: [AIMessage(f"no id {n}")],
], ids=["tuple", "dict", "no-id"])
def test_any_message_like_write_reads_back_exactly(saver, make) -> None:
    g = _writer_graph(make).compile(checkpointer=saver)
    cfg = {"configurable": {"thread_id": "shapes"}}
    g.invoke({"messages": [], "count": 0}, cfg)
    fresh = _writer_graph(make).compile(checkpointer=SQLAlchemySaver(saver.engine))
    assert _hist(fresh, cfg) == _hist(g, cfg)
    assert len(fresh.get_state(cfg).values["messages"]) == 4


def test_items_a_reducer_changed_are_stored_inline(saver) -> None:
    g = _writer_graph(lambda n: []).compile(checkpointer=saver)
    cfg = {"configurable": {"thread_id": "changed"}}
    g.invoke({"items": [], "count": 0}, cfg)
    with saver.engine.connect() as c:
        rows = c.execute(sa.select(blobs.c.type, blobs.c.blob).where(
            blobs.c.thread_id == "changed", blobs.c.channel == "items")).all()
    kinds = [unpack(r.type, r.blob, "frame", "changed")["items"][0] for r in rows]
    assert REF not in kinds and kinds.count(DELTA) == 4, kinds
    fresh = _writer_graph(lambda n: []).compile(checkpointer=SQLAlchemySaver(saver.engine))
    assert fresh.get_state(cfg).values["items"] == ["ITEM 1", "ITEM 2", "ITEM 3", "ITEM 4"]


class _XorCipher:
    """A stand-in cipher (serialized payloads come out as ``msgpack+xor``)."""

    def encrypt(self, plaintext: bytes) -> tuple[str, bytes]:
        return "xor", bytes(b ^ 0x5A for b in plaintext)

    def decrypt(self, ciphername: str, ciphertext: bytes) -> bytes:
        assert ciphername == "xor"
        return bytes(b ^ 0x5A for b in ciphertext)


def test_an_encrypting_serde_stores_items_inline(backend) -> None:
    engine = sa.create_engine(backend.url)
    serde = EncryptedSerializer(_XorCipher(), default_serde())
    saver = SQLAlchemySaver(engine, serde=serde)
    saver.setup()
    g, ref, cfg = _run_both(saver, 3, "enc")
    assert REF not in [e[0] for _, e in _message_entries(engine, "enc")]
    assert _hist(g, cfg) == _hist(ref, cfg)
    engine.dispose()


def test_merged_writes_are_not_pointed_at(saver: SQLAlchemySaver) -> None:
    g = chat_graph(1).compile(checkpointer=saver)
    cfg = {"configurable": {"thread_id": "merge"}}
    _run(g, cfg)
    head = saver.get_tuple(cfg)
    key = ("merge", "", head.config["configurable"]["checkpoint_id"])
    m = AIMessage("x", id="x")
    saver.put_writes(head.config, [("messages", [m])], "task-1")
    payload = default_serde().dumps_typed([m])
    assert saver._cache.writes.match(key, "messages", *payload) == [[pack_id("task-1"), 0]]
    # the same task writes again: the row is merged, and no delta may point at it
    saver.put_writes(head.config, [("messages", [m]), ("count", 1)], "task-1")
    assert saver._cache.writes.match(key, "messages", *payload) is None


def test_write_cache_is_bounded_and_exact() -> None:
    cache = WriteCache(2)
    a, b = ormsgpack.packb(["a"]), ormsgpack.packb("b")
    cache.add(("t", "", "c1"), "task-2", "~x, 2", [[0, "messages", "msgpack", b]])
    cache.add(("t", "", "c1"), "task-1", "~x, 1", [[0, "messages", "msgpack", a],
                                                   [1, "other", "msgpack", b]])
    # applied in task-path order: task-1's item, then task-2's
    assert cache.match(("t", "", "c1"), "messages", "msgpack",
                       ormsgpack.packb(["a", "b"])) == [["task-1", 0], ["task-2", 0]]
    assert cache.match(("t", "", "c1"), "messages", "msgpack",
                       ormsgpack.packb(["b", "a"])) is None
    assert cache.match(("t", "", "c1"), "messages", "json", b"") is None
    value = ormsgpack.packb({"a": 1})
    assert cache.match_value(("t", "", "c1"), "other", "msgpack", b) == [["task-1", 1]]
    assert cache.match_value(("t", "", "c1"), "other", "json", b) is None
    assert cache.match_value(("t", "", "c1"), "other", "msgpack", value) is None
    # two writes to one channel: the value is whatever the reducer made of them
    assert cache.match_value(("t", "", "c1"), "messages", "msgpack", a) is None
    cache.add(("t", "", "c2"), "t", "", [])
    cache.add(("t", "", "c3"), "t", "", [])
    assert cache.match(("t", "", "c1"), "messages", "msgpack",
                       ormsgpack.packb(["a", "b"])) is None  # evicted
    entry = [REF, "msgpack", [pack_id("1f1e7cc2-41af-66d2-8000-13a207d1f445"), [["a", 0]]]]
    key = cache.ref_key("t", "", entry)
    cache.remember_resolved([(key, ("msgpack", b"\x91\x01"))])
    assert cache.resolved(key) == ("msgpack", b"\x91\x01")
    assert cache.resolved(cache.ref_key("other", "", entry)) is None
    cache.forget_threads(["t"])
    assert cache.match(("t", "", "c3"), "messages", "msgpack", b"\x90") is None
    assert cache.resolved(key) is None


@pytest.mark.parametrize("value", [
    "1f1e7cc2-41af-66d2-8000-13a207d1f445",  # stored as 16 bytes
    "1F1E7CC2-41AF-66D2-8000-13A207D1F445",  # not canonical: kept as text
    "{1f1e7cc2-41af-66d2-8000-13a207d1f445}", "task-1", "", "ü" * 36,
    "1f1e7cc2-41af-66d2-8000-13a207d1f4 5", "1f1e7cc2-41af-66d2-8000-13a207d1f44g",
])
def test_ids_in_references_read_back_exactly(value: str) -> None:
    packed = pack_id(value)
    assert isinstance(packed, bytes) == (
        len(value) == 36 and all(c in "0123456789abcdef-" for c in value)
        and value.count("-") == 4)
    assert unpack_id(packed) == value


def test_a_put_waits_for_its_parents_writes_under_way() -> None:
    cache = WriteCache(8)
    key = ("t", "", "c1")
    cache.wait(key, 5)  # nothing under way: returns at once
    cache.begin(key)
    cache.begin(key)
    done = threading.Event()

    def put() -> None:
        cache.wait(key, 5)
        done.set()

    waiter = threading.Thread(target=put)
    waiter.start()
    cache.end(key)
    assert not done.wait(0.2)  # one of the two still runs
    cache.end(key)
    assert done.wait(5)
    waiter.join()
    cache.begin(key)
    t0 = time.perf_counter()
    cache.wait(key, 0.2)  # a writes call that never ends delays a put, nothing more
    assert 0.15 < time.perf_counter() - t0 < 2
    cache.end(key)


async def test_an_async_put_waits_for_its_parents_writes_under_way() -> None:
    cache = WriteCache(8)
    key = ("t", "", "c1")
    await cache.await_idle(key, 5)
    cache.begin(key)
    asyncio.get_running_loop().call_later(0.1, cache.end, key)
    t0 = time.perf_counter()
    await cache.await_idle(key, 5)
    assert 0.05 < time.perf_counter() - t0 < 2
    cache.begin(key)
    t0 = time.perf_counter()
    await cache.await_idle(key, 0.2)
    assert 0.15 < time.perf_counter() - t0 < 2


def test_a_failed_put_writes_is_not_waited_for(saver: SQLAlchemySaver) -> None:
    cfg = {"configurable": {"thread_id": "t", "checkpoint_ns": "", "checkpoint_id": "c"}}
    with pytest.raises(ValueError):
        saver.put_writes(cfg, [("messages", [])], "x" * 10_000)  # an id past its limit
    t0 = time.perf_counter()
    saver._cache.writes.wait(("t", "", "c"))
    assert time.perf_counter() - t0 < 0.5
