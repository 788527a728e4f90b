"""Graphs and helpers for the lease tests."""

from __future__ import annotations

import operator
from typing import Annotated, Any

import sqlalchemy as sa
from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict

from relaygraph.checkpointers import _schema as S


class CountState(TypedDict, total=False):
    count: int
    log: Annotated[list[str], operator.add]


def counter_graph(steps: int = 3, hook: Any = None) -> StateGraph:
    """One node run ``steps`` times; ``hook(n)`` is called inside the node at step n."""

    def step(state: CountState) -> dict[str, Any]:
        n = state.get("count", 0) + 1
        if hook is not None:
            hook(n)
        return {"count": n, "log": [f"step:{n}"]}

    b = StateGraph(CountState)
    b.add_node("step", step)
    b.add_edge(START, "step")
    b.add_conditional_edges("step", lambda s: END if s.get("count", 0) >= steps else "step")
    return b


def checkpoint_rows(url: str, thread_id: str) -> list[tuple[str, str | None]]:
    """``(checkpoint_id, parent_checkpoint_id)`` of every checkpoint of a thread's root
    namespace, straight from the table (no saver caches)."""
    c = S.checkpoints
    eng = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with eng.connect() as conn:
            rows = conn.execute(sa.select(c.c.checkpoint_id, c.c.parent_checkpoint_id).where(
                c.c.thread_id == thread_id, c.c.checkpoint_ns == "")).all()
    finally:
        eng.dispose()
    return [(r[0], r[1]) for r in rows]


def assert_linear(rows: list[tuple[str, str | None]]) -> None:
    """The checkpoints form one chain: one root, and no checkpoint has two children."""
    parents = [p for _, p in rows]
    assert parents.count(None) == 1, f"{parents.count(None)} roots: {rows}"
    children: dict[str | None, int] = {}
    for p in parents:
        children[p] = children.get(p, 0) + 1
    forks = {p: n for p, n in children.items() if p is not None and n > 1}
    assert not forks, f"forked history: checkpoints with several children {forks}"
