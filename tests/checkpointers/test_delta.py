"""Append-delta storage, retention and LangGraph's DeltaChannel on every database."""

from __future__ import annotations

import functools
import secrets
import subprocess
import sys
import threading
from typing import Annotated

import sqlalchemy as sa
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from langgraph.channels import DeltaChannel
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from typing_extensions import TypedDict

from relaygraph.checkpointers import SQLAlchemySaver
from relaygraph.checkpointers._schema import LATEST, blobs, migrations_table

from ._graphs import chat_graph


def _history(graph, cfg):
    return [(s.values, s.next) for s in graph.get_state_history(cfg)]


def _add_many(state: list, writes: list) -> list:
    return functools.reduce(add_messages, writes, state)


class DeltaState(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], DeltaChannel(_add_many, snapshot_frequency=4)]
    count: int


def delta_graph(steps: int) -> StateGraph:
    def agent(state: DeltaState) -> dict:
        n = state.get("count", 0) + 1
        return {"messages": [AIMessage(f"reply {n}", id=f"m{n}")], "count": n}

    b = StateGraph(DeltaState)
    b.add_node("agent", agent)
    b.add_edge(START, "agent")
    b.add_conditional_edges("agent", lambda s: END if s["count"] >= steps else "agent")
    return b


class _Counter:
    """Statements sent, through SQLAlchemy or (PostgreSQL writes) straight to psycopg."""

    def __init__(self, engine: sa.Engine, saver: object = None) -> None:
        self.n = 0
        self.round_trips = 0
        sa.event.listen(engine, "before_cursor_execute", self._hit)
        direct = getattr(saver, "_direct", None)
        if direct is not None:
            run = direct.run

            def counted(conn, writes):  # noqa: ANN001, ANN202
                self.n += len(writes)
                self.round_trips += 1
                return run(conn, writes)

            direct.run = counted
            read = direct.read

            def counted_read(conn, stmt, params):  # noqa: ANN001, ANN202
                rows = read(conn, stmt, params)
                if rows is not None:
                    self.n += 1
                    self.round_trips += 1
                return rows

            direct.read = counted_read
            execute = direct.execute

            def counted_execute(conn, sql):  # noqa: ANN001, ANN202
                self.n += 1
                self.round_trips += 1
                return execute(conn, sql)

            direct.execute = counted_execute

    def _hit(self, *args) -> None:
        self.n += 1
        self.round_trips += 1


def test_langgraph_delta_channel_matches_inmemory(saver) -> None:
    ref = delta_graph(11).compile(checkpointer=InMemorySaver())
    g = delta_graph(11).compile(checkpointer=saver)
    cfg = {"configurable": {"thread_id": "dc"}}
    for graph in (ref, g):
        graph.invoke({"messages": [HumanMessage("hi", id="h")], "count": 0}, cfg)
    assert _history(g, cfg) == _history(ref, cfg)
    assert len(g.get_state(cfg).values["messages"]) == 12


def test_delta_channel_history_is_a_constant_number_of_queries(saver) -> None:
    g = delta_graph(90).compile(checkpointer=saver)
    counts = []
    for tid, steps in (("long", 30), ("longer", 90)):
        cfg = {"configurable": {"thread_id": tid}}
        delta_graph(steps).compile(checkpointer=saver).invoke(
            {"messages": [HumanMessage("hi", id="h")], "count": 0}, cfg)
        counter = _Counter(saver.engine)
        head = g.get_state(cfg).config
        counter.n = 0
        hist = saver.get_delta_channel_history(config=head, channels=["messages"])
        counts.append(counter.n)
        sa.event.remove(saver.engine, "before_cursor_execute", counter._hit)
        assert hist["messages"]["writes"] or "seed" in hist["messages"]
    assert counts[0] == counts[1] <= 6, counts


def test_prune_keeps_delta_channel_state_readable(saver) -> None:
    g = delta_graph(9).compile(checkpointer=saver)
    cfg = {"configurable": {"thread_id": "dc-prune"}}
    g.invoke({"messages": [HumanMessage("hi", id="h")], "count": 0}, cfg)
    before = g.get_state(cfg).values
    saver.prune(["dc-prune"], strategy="keep_latest")
    assert g.get_state(cfg).values == before
    g.invoke({"messages": [HumanMessage("more", id="h2")], "count": 0}, cfg)
    assert [m.id for m in g.get_state(cfg).values["messages"]][:11] == [
        "h", *[f"m{i}" for i in range(1, 10)], "h2"]


def test_bytes_per_step_stay_flat(backend) -> None:
    engine = sa.create_engine(backend.url)
    saver = SQLAlchemySaver(engine, segment_every=8)
    saver.setup()
    g = chat_graph(10_000).compile(checkpointer=saver)
    cfg = {"configurable": {"thread_id": "flat"}, "recursion_limit": 10_000}

    def stored() -> int:
        with engine.connect() as c:
            return int(c.execute(sa.select(sa.func.sum(sa.func.length(blobs.c.blob)))).scalar())

    sizes = []
    for chunk in range(3):
        for _ in range(40):
            g.invoke(None if chunk or _ else {"messages": [HumanMessage("go", id="go")],
                                                "count": 0}, cfg, interrupt_after=["critic"])
        sizes.append(stored())
    growth_1, growth_2 = sizes[1] - sizes[0], sizes[2] - sizes[1]
    assert growth_2 < 1.25 * growth_1, sizes  # not quadratic: the last 40 cost ~ the previous
    msgs = g.get_state(cfg).values["messages"]
    assert len(msgs) == 1 + 3 * 40 * 3
    engine.dispose()


def test_copy_thread_then_continue_both(saver) -> None:
    ref = chat_graph(6).compile(checkpointer=InMemorySaver())
    g = chat_graph(6).compile(checkpointer=saver)
    src = {"configurable": {"thread_id": "src"}}
    first = {"messages": [HumanMessage("a", id="a")], "count": 0}
    second = {"messages": [HumanMessage("b", id="b")], "count": 3}
    ref.invoke(first, src)
    g.invoke(first, src)
    before = _history(g, src)
    saver.copy_thread("src", "dst")
    dst = {"configurable": {"thread_id": "dst"}}
    assert _history(g, dst) == before
    ref.invoke(second, src)
    g.invoke(second, dst)
    assert _history(g, dst) == _history(ref, src)
    assert _history(g, src) == before  # the source is untouched


def test_keep_last_caps_history_and_keeps_chains(backend) -> None:
    saver = SQLAlchemySaver(sa.create_engine(backend.url), segment_every=4)
    saver.setup()
    ref = chat_graph(30).compile(checkpointer=InMemorySaver())
    g = chat_graph(30).compile(checkpointer=saver)
    cfg = {"configurable": {"thread_id": "cap"}}
    for graph in (ref, g):
        graph.invoke({"messages": [HumanMessage("a", id="a")], "count": 0}, cfg)

    def count() -> int:
        with saver.engine.connect() as c:
            return c.execute(sa.select(sa.func.count()).select_from(blobs)).scalar()

    before = count()
    saver.prune(["cap"], keep_last=5)
    assert _history(g, cfg) == _history(ref, cfg)[:5]
    # unreachable frames are gone; the segment chain and the last deltas stay
    assert count() < before * 0.5, (count(), before)
    g.invoke({"messages": [HumanMessage("b", id="b")], "count": 0}, cfg)
    ref.invoke({"messages": [HumanMessage("b", id="b")], "count": 0}, cfg)
    assert g.get_state(cfg).values == ref.get_state(cfg).values
    saver.engine.dispose()


def test_setup_is_idempotent_and_safe_concurrently(backend) -> None:
    # SQLite waits for the write lock as long as from_conn_string's engines do
    args = {"timeout": 30} if backend.kind == "sqlite" else {}
    engine = sa.create_engine(backend.url, connect_args=args)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            SQLAlchemySaver(engine).setup()
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    code = ("import sys; from relaygraph.checkpointers import SQLAlchemySaver\n"
            "with SQLAlchemySaver.from_conn_string(sys.argv[1]) as s: s.setup()")
    procs = [subprocess.Popen([sys.executable, "-c", code, backend.url]) for _ in range(2)]
    for t in threads:
        t.join()
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    assert errors == []
    SQLAlchemySaver(engine).setup()
    with engine.connect() as c:
        rows = c.execute(sa.select(migrations_table.c.version).where(
            migrations_table.c.component == "checkpoints")).scalars().all()
    assert sorted(rows) == list(range(1, LATEST + 1))
    engine.dispose()


def test_postgres_keeps_page_sized_rows_inline(backend) -> None:
    """PostgreSQL: a segment of a few kB stays in the table, not in a TOAST relation."""
    if backend.kind != "postgres":
        return
    with SQLAlchemySaver.from_conn_string(backend.url) as saver:
        saver.setup()
        with saver.engine.connect() as c:
            opts = dict(c.execute(sa.text(
                "SELECT relname, reloptions FROM pg_class WHERE relname IN "
                "('relaygraph_checkpoints', 'relaygraph_blobs', 'relaygraph_writes')")).all())
            assert opts == {name: ["toast_tuple_target=8160"] for name in opts}, opts
            assert len(opts) == 3
        g = chat_graph(2).compile(checkpointer=saver)
        # 6,000 hex digits compress to about 3.2 kB: a row past the default threshold
        g.invoke({"messages": [HumanMessage(secrets.token_hex(3000), id="h")], "count": 0},
                 {"configurable": {"thread_id": "inline"}})
        with saver.engine.connect() as c:
            biggest = c.execute(sa.select(sa.func.max(sa.func.octet_length(blobs.c.blob))))
            assert biggest.scalar_one() > 2100  # past PostgreSQL's default TOAST threshold
            toasted = c.execute(sa.text(
                "SELECT pg_relation_size(reltoastrelid) FROM pg_class "
                "WHERE relname = 'relaygraph_blobs'")).scalar_one()
            assert toasted == 0


def _dictionaries(engine: sa.Engine, thread_id: str) -> int:
    with engine.connect() as c:
        return c.execute(sa.select(sa.func.count()).select_from(blobs).where(
            blobs.c.thread_id == thread_id, blobs.c.type == "zdict")).scalar_one()


def test_statements_per_operation_stay_constant(saver) -> None:
    """A step costs a fixed, small number of statements however long the thread is."""
    g = chat_graph(40).compile(checkpointer=saver)
    cfg = {"configurable": {"thread_id": "count"}}
    g.invoke({"messages": [HumanMessage("hi", id="h")], "count": 0}, cfg)
    head = saver.get_tuple(cfg)
    counter = _Counter(saver.engine, saver)
    extra = 1 if saver.engine.dialect.name == "sqlite" else 0  # BEGIN IMMEDIATE

    counter.n = 0
    saver.get_tuple(cfg)
    # checkpoint + its writes, then the frames it needs (the saver knows what the deltas
    # that point at earlier writes stand for: it stored them)
    assert counter.n == 2
    # 40 steps: the thread's later rows are compressed with a dictionary of its own
    assert _dictionaries(saver.engine, "count") == 1
    cold = SQLAlchemySaver(saver.engine)  # another process: those writes are read once
    cold_counter = _Counter(saver.engine, cold)
    first = cold.get_tuple(cfg)
    # its first operation checks the schema version once and loads the dictionary once
    assert cold_counter.n == 1 + 3 + 1
    cold_counter.n = 0
    assert cold.get_tuple(cfg) == first
    assert cold_counter.n == 2
    assert first == saver.get_tuple(cfg)

    counter.n = 0
    saver.put_writes(head.config, [("messages", [AIMessage("x", id="x")])], "fresh-task")
    assert counter.n == 1 + extra

    cp = dict(head.checkpoint)
    v = saver.get_next_version(max(cp["channel_versions"].values()))
    cp["id"] = "1ffffffff-ffff-6fff-ffff-ffffffffffff"[1:]
    cp["channel_values"] = {**cp["channel_values"],
                            "messages": [*cp["channel_values"]["messages"],
                                         AIMessage("y", id="y")]}
    cp["channel_versions"] = {**cp["channel_versions"], "messages": v}
    counter.n = counter.round_trips = 0
    saver.put(head.config, cp, {"source": "update", "step": 99}, {"messages": v})
    if saver.engine.dialect.name == "postgresql":
        # one statement: the frame row in a CTE, then the checkpoint row
        assert (counter.n, counter.round_trips) == (1, 1)
    else:
        assert counter.n == 2 + extra  # one frame row, one checkpoint row
    sa.event.remove(saver.engine, "before_cursor_execute", counter._hit)
    assert saver.get_tuple(cfg).checkpoint["channel_values"]["messages"][-1].id == "y"


def test_caches_keep_one_generation_of_a_threads_items(saver) -> None:
    """The saver remembers the latest stored value of each list channel (to store the
    next one as a delta), not every earlier one: each invoke starts from values decoded
    afresh, and keeping the tails of older versions would keep all those generations of
    messages alive. A fork from an older checkpoint still reads back exactly."""
    ref = chat_graph(12).compile(checkpointer=InMemorySaver())
    g = chat_graph(12).compile(checkpointer=saver)
    cfg = {"configurable": {"thread_id": "gen"}}
    for graph in (ref, g):
        graph.invoke({"messages": [HumanMessage("a", id="a")], "count": 0}, cfg,
                     interrupt_after=["critic"])
        for _ in range(3):  # each invoke reads the thread back first (get_tuple)
            graph.invoke(None, cfg, interrupt_after=["critic"])
    tails = [k for k in saver._cache._tails._d if k[0] == "gen"]
    assert sorted(k[2] for k in tails) == ["log", "messages"], tails
    assert [k for k in saver._cache.writes._by_ckpt._d if k[0] == "gen"] == []
    # the fork's first put finds no tail for the old version: it stores the value whole
    old = list(g.get_state_history(cfg))[5].config
    old_ref = list(ref.get_state_history(cfg))[5].config
    extra = {"messages": [AIMessage("fork", id="fork")]}
    forked = g.update_state(old, extra)
    forked_ref = ref.update_state(old_ref, extra)
    assert g.get_state(forked).values == ref.get_state(forked_ref).values
    g.invoke(None, forked)
    ref.invoke(None, forked_ref)
    assert _history(g, cfg) == _history(ref, cfg)
