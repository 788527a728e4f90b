"""Reading threads back from a checkpointer: listing, status and pending reviews.

Shared by the CLI and the HTTP app. One private core (grouping checkpoints into threads,
classifying interrupts) and two thin shells, sync and async.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver, CheckpointTuple
from langgraph.types import Interrupt, StateSnapshot

from relaygraph.observe import ThreadStatus as _Status
from relaygraph.observe import thread_status

GRAPH_ID_KEY = "graph_id"
"""Checkpoint metadata key naming the graph a thread belongs to (set from the run config)."""

ThreadStatus = _Status | Literal["unknown"]


@dataclass(frozen=True)
class ThreadSummary:
    """One thread as seen from its latest checkpoint.

    Attributes:
        thread_id: the thread.
        graph_id: the graph that ran it (checkpoint metadata ``graph_id``), if recorded.
        step: the latest step number.
        updated_at: ISO time of the latest checkpoint.
        checkpoints: how many checkpoints the thread has (root namespace).
        status: as decided by `relaygraph.observe.thread_status` (``running``,
            ``waiting``, ``interrupted``, ``finished``, ``failed``), or ``unknown`` when
            the graph is not known here.
        next: nodes whose work is pending.
        interrupts: open interrupts as ``{"id", "value"}`` dicts.
    """

    thread_id: str
    graph_id: str | None
    step: int | None
    updated_at: str | None
    checkpoints: int
    status: ThreadStatus = "unknown"
    next: tuple[str, ...] = ()
    interrupts: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "thread_id": self.thread_id, "graph_id": self.graph_id, "step": self.step,
            "updated_at": self.updated_at, "checkpoints": self.checkpoints,
            "status": self.status, "next": list(self.next), "interrupts": self.interrupts,
        }


def thread_config(thread_id: str, graph_id: str | None = None) -> RunnableConfig:
    """The run config for a thread; ``graph_id`` is recorded in checkpoint metadata."""
    config: RunnableConfig = {"configurable": {"thread_id": thread_id}}
    if graph_id is not None:
        config["metadata"] = {GRAPH_ID_KEY: graph_id}
    return config


@dataclass
class _Acc:
    latest: CheckpointTuple
    count: int = 0


def _group(tuples: Iterable[CheckpointTuple]) -> dict[str, _Acc]:
    out: dict[str, _Acc] = {}
    for t in tuples:
        conf = t.config.get("configurable", {})
        if conf.get("checkpoint_ns", ""):
            continue  # subgraph checkpoints belong to their parent thread
        tid = str(conf.get("thread_id"))
        acc = out.get(tid)
        if acc is None:
            out[tid] = acc = _Acc(latest=t)
        elif _newer(t, acc.latest):
            acc.latest = t
        acc.count += 1
    return out


def _grouped(checkpointer: BaseCheckpointSaver, limit: int | None) -> dict[str, _Acc]:
    # relaygraph's savers list threads in SQL and read only each thread's head
    from relaygraph.checkpointers import BaseSQLAlchemySaver

    if not isinstance(checkpointer, BaseSQLAlchemySaver):
        return _group(checkpointer.list(None))
    out: dict[str, _Acc] = {}
    for info in checkpointer.list_threads(limit=limit):
        head = checkpointer.get_tuple({"configurable": {
            "thread_id": info.thread_id, "checkpoint_id": info.latest_checkpoint_id}})
        if head is not None:
            out[info.thread_id] = _Acc(latest=head, count=info.checkpoints)
    return out


async def _agrouped(checkpointer: BaseCheckpointSaver, limit: int | None) -> dict[str, _Acc]:
    from relaygraph.checkpointers import BaseSQLAlchemySaver

    if not isinstance(checkpointer, BaseSQLAlchemySaver):
        return _group([t async for t in checkpointer.alist(None)])
    out: dict[str, _Acc] = {}
    for info in await checkpointer.alist_threads(limit=limit):  # type: ignore[attr-defined]
        head = await checkpointer.aget_tuple({"configurable": {
            "thread_id": info.thread_id, "checkpoint_id": info.latest_checkpoint_id}})
        if head is not None:
            out[info.thread_id] = _Acc(latest=head, count=info.checkpoints)
    return out


def _newer(a: CheckpointTuple, b: CheckpointTuple) -> bool:
    # checkpoint ids are monotonically increasing (uuid6) within a thread
    return str(a.config["configurable"]["checkpoint_id"]) > str(
        b.config["configurable"]["checkpoint_id"])


def interrupt_dicts(interrupts: Iterable[Interrupt]) -> list[dict[str, Any]]:
    """Interrupts as plain ``{"id", "value"}`` dicts."""
    return [{"id": i.id, "value": i.value} for i in interrupts]


def _meta_graph_id(tup: CheckpointTuple) -> str | None:
    gid = (tup.metadata or {}).get(GRAPH_ID_KEY)
    return gid if isinstance(gid, str) else None


def _summary(tid: str, acc: _Acc, snapshot: StateSnapshot | None) -> ThreadSummary:
    meta = acc.latest.metadata or {}
    step = meta.get("step")
    gid = _meta_graph_id(acc.latest)
    if snapshot is None:
        return ThreadSummary(tid, gid, step, acc.latest.checkpoint.get("ts"), acc.count)
    report = thread_status(snapshot)
    return ThreadSummary(tid, gid, step, acc.latest.checkpoint.get("ts"), acc.count,
                         report.status, report.next, interrupt_dicts(snapshot.interrupts))


def _graph_for(graphs: Mapping[str, Any], graph_id: str | None) -> Any | None:
    if graph_id is not None:
        return graphs.get(graph_id)
    if len(graphs) == 1:
        return next(iter(graphs.values()))
    return None


def list_threads(checkpointer: BaseCheckpointSaver, graphs: Mapping[str, Any],
                 *, limit: int | None = None) -> list[ThreadSummary]:
    """List threads, newest first, with their status read through the owning graph.

    Args:
        checkpointer: the saver holding the threads.
        graphs: compiled graphs by graph id; threads of other graphs get status ``unknown``.
        limit: keep only the newest ``limit`` threads.
    """
    grouped = _grouped(checkpointer, limit)
    order = sorted(grouped.items(), key=lambda kv: str(kv[1].latest.checkpoint.get("ts")),
                   reverse=True)[:limit]
    out = []
    for tid, acc in order:
        graph = _graph_for(graphs, _meta_graph_id(acc.latest))
        snap = graph.get_state(thread_config(tid)) if graph is not None else None
        out.append(_summary(tid, acc, snap))
    return out


async def alist_threads(checkpointer: BaseCheckpointSaver, graphs: Mapping[str, Any],
                        *, limit: int | None = None) -> list[ThreadSummary]:
    """Async twin of `list_threads`."""
    grouped = await _agrouped(checkpointer, limit)
    order = sorted(grouped.items(), key=lambda kv: str(kv[1].latest.checkpoint.get("ts")),
                   reverse=True)[:limit]
    out = []
    for tid, acc in order:
        graph = _graph_for(graphs, _meta_graph_id(acc.latest))
        snap = await graph.aget_state(thread_config(tid)) if graph is not None else None
        out.append(_summary(tid, acc, snap))
    return out


def thread_graph_id(checkpointer: BaseCheckpointSaver, thread_id: str) -> str | None:
    """The graph id recorded on a thread's latest checkpoint, or None if not recorded.

    Raises:
        KeyError: the thread has no checkpoint.
    """
    tup = checkpointer.get_tuple(thread_config(thread_id))
    if tup is None:
        raise KeyError(thread_id)
    return _meta_graph_id(tup)


async def athread_graph_id(checkpointer: BaseCheckpointSaver, thread_id: str) -> str | None:
    """Async twin of `thread_graph_id`."""
    tup = await checkpointer.aget_tuple(thread_config(thread_id))
    if tup is None:
        raise KeyError(thread_id)
    return _meta_graph_id(tup)


def _step_rows(snapshots: list[StateSnapshot]) -> list[dict[str, Any]]:
    rows = []
    for snap in reversed(snapshots):  # history comes newest first
        step = (snap.metadata or {}).get("step")
        for task in snap.tasks:
            if task.result is None and not task.interrupts:
                continue
            rows.append({
                "step": step + 1 if isinstance(step, int) else step,
                "node": task.name,
                "wrote": sorted(task.result) if isinstance(task.result, dict) else [],
                "interrupted": bool(task.interrupts) and task.result is None,
                "checkpoint_id": snap.config["configurable"].get("checkpoint_id"),
                "at": snap.created_at,
            })
    return rows


def history_steps(graph: Any, config: RunnableConfig) -> list[dict[str, Any]]:
    """Per step, oldest first: the node that ran, the keys it wrote, whether it paused."""
    return _step_rows(list(graph.get_state_history(config)))


async def ahistory_steps(graph: Any, config: RunnableConfig) -> list[dict[str, Any]]:
    """Async twin of `history_steps`."""
    return _step_rows([s async for s in graph.aget_state_history(config)])
