"""Property test: any sequence of appends, edits, removals, forks, copies, prunes and
restarts reads back, checkpoint for checkpoint, exactly as InMemorySaver returns it."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, RemoveMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from typing_extensions import TypedDict

from relaygraph.checkpointers import SQLAlchemySaver, _tdict
from relaygraph.checkpointers._schema import blobs
from relaygraph.checkpointers._tdict import DICT_TYPE


class S(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], add_messages]
    tally: dict[str, int]
    turns: int


def _graph() -> StateGraph:
    def agent(state: S) -> dict[str, Any]:
        n = state.get("turns", 0) + 1
        tally = dict(state.get("tally") or {})
        tally["agent"] = tally.get("agent", 0) + 1
        return {"messages": [AIMessage(f"answer {n}", id=f"ai-{n}-{len(state['messages'])}")],
                "tally": tally, "turns": n}

    b = StateGraph(S)
    b.add_node("agent", agent)
    b.add_edge(START, "agent")
    b.add_edge("agent", END)
    return b


OPS = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(1, 3)),
        st.tuples(st.just("edit"), st.integers(0, 50)),
        st.tuples(st.just("remove"), st.integers(0, 50)),
        st.tuples(st.just("fork"), st.integers(0, 50)),
        st.tuples(st.just("copy"), st.just(0)),
        st.tuples(st.just("prune"), st.integers(1, 6)),
        st.tuples(st.just("restart"), st.just(0)),
    ),
    min_size=3, max_size=10,
)


def _hist(graph, cfg) -> list[tuple[Any, Any]]:
    return [(s.values, s.next) for s in graph.get_state_history(cfg)]


def _check(ops, url: str, warmup: int = 0) -> None:
    engine = sa.create_engine(url)
    saver = SQLAlchemySaver(engine, segment_every=2 + len(ops) % 3)
    saver.setup()
    ref = _graph().compile(checkpointer=InMemorySaver())
    g = _graph().compile(checkpointer=saver)
    tid = uuid.uuid4().hex
    cfg = {"configurable": {"thread_id": tid}}
    counter = 0
    for graph in (ref, g):
        graph.invoke({"messages": [HumanMessage("start", id="start")], "turns": 0}, cfg)
    for i in range(warmup):
        for graph in (ref, g):
            graph.invoke({"messages": [HumanMessage(f"warm-up question {i}, in a few words",
                                                    id=f"w{i}")]}, cfg)
    if warmup:
        with engine.connect() as c:  # the rows from here on use the thread's dictionary
            assert c.execute(sa.select(sa.func.count()).select_from(blobs).where(
                blobs.c.thread_id == tid, blobs.c.type == DICT_TYPE)).scalar_one() == 1
    kept: int | None = None  # after a prune, only the newest `kept` + later ones remain
    at_prune = 0
    for op, arg in ops:
        counter += 1
        msgs = ref.get_state(cfg).values["messages"]
        if op == "append":
            update = {"messages": [HumanMessage(f"q{counter}-{i}", id=f"h{counter}-{i}")
                                   for i in range(arg)]}
            for graph in (ref, g):
                graph.invoke(update, cfg)
        elif op in ("edit", "remove") and msgs:
            target = msgs[arg % len(msgs)]
            new = (HumanMessage(f"edited {counter}", id=target.id) if op == "edit"
                   else RemoveMessage(id=target.id))
            for graph in (ref, g):
                graph.update_state(cfg, {"messages": [new]})
        elif op == "fork":
            avail = len(_hist(g, cfg))
            idx = arg % avail
            for graph in (ref, g):
                old = list(graph.get_state_history(cfg))[idx]
                graph.update_state(old.config, {"messages": [
                    HumanMessage(f"fork {counter}", id=f"f{counter}")]})
        elif op == "copy":
            other = uuid.uuid4().hex
            saver.copy_thread(tid, other)
            assert _hist(g, {"configurable": {"thread_id": other}}) == _hist(g, cfg)
        elif op == "prune":
            before = len(_hist(g, cfg))
            saver.prune([tid], keep_last=arg)
            kept, at_prune = min(arg, before), len(_hist(ref, cfg))
        elif op == "restart":
            saver = SQLAlchemySaver(engine, segment_every=saver.segment_every)
            g = _graph().compile(checkpointer=saver)
        mine, theirs = _hist(g, cfg), _hist(ref, cfg)
        if kept is None:
            assert mine == theirs
        else:
            assert len(mine) == kept + len(theirs) - at_prune
            assert mine == theirs[: len(mine)]
        # point reads of a few checkpoints go through get_tuple, not list
        for snap in list(g.get_state_history(cfg))[:: max(1, len(mine) // 3)]:
            assert g.get_state(snap.config).values == snap.values
    engine.dispose()


@pytest.fixture(params=["plain", "dictionary"])
def warmup(request, monkeypatch) -> int:
    """Steps run before the random operations. ``dictionary``: thread dictionaries are
    trained after a dozen rows and always kept, and the warm-up trains one, so that the
    random histories run on rows compressed with it."""
    if request.param == "plain":
        return 0
    monkeypatch.setattr(_tdict, "TRAIN_ROWS", 12)
    monkeypatch.setattr(_tdict, "HOLDOUT", 4)
    monkeypatch.setattr(_tdict, "MIN_GAIN", -1.0)
    return 8


@settings(max_examples=25, deadline=None, suppress_health_check=[
    HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(ops=OPS)
def test_random_histories_match_inmemory_sqlite(sqlite_backend, warmup, ops) -> None:
    _check(ops, sqlite_backend.url, warmup)


@pytest.mark.postgres
@settings(max_examples=10, deadline=None, suppress_health_check=[
    HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(ops=OPS)
def test_random_histories_match_inmemory_postgres(pg_backend, warmup, ops) -> None:
    _check(ops, pg_backend.url, warmup)
