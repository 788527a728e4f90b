"""Thread dictionaries: a long thread's rows compress with a dictionary trained on them."""

from __future__ import annotations

import concurrent.futures
import os
from typing import Any

import pytest
import sqlalchemy as sa
from langchain_core.messages import HumanMessage
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.memory import InMemorySaver

from relaygraph.checkpointers import (
    CorruptCheckpointError,
    SQLAlchemySaver,
)
from relaygraph.checkpointers._codec import static_size
from relaygraph.checkpointers._errors import InvalidKeyError
from relaygraph.checkpointers._schema import blobs, checkpoints, writes
from relaygraph.checkpointers._tdict import (
    DICT_TYPE,
    DICT_VERSION,
    TAG,
    TRAIN_ROWS,
    Dictionaries,
    Sampler,
    ThreadDict,
    frame_dict_id,
    train,
)

from ._graphs import chat_graph


def _hist(graph: Any, cfg: dict[str, Any]) -> list[tuple[Any, Any]]:
    return [(s.values, s.next) for s in graph.get_state_history(cfg)]


async def _ahist(graph: Any, cfg: dict[str, Any]) -> list[tuple[Any, Any]]:
    return [(s.values, s.next) async for s in graph.aget_state_history(cfg)]


def _start() -> dict[str, Any]:
    return {"messages": [HumanMessage("hi", id="h")], "count": 0}


def _types(engine: sa.Engine, thread_id: str) -> dict[str, list[str]]:
    with engine.connect() as c:
        return {
            "checkpoints": list(c.execute(sa.select(checkpoints.c.type).where(
                checkpoints.c.thread_id == thread_id)).scalars()),
            "frames": list(c.execute(sa.select(blobs.c.type).where(
                blobs.c.thread_id == thread_id, blobs.c.type != DICT_TYPE)).scalars()),
            "writes": list(c.execute(sa.select(writes.c.type).where(
                writes.c.thread_id == thread_id)).scalars()),
            "dicts": list(c.execute(sa.select(blobs.c.version).where(
                blobs.c.thread_id == thread_id, blobs.c.type == DICT_TYPE)).scalars()),
        }


async def test_a_long_thread_compresses_with_its_own_dictionary(any_saver, backend) -> None:
    """40 steps: a dictionary is trained once, every kind of row uses it after, and every
    checkpoint reads back as InMemorySaver's, in this saver and in a fresh one."""
    g = chat_graph(40).compile(checkpointer=any_saver)
    ref = chat_graph(40).compile(checkpointer=InMemorySaver())
    cfg = {"configurable": {"thread_id": "long"}}
    await g.ainvoke(_start(), cfg)
    ref.invoke(_start(), cfg)
    # the thread goes on (LangGraph may store a run's task writes well ahead of its
    # checkpoints: the second run's all come after the dictionary)
    await g.ainvoke({"count": 20}, cfg)
    ref.invoke({"count": 20}, cfg)
    engine = sa.create_engine(backend.url)
    try:
        types = _types(engine, "long")
        assert len(types["dicts"]) == 1 and types["dicts"][0].startswith(DICT_VERSION)
        for kind in ("checkpoints", "frames", "writes"):
            assert any(t.endswith(TAG) for t in types[kind]), (kind, types[kind])
        # the rows before the dictionary existed keep the fixed one
        assert any(t.endswith("|zf") for t in types["checkpoints"])
        assert await _ahist(g, cfg) == _hist(ref, cfg)
        fresh = chat_graph(40).compile(checkpointer=SQLAlchemySaver(engine))
        assert _hist(fresh, cfg) == _hist(ref, cfg)
        # the thread goes on from a process that never saw it: same dictionary
        fresh.invoke({"count": 0}, cfg)
        ref.invoke({"count": 0}, cfg)
        assert _hist(fresh, cfg) == _hist(ref, cfg)
        assert len(_types(engine, "long")["dicts"]) == 1
    finally:
        engine.dispose()


def test_short_threads_and_the_switch_store_no_dictionary(saver) -> None:
    g = chat_graph(6).compile(checkpointer=saver)
    g.invoke(_start(), {"configurable": {"thread_id": "short"}})
    assert _types(saver.engine, "short")["dicts"] == []
    off = SQLAlchemySaver(saver.engine, thread_dictionaries=False)
    g = chat_graph(40).compile(checkpointer=off)
    cfg = {"configurable": {"thread_id": "off"}}
    g.invoke(_start(), cfg)
    types = _types(saver.engine, "off")
    assert types["dicts"] == []
    assert not any(t.endswith(TAG) for kind in types.values() for t in kind)
    # a saver with dictionaries off still reads a thread that has one
    on = chat_graph(40).compile(checkpointer=saver)
    on.invoke(_start(), {"configurable": {"thread_id": "on"}})
    assert _types(saver.engine, "on")["dicts"]
    fresh_off = chat_graph(40).compile(checkpointer=SQLAlchemySaver(
        saver.engine, thread_dictionaries=False))
    assert _hist(fresh_off, {"configurable": {"thread_id": "on"}}) == _hist(
        on, {"configurable": {"thread_id": "on"}})


def test_the_dictionary_lives_and_dies_with_its_thread(saver) -> None:
    g = chat_graph(40).compile(checkpointer=saver)
    cfg = {"configurable": {"thread_id": "src"}}
    g.invoke(_start(), cfg)
    before = _hist(g, cfg)
    # copied with the thread: the copy reads back after the source is gone
    saver.copy_thread("src", "dst")
    saver.delete_thread("src")
    assert _types(saver.engine, "src") == {"checkpoints": [], "frames": [], "writes": [],
                                           "dicts": []}
    dst = {"configurable": {"thread_id": "dst"}}
    fresh = chat_graph(40).compile(checkpointer=SQLAlchemySaver(saver.engine))
    assert [v for v, _ in _hist(fresh, dst)] == [v for v, _ in before]
    # retention keeps it while rows use it
    saver.prune(["dst"], keep_last=2)
    assert len(_types(saver.engine, "dst")["dicts"]) == 1
    fresh = chat_graph(40).compile(checkpointer=SQLAlchemySaver(saver.engine))
    assert fresh.get_state(dst).values == before[0][0]
    saver.delete_thread("dst")
    assert _types(saver.engine, "dst")["dicts"] == []


def test_a_thread_deleted_elsewhere_and_started_again_never_points_at_the_old_dictionary(
        saver) -> None:
    """Worker A wrote the thread (with a dictionary); worker B deletes it; A starts it
    again. A's rows must not name the dictionary that went with the old thread."""
    a = chat_graph(40).compile(checkpointer=saver)
    cfg = {"configurable": {"thread_id": "again"}}
    a.invoke(_start(), cfg)
    (old,) = _types(saver.engine, "again")["dicts"]
    assert isinstance(saver._dicts.for_writes("again", "", "unknown"), ThreadDict)
    SQLAlchemySaver(saver.engine).delete_thread("again")  # another process
    # the next run starts by reading the thread: it is empty, so even task writes stored
    # before the run's first put has begun use no dictionary of the old thread
    assert saver.get_tuple(cfg) is None
    assert not isinstance(saver._dicts.for_writes("again", "", "unknown"), ThreadDict)
    a.invoke(_start(), cfg)
    # the thread has a dictionary again (a copy of the one this saver trained last, as a
    # new thread gets), stored with the new thread before any row named it
    types = _types(saver.engine, "again")
    (new,) = types["dicts"]
    with saver.engine.connect() as c:
        named = {frame_dict_id(blob) for (blob,) in c.execute(sa.select(blobs.c.blob).where(
            blobs.c.thread_id == "again", blobs.c.type.endswith(TAG)))}
    assert named == {int(new[len(DICT_VERSION):], 16)}
    ref = chat_graph(40).compile(checkpointer=InMemorySaver())
    ref.invoke(_start(), cfg)
    fresh = chat_graph(40).compile(checkpointer=SQLAlchemySaver(saver.engine))
    assert _hist(fresh, cfg) == _hist(ref, cfg)


def test_a_dictionary_another_process_stored_is_used_not_trained_again(saver) -> None:
    g = chat_graph(40).compile(checkpointer=saver)
    cfg = {"configurable": {"thread_id": "shared"}}
    g.invoke(_start(), cfg)
    (stored,) = _types(saver.engine, "shared")["dicts"]
    other = SQLAlchemySaver(saver.engine)
    head = other.get_tuple(cfg)
    # a process that has sampled enough rows of the thread, but never read one written
    # with the stored dictionary (its lineage is unknown)
    sampler = Sampler()
    sampler.rows = [os.urandom(8)] * TRAIN_ROWS
    other._dicts.forget_threads(["shared"])
    other._dicts._samplers.put(("shared", ""), sampler)
    cp = {**head.checkpoint, "id": "1ffffffff-ffff-6fff-ffff-fffffffffff0"[1:]}
    other.put(head.config, cp, {"source": "update", "step": 99}, {})
    types = _types(saver.engine, "shared")
    assert types["dicts"] == [stored]
    with saver.engine.connect() as c:
        row = c.execute(sa.select(checkpoints.c.type, checkpoints.c.checkpoint).where(
            checkpoints.c.thread_id == "shared",
            checkpoints.c.checkpoint_id == cp["id"])).one()
    assert row.type.endswith(TAG)
    assert frame_dict_id(row.checkpoint) == int(stored[len(DICT_VERSION):], 16)
    assert SQLAlchemySaver(saver.engine).get_tuple(
        {"configurable": {**cfg["configurable"], "checkpoint_id": cp["id"]}}) is not None


def test_a_missing_or_corrupt_dictionary_is_an_error_naming_the_thread(saver) -> None:
    g = chat_graph(40).compile(checkpointer=saver)
    cfg = {"configurable": {"thread_id": "lost"}}
    g.invoke(_start(), cfg)
    where = (blobs.c.thread_id == "lost", blobs.c.type == DICT_TYPE)
    with saver.engine.begin() as c:
        c.execute(sa.update(blobs).where(*where).values(blob=b"not a dictionary"))
    with pytest.raises(CorruptCheckpointError, match="'lost'.*unreadable") as err:
        SQLAlchemySaver(saver.engine).get_tuple(cfg)
    assert err.value.thread_id == "lost"
    with saver.engine.begin() as c:
        c.execute(sa.delete(blobs).where(*where))
    with pytest.raises(CorruptCheckpointError, match="dictionary .* of thread 'lost' is missing"):
        SQLAlchemySaver(saver.engine).get_tuple(cfg)
    with pytest.raises(CorruptCheckpointError, match="'lost'"):
        list(SQLAlchemySaver(saver.engine).list(cfg))


def test_no_channel_version_can_name_a_dictionary_row(saver) -> None:
    cp = empty_checkpoint()
    cp["channel_versions"] = {"x": DICT_VERSION + "00000001"}
    cp["channel_values"] = {"x": 1}
    with pytest.raises(InvalidKeyError, match="NUL"):
        saver.put({"configurable": {"thread_id": "t", "checkpoint_ns": ""}}, cp, {},
                  dict(cp["channel_versions"]))


def test_a_dictionary_that_does_not_pay_is_not_kept() -> None:
    """Incompressible rows (encrypted values, say): no dictionary."""
    rows = [os.urandom(600) for _ in range(TRAIN_ROWS)]
    assert train(rows, [static_size(r) for r in rows]) is None
    alike = [b'{"agent":"planner","turn":%d,"text":"step %d of the plan"}' % (i, i) * 4
             for i in range(TRAIN_ROWS)]
    trained = train(alike, [static_size(r) for r in alike])
    assert trained is not None and len(trained.data) <= 4096
    td = ThreadDict(trained.data)
    assert td.decompress(td.compress(alike[0])) == alike[0]
    assert frame_dict_id(td.compress(alike[0])) == td.dict_id


def test_deleting_runs_keeps_the_dictionary_until_the_thread_is_empty(saver) -> None:
    g = chat_graph(40).compile(checkpointer=saver)
    cfg = {"configurable": {"thread_id": "runs"}}
    g.invoke(_start(), {**cfg, "metadata": {"run_id": "run-1"}})
    g.invoke({"count": 20}, {**cfg, "metadata": {"run_id": "run-2"}})
    saver.delete_for_runs(["run-1"])
    assert len(_types(saver.engine, "runs")["dicts"]) == 1
    fresh = chat_graph(40).compile(checkpointer=SQLAlchemySaver(saver.engine))
    assert fresh.get_state(cfg).values == g.get_state(cfg).values
    saver.delete_for_runs(["run-2"])
    assert _types(saver.engine, "runs") == {"checkpoints": [], "frames": [], "writes": [],
                                            "dicts": []}


def test_reads_across_more_threads_than_memory_holds_dictionaries_for(saver) -> None:
    """A read pins the dictionaries its rows name: the saver's bounded map may drop
    them meanwhile, as it does here holding two of four."""
    g = chat_graph(40).compile(checkpointer=saver)
    for i in range(4):
        g.invoke(_start(), {"configurable": {"thread_id": f"many-{i}"}})
    small = SQLAlchemySaver(saver.engine)
    small._dicts = Dictionaries(size=2)
    everything = list(small.list(None))
    assert len(everything) == len(list(saver.list(None)))
    for i in range(4):
        cfg = {"configurable": {"thread_id": f"many-{i}"}}
        assert small.get_tuple(cfg).checkpoint == saver.get_tuple(cfg).checkpoint


def test_a_new_thread_gets_a_copy_of_the_last_dictionary_when_it_pays(saver) -> None:
    """The second thread of a graph is not trained a dictionary of its own: the first
    one's compresses its rows as well, so the thread stores a copy of it. Rows unlike
    what it was trained on get one of their own."""
    import random

    g = chat_graph(40).compile(checkpointer=saver)
    g.invoke(_start(), {"configurable": {"thread_id": "first"}})
    (first,) = _types(saver.engine, "first")["dicts"]
    assert saver._dicts.recent is not None
    g.invoke(_start(), {"configurable": {"thread_id": "second"}})
    assert _types(saver.engine, "second")["dicts"] == [first]
    # each thread owns its copy: the first goes, the second still reads back
    saver.delete_thread("first")
    ref = chat_graph(40).compile(checkpointer=InMemorySaver())
    ref.invoke(_start(), {"configurable": {"thread_id": "second"}})
    fresh = chat_graph(40).compile(checkpointer=SQLAlchemySaver(saver.engine))
    cfg = {"configurable": {"thread_id": "second"}}
    assert _hist(fresh, cfg) == _hist(ref, cfg)
    # a dictionary of rows unlike this graph's does not pay on its rows: a thread trains
    # its own instead of copying that one
    rng = random.Random(7)
    unlike = [b'{"sensor":"north-%d","reading":%d,"unit":"kelvin"}' % (
        rng.randrange(99), rng.randrange(10**6)) * 6 for _ in range(TRAIN_ROWS)]
    foreign = train(unlike, [static_size(r) for r in unlike])
    assert foreign is not None
    saver._dicts.recent = foreign
    g.invoke(_start(), {"configurable": {"thread_id": "third"}})
    (third,) = _types(saver.engine, "third")["dicts"]
    assert third not in (first, f"{DICT_VERSION}{foreign.dict_id:08x}")
    assert saver._dicts.recent is not foreign


def test_threads_written_side_by_side_each_get_their_own_dictionary(saver) -> None:
    g = chat_graph(40).compile(checkpointer=saver)
    ref = chat_graph(40).compile(checkpointer=InMemorySaver())
    tids = [f"side-{i}" for i in range(4)]

    def run(graph: Any, tid: str) -> None:
        cfg = {"configurable": {"thread_id": tid}}
        graph.invoke(_start(), cfg)
        graph.invoke({"count": 20}, cfg)

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda tid: run(g, tid), tids))
    fresh = chat_graph(40).compile(checkpointer=SQLAlchemySaver(saver.engine))
    for tid in tids:
        run(ref, tid)
        cfg = {"configurable": {"thread_id": tid}}
        assert len(_types(saver.engine, tid)["dicts"]) == 1
        assert _hist(fresh, cfg) == _hist(ref, cfg)
