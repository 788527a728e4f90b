"""Real graphs on every database: same states as InMemorySaver, sync and async."""

from __future__ import annotations

from langchain_core.messages import HumanMessage, RemoveMessage
from langgraph.checkpoint.memory import InMemorySaver

from relaygraph.checkpointers import AsyncSQLAlchemySaver

from ._graphs import chat_graph


def _history(graph, cfg):
    return [(s.values, s.next, s.metadata.get("step")) for s in graph.get_state_history(cfg)]


async def _ahistory(graph, cfg):
    return [(s.values, s.next, s.metadata.get("step")) async for s in graph.aget_state_history(cfg)]


async def test_graph_matches_inmemory(any_saver) -> None:
    ref = chat_graph(15).compile(checkpointer=InMemorySaver())
    g = chat_graph(15).compile(checkpointer=any_saver)
    cfg = {"configurable": {"thread_id": "t-1"}}
    inp = {"messages": [HumanMessage("hello", id="h0")], "count": 0}
    ref.invoke(inp, cfg)
    if isinstance(any_saver, AsyncSQLAlchemySaver):
        await g.ainvoke(inp, cfg)
        got = await _ahistory(g, cfg)
        state = await g.aget_state(cfg)
    else:
        g.invoke(inp, cfg)
        got = _history(g, cfg)
        state = g.get_state(cfg)
    assert got == _history(ref, cfg)
    assert len(state.values["messages"]) == 1 + 15
    assert state.values["notes"] == {"planner": 13, "worker": 14, "critic": 15}


def test_edits_removals_and_forks_reconstruct_exactly(saver) -> None:
    ref = chat_graph(3).compile(checkpointer=InMemorySaver())
    g = chat_graph(3).compile(checkpointer=saver)
    cfg = {"configurable": {"thread_id": "fork"}}
    for graph in (ref, g):
        graph.invoke({"messages": [HumanMessage("hi", id="h0")], "count": 0}, cfg)
        # edit an old message in place (same id -> replaced), then remove one
        graph.update_state(cfg, {"messages": [HumanMessage("hi, edited", id="h0")]})
        graph.update_state(cfg, {"messages": [RemoveMessage(id="worker-2")]})
        # fork from the 4th-oldest checkpoint and continue there
        old = list(graph.get_state_history(cfg))[-4]
        fork_cfg = graph.update_state(old.config, {"messages": [HumanMessage("fork", id="f1")]})
        graph.invoke(None, fork_cfg)
    assert _history(g, cfg) == _history(ref, cfg)
    latest = g.get_state(cfg).values["messages"]
    ids = [m.id for m in latest]
    assert ids[:2] == ["h0", "planner-1"] and "f1" in ids  # the fork is the head now
    assert latest[0].content == "hi"  # the fork started before the edit


def test_restart_with_empty_cache_reads_and_continues(backend) -> None:
    """A new saver (new process, cold cache) rebuilds deltas and keeps appending."""
    import sqlalchemy as sa

    from relaygraph.checkpointers import SQLAlchemySaver

    cfg = {"configurable": {"thread_id": "cold"}}
    ref = chat_graph(4).compile(checkpointer=InMemorySaver())
    ref.invoke({"messages": [HumanMessage("x", id="x")], "count": 0}, cfg)
    ref.invoke({"messages": [HumanMessage("y", id="y")], "count": 0}, cfg)
    e1 = sa.create_engine(backend.url)
    s1 = SQLAlchemySaver(e1, segment_every=3)
    s1.setup()
    chat_graph(4).compile(checkpointer=s1).invoke(
        {"messages": [HumanMessage("x", id="x")], "count": 0}, cfg)
    e1.dispose()
    e2 = sa.create_engine(backend.url)
    s2 = SQLAlchemySaver(e2, segment_every=3)
    g2 = chat_graph(4).compile(checkpointer=s2)
    g2.invoke({"messages": [HumanMessage("y", id="y")], "count": 0}, cfg)
    assert _history(g2, cfg) == _history(ref, cfg)
    with e2.connect() as c:
        roots, deltas = c.execute(sa.text(
            "SELECT SUM(CASE WHEN base IS NULL THEN 1 ELSE 0 END), "
            "SUM(CASE WHEN base IS NULL THEN 0 ELSE 1 END) "
            "FROM relaygraph_blobs WHERE channel = 'messages'")).one()
    # the cold saver picked up the chain (LangGraph reads the head before it writes):
    # the whole list was stored once, every later version as a delta or segment
    assert roots == 1 and deltas > 0
    e2.dispose()


def test_history_across_many_list_pages(saver, monkeypatch) -> None:
    """Pages of list() share frames fetched along chains with later pages."""
    from relaygraph.checkpointers import _base

    monkeypatch.setattr(_base, "LIST_PAGE", 4)
    saver.segment_every = 3
    ref = chat_graph(20).compile(checkpointer=InMemorySaver())
    g = chat_graph(20).compile(checkpointer=saver)
    cfg = {"configurable": {"thread_id": "paged"}}
    for graph in (ref, g):
        graph.invoke({"messages": [HumanMessage("hi", id="h0")], "count": 0}, cfg)
    assert _history(g, cfg) == _history(ref, cfg)
    assert [t.checkpoint["id"] for t in saver.list(cfg, limit=7)] == [
        t.checkpoint["id"] for t in list(saver.list(cfg))[:7]]


async def test_list_threads_newest_first_without_decoding(any_saver) -> None:
    from relaygraph.checkpointers import AsyncSQLAlchemySaver

    g = chat_graph(3).compile(checkpointer=any_saver)
    for tid in ("old", "mid", "new"):
        cfg = {"configurable": {"thread_id": tid}}
        if isinstance(any_saver, AsyncSQLAlchemySaver):
            await g.ainvoke({"messages": [HumanMessage("x", id="x")], "count": 0}, cfg)
        else:
            g.invoke({"messages": [HumanMessage("x", id="x")], "count": 0}, cfg)
    threads = await any_saver.alist_threads()
    assert [t.thread_id for t in threads] == ["new", "mid", "old"]
    assert all(t.checkpoints == 5 for t in threads)
    assert [t.thread_id for t in await any_saver.alist_threads(limit=1)] == ["new"]
