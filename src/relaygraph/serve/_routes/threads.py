"""Threads: LangGraph's client protocol (create, get, search, state, history, delete) and
relaygraph's own listing, step history and timeline.

Every thread id a client sends is the client's own; it is namespaced by the caller's tenant
(`relaygraph.serve._tenancy`) before it reaches the saver, so another tenant's thread is a
404 exactly like a missing one.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from fastapi import APIRouter, HTTPException, Query, Response
from langgraph.types import StateSnapshot

from relaygraph.serve._json import to_json
from relaygraph.serve._protocol import (
    SDK_TO_RELAYGRAPH,
    Caller,
    CallerDep,
    CheckpointRef,
    HistoryRequest,
    StateAtCheckpoint,
    StateUpdate,
    ThreadCount,
    ThreadCreate,
    ThreadOut,
    ThreadPatch,
    ThreadPrune,
    ThreadSearch,
    ThreadStateOut,
    UpdateStateOut,
    state_out,
    thread_out,
)
from relaygraph.serve._runs import RunManager, get_manager
from relaygraph.serve._runstore import ThreadMeta

router = APIRouter(tags=["threads"])
log = logging.getLogger("relaygraph.serve")


# ------------------------------------------------------------------------------- helpers


class ThreadRef:
    """A thread the caller may see: its ids, metadata row and graph."""

    def __init__(self, external: str, internal: str, meta: ThreadMeta | None,
                 graph_id: str | None, graph: Any) -> None:
        self.external, self.internal, self.meta = external, internal, meta
        self.graph_id, self.graph = graph_id, graph

    def config(self, checkpoint_id: str | None = None, checkpoint_ns: str = ""
               ) -> dict[str, Any]:
        conf: dict[str, Any] = {"thread_id": self.internal}
        if checkpoint_id:
            conf["checkpoint_id"] = checkpoint_id
        if checkpoint_ns:
            conf["checkpoint_ns"] = checkpoint_ns
        return {"configurable": conf}


async def find_thread(caller: Caller, thread_id: str, manager: RunManager
                      ) -> ThreadRef | None:
    """The caller's thread, or None when it does not exist (in this tenant)."""
    internal = caller.internal(thread_id)
    meta = await manager.store.aget_thread(internal)
    graph_id = meta.graph_id if meta is not None else None
    if meta is None or graph_id is None:
        tup = await caller.ctx.checkpointer.aget_tuple({"configurable": {"thread_id": internal}})
        if tup is None and meta is None:
            return None
        if tup is not None and graph_id is None:
            gid = (tup.metadata or {}).get("graph_id")
            graph_id = gid if isinstance(gid, str) else None
    if graph_id is None and len(caller.ctx.graphs) == 1 and (meta is None):
        graph_id = next(iter(caller.ctx.graphs))
    return ThreadRef(thread_id, internal, meta, graph_id, caller.ctx.graphs.get(graph_id or ""))


async def require_thread(caller: Caller, thread_id: str, manager: RunManager) -> ThreadRef:
    ref = await find_thread(caller, thread_id, manager)
    if ref is None:
        raise HTTPException(404, f"thread {thread_id!r} not found")
    return ref


def _require_graph(ref: ThreadRef) -> Any:
    if ref.graph is None:
        raise HTTPException(409, f"thread {ref.external!r} has not run a graph served here "
                                 f"(graph {ref.graph_id!r}); start a run on it first")
    return ref.graph


async def live_state(caller: Caller, ref: ThreadRef) -> tuple[StateSnapshot | None, str]:
    """The thread's current snapshot and relaygraph status (running = a live lease)."""
    from relaygraph.serve._index import summarize

    running = await caller.ctx.leases.acurrent(ref.internal) is not None
    if ref.graph is None:
        return None, "running" if running else "finished"
    snap = await ref.graph.aget_state(ref.config())
    status, _, _ = summarize(snap, running=running)
    return snap, status


async def thread_json(caller: Caller, ref: ThreadRef, manager: RunManager) -> ThreadOut:
    """The ``Thread``; one whose state cannot be read is an ``error`` thread saying why."""
    try:
        snap, status = await live_state(caller, ref)
    except Exception as exc:  # noqa: BLE001 - a broken thread must not break a listing
        log.warning("thread %s cannot be read: %s", ref.internal, exc)
        out = thread_out(ref.external, ref.meta, None, "error", graph_id=ref.graph_id,
                         fallback_time=manager.clock())
        out.error = f"state cannot be read: {type(exc).__name__}: {str(exc)[:300]}"
        return out
    return thread_out(ref.external, ref.meta, snap, status, graph_id=ref.graph_id,
                      fallback_time=manager.clock())


def _before_config(ref: ThreadRef, before: str | CheckpointRef | None) -> Any:
    if before is None:
        return None
    cid = before if isinstance(before, str) else before.checkpoint_id
    return ref.config(cid) if cid else None


# --------------------------------------------------------------------- protocol: threads


@router.post("/threads", response_model=ThreadOut)
async def create_thread(body: ThreadCreate, *, caller: CallerDep
                        ) -> ThreadOut:
    """Create a thread (a random id unless one is given)."""
    manager = await get_manager(caller.ctx)
    thread_id = body.thread_id or str(uuid.uuid4())
    existing = await find_thread(caller, thread_id, manager)
    metadata = dict(body.metadata or {})
    graph_id = body.graph_id or metadata.get("graph_id")
    if graph_id is not None and graph_id not in caller.ctx.graphs:
        raise HTTPException(422, f"graph_id {graph_id!r} is not served here; served: "
                                 f"{', '.join(sorted(caller.ctx.graphs))}")
    if existing is not None:
        if body.if_exists == "do_nothing":
            return await thread_json(caller, existing, manager)
        raise HTTPException(409, f"thread {thread_id!r} already exists; pass "
                                 f"if_exists='do_nothing' to get it instead")
    internal = caller.internal(thread_id)
    if body.supersteps:
        await _apply_supersteps(caller, internal, graph_id, body.supersteps)
    meta = await manager.store.aput_thread(internal, caller.tenant, graph_id, metadata)
    ref = ThreadRef(thread_id, meta.thread_id, meta, graph_id,
                    caller.ctx.graphs.get(graph_id or ""))
    if body.supersteps:
        await manager.refresh_index(internal, graph_id)
    return await thread_json(caller, ref, manager)


async def _apply_supersteps(caller: Caller, internal: str, graph_id: str | None,
                            supersteps: list[dict[str, Any]]) -> None:
    """Write a new thread's history: each superstep's updates as if its nodes had run."""
    from langgraph.errors import InvalidUpdateError
    from langgraph.types import StateUpdate as Update

    if graph_id is None:
        raise HTTPException(422, "supersteps need the thread's graph: pass graph_id")
    steps = []
    for i, step in enumerate(supersteps):
        updates = step.get("updates") if isinstance(step, dict) else None
        if not isinstance(updates, list) or not all(isinstance(u, dict) for u in updates):
            raise HTTPException(422, f"supersteps[{i}].updates must be a list of "
                                     f"{{values, as_node}} objects")
        steps.append([Update(u.get("values"), u.get("as_node")) for u in updates])
    try:
        await caller.ctx.graphs[graph_id].abulk_update_state(
            {"configurable": {"thread_id": internal}, "metadata": {"graph_id": graph_id}},
            steps)
    except (InvalidUpdateError, ValueError, TypeError, KeyError) as exc:
        raise HTTPException(422, f"cannot apply supersteps: {type(exc).__name__}: {exc}"
                            ) from None


@router.post("/threads/search", response_model=list[ThreadOut])
async def search_threads(body: ThreadSearch, *, caller: CallerDep
                         ) -> list[ThreadOut]:
    """The caller's threads, most recently updated first, filtered by metadata and status."""
    manager = await get_manager(caller.ctx)
    ids = [caller.internal(i) for i in body.ids] if body.ids else None
    statuses = SDK_TO_RELAYGRAPH[body.status] if body.status else None
    metas = await manager.store.asearch_threads(
        caller.tenant, meta=body.metadata, ids=ids, statuses=statuses, limit=body.limit,
        offset=body.offset, order=body.sort_order or "desc", sort_by=body.sort_by)
    out = []
    for meta in metas:
        ref = ThreadRef(caller.external(meta.thread_id), meta.thread_id, meta, meta.graph_id,
                        caller.ctx.graphs.get(meta.graph_id or ""))
        thread = await thread_json(caller, ref, manager)
        if body.values and not all(isinstance(thread.values, dict)
                                   and thread.values.get(k) == v
                                   for k, v in body.values.items()):
            continue
        out.append(thread)
    return out


@router.post("/threads/count", response_model=int)
async def count_threads(body: ThreadCount, *, caller: CallerDep) -> int:
    if body.values:
        raise HTTPException(422, "counting by values is not supported; filter by metadata "
                                 "or status")
    manager = await get_manager(caller.ctx)
    statuses = SDK_TO_RELAYGRAPH[body.status] if body.status else None
    return await manager.store.asearch_threads(  # type: ignore[no-any-return]
        caller.tenant, meta=body.metadata, statuses=statuses, count=True)


@router.get("/threads/{thread_id}", response_model=ThreadOut)
async def get_thread(thread_id: str, *, caller: CallerDep) -> ThreadOut:
    """LangGraph's ``Thread``: metadata, status, values and open interrupts by task."""
    manager = await get_manager(caller.ctx)
    ref = await require_thread(caller, thread_id, manager)
    return await thread_json(caller, ref, manager)


@router.patch("/threads/{thread_id}", response_model=ThreadOut)
async def patch_thread(thread_id: str, body: ThreadPatch, *, caller: CallerDep
                       ) -> ThreadOut:
    """Merge metadata into the thread's."""
    manager = await get_manager(caller.ctx)
    ref = await require_thread(caller, thread_id, manager)
    ref.meta = await manager.store.aput_thread(ref.internal, caller.tenant, ref.graph_id,
                                               body.metadata)
    return await thread_json(caller, ref, manager)


@router.delete("/threads/{thread_id}", status_code=204)
async def delete_thread(thread_id: str, *, caller: CallerDep) -> Response:
    """Delete the thread's checkpoints, runs and metadata (409 while a run holds it)."""
    manager = await get_manager(caller.ctx)
    ref = await require_thread(caller, thread_id, manager)
    if await caller.ctx.leases.acurrent(ref.internal) is not None:
        raise HTTPException(409, f"thread {thread_id!r} is busy: a run is executing; cancel "
                                 f"it first")
    await caller.ctx.checkpointer.adelete_thread(ref.internal)
    await manager.store.adelete_thread(ref.internal)
    await caller.ctx.threads.adelete(ref.internal)
    return Response(status_code=204)


@router.post("/threads/{thread_id}/copy", response_model=ThreadOut)
async def copy_thread(thread_id: str, *, caller: CallerDep) -> ThreadOut:
    manager = await get_manager(caller.ctx)
    ref = await require_thread(caller, thread_id, manager)
    copy = getattr(caller.ctx.checkpointer, "acopy_thread", None)
    if copy is None:
        raise HTTPException(422, "this server's saver cannot copy threads")
    new_id = str(uuid.uuid4())
    internal = caller.internal(new_id)
    await copy(ref.internal, internal)
    meta = await manager.store.aput_thread(
        internal, caller.tenant, ref.graph_id, dict(ref.meta.metadata) if ref.meta else {})
    new = ThreadRef(new_id, internal, meta, ref.graph_id, ref.graph)
    await manager.refresh_index(internal, ref.graph_id)
    return await thread_json(caller, new, manager)


@router.post("/threads/prune")
async def prune_threads(body: ThreadPrune, *, caller: CallerDep) -> dict[str, int]:
    """Delete threads, or keep only their latest checkpoint (``keep_latest``)."""
    manager = await get_manager(caller.ctx)
    refs = [await require_thread(caller, tid, manager) for tid in body.thread_ids]
    for ref in refs:
        if await caller.ctx.leases.acurrent(ref.internal) is not None:
            raise HTTPException(409, f"thread {ref.external!r} is busy: a run is executing")
    saver = caller.ctx.checkpointer
    if body.strategy == "keep_latest":
        prune = getattr(saver, "aprune", None)
        if prune is None:
            raise HTTPException(422, "this server's saver cannot prune threads")
        await prune([r.internal for r in refs], strategy="keep_latest")
        for ref in refs:
            await manager.refresh_index(ref.internal, ref.graph_id)
    else:
        for ref in refs:
            await saver.adelete_thread(ref.internal)
            await manager.store.adelete_thread(ref.internal)
            await caller.ctx.threads.adelete(ref.internal)
    return {"pruned_count": len(refs)}


# ----------------------------------------------------------------------- protocol: state


async def require_checkpoint(caller: Caller, ref: ThreadRef, checkpoint_id: str | None,
                             checkpoint_ns: str = "") -> None:
    """404 for a checkpoint the thread does not have.

    LangGraph reads an unknown checkpoint id as an empty state: an update or a run from it
    would start the thread over instead of failing.
    """
    if checkpoint_id and await caller.ctx.checkpointer.aget_tuple(
            ref.config(checkpoint_id, checkpoint_ns)) is None:
        raise HTTPException(404, f"checkpoint {checkpoint_id!r} not found on thread "
                                 f"{ref.external!r}")


async def _state(caller: Caller, thread_id: str, checkpoint_id: str | None,
                 checkpoint_ns: str, subgraphs: bool) -> ThreadStateOut:
    manager = await get_manager(caller.ctx)
    ref = await require_thread(caller, thread_id, manager)
    if ref.graph is None:
        from relaygraph.serve._protocol import CheckpointOut

        return ThreadStateOut(values={}, next=[], checkpoint=CheckpointOut(thread_id=thread_id))
    config = ref.config(checkpoint_id, checkpoint_ns)
    await require_checkpoint(caller, ref, checkpoint_id, checkpoint_ns)
    snap = await ref.graph.aget_state(config, subgraphs=subgraphs)
    return state_out(snap, ref.internal, ref.external)


@router.get("/threads/{thread_id}/state", response_model=ThreadStateOut)
async def get_state(thread_id: str, subgraphs: bool = False,
                    *, caller: CallerDep) -> ThreadStateOut:
    """The latest state: values, next nodes, tasks with their interrupts."""
    return await _state(caller, thread_id, None, "", subgraphs)


@router.get("/threads/{thread_id}/state/{checkpoint_id}", response_model=ThreadStateOut)
async def get_state_at(thread_id: str, checkpoint_id: str, subgraphs: bool = False,
                       *, caller: CallerDep) -> ThreadStateOut:
    return await _state(caller, thread_id, checkpoint_id, "", subgraphs)


@router.post("/threads/{thread_id}/state/checkpoint", response_model=ThreadStateOut)
async def post_state_at(thread_id: str, body: StateAtCheckpoint,
                        *, caller: CallerDep) -> ThreadStateOut:
    return await _state(caller, thread_id, body.checkpoint.checkpoint_id,
                        body.checkpoint.checkpoint_ns, body.subgraphs)


@router.post("/threads/{thread_id}/state", response_model=UpdateStateOut)
async def update_state(thread_id: str, body: StateUpdate, *, caller: CallerDep
                       ) -> UpdateStateOut:
    """Write values as if ``as_node`` had returned them (409 while a run holds the thread)."""
    from langgraph.errors import InvalidUpdateError

    from relaygraph.serve._protocol import CheckpointOut

    manager = await get_manager(caller.ctx)
    ref = await require_thread(caller, thread_id, manager)
    graph = _require_graph(ref)
    cid = body.checkpoint_id or (body.checkpoint.checkpoint_id if body.checkpoint else None)
    ns = body.checkpoint.checkpoint_ns if body.checkpoint else ""
    await require_checkpoint(caller, ref, cid, ns)
    leases = caller.ctx.leases
    lease = await leases.aacquire(ref.internal, holder=f"update-{uuid.uuid4()}", wait=0.0)
    try:
        new = await graph.aupdate_state(ref.config(cid, ns), body.values, as_node=body.as_node)
    except (InvalidUpdateError, ValueError, TypeError, KeyError) as exc:
        raise HTTPException(422, f"cannot update the state: {type(exc).__name__}: {exc}"
                            ) from None
    finally:
        await leases.arelease(lease)
    await manager.refresh_index(ref.internal, ref.graph_id)
    conf = new.get("configurable", {})
    return UpdateStateOut(checkpoint=CheckpointOut(
        thread_id=thread_id, checkpoint_ns=conf.get("checkpoint_ns") or "",
        checkpoint_id=conf.get("checkpoint_id"), checkpoint_map=conf.get("checkpoint_map")))


@router.post("/threads/{thread_id}/history", response_model=list[ThreadStateOut])
async def post_history(thread_id: str, body: HistoryRequest,
                       *, caller: CallerDep) -> list[ThreadStateOut]:
    """Past states, newest first (LangGraph's ``get_history``)."""
    manager = await get_manager(caller.ctx)
    ref = await require_thread(caller, thread_id, manager)
    if ref.graph is None:
        return []
    cid = body.checkpoint.checkpoint_id if body.checkpoint else None
    ns = body.checkpoint.checkpoint_ns if body.checkpoint else ""
    out = []
    async for snap in ref.graph.aget_state_history(
            ref.config(cid, ns), filter=body.metadata, before=_before_config(ref, body.before),
            limit=body.limit):
        out.append(state_out(snap, ref.internal, ref.external))
    return out


@router.get("/threads/{thread_id}/stream")
@router.get("/threads/{thread_id}/stream/events")
@router.post("/threads/{thread_id}/commands")
async def thread_stream(thread_id: str, *, caller: CallerDep) -> None:
    """Thread-level streams are not served (501 with the reason)."""
    caller.internal(thread_id)
    raise HTTPException(501, "thread streams are not served here; follow a run with "
                             "runs.stream or runs.join_stream")


# ------------------------------------------------------------ relaygraph's own JSON routes


@router.get("/threads")
async def list_threads(graph: str | None = None, status: str | None = None,
                       cursor: str | None = None,
                       limit: int = Query(50, ge=1, le=500),
                       *, caller: CallerDep) -> dict[str, Any]:
    """relaygraph's listing: the caller's threads, newest first, one page at a time."""
    try:
        page = await caller.ctx.threads.apage(caller.tenant, limit=limit, cursor=cursor,
                                              graph_id=graph, status=status)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    return {"threads": [r.as_dict(caller.external(r.thread_id)) for r in page.rows],
            "next_cursor": page.next_cursor}


@router.get("/threads/{thread_id}/history")
async def get_history_steps(thread_id: str, *, caller: CallerDep
                            ) -> list[dict[str, Any]]:
    """relaygraph's step history: per step, oldest first, the node and the keys it wrote."""
    from relaygraph.serve._threads import ahistory_steps

    manager = await get_manager(caller.ctx)
    ref = await require_thread(caller, thread_id, manager)
    if ref.graph is None:
        return []
    rows = await ahistory_steps(ref.graph, ref.config())  # type: ignore[arg-type]
    return to_json(rows)  # type: ignore[no-any-return]


@router.get("/threads/{thread_id}/timeline")
async def get_timeline(thread_id: str, *, caller: CallerDep) -> Any:
    """The run timeline: steps, handoffs, guard decisions, reviews, tokens and cost."""
    from relaygraph.observe import atimeline

    manager = await get_manager(caller.ctx)
    ref = await require_thread(caller, thread_id, manager)
    graph = _require_graph(ref)
    timeline = (await atimeline(graph, ref.config())).to_dict()
    if timeline.get("thread_id") == ref.internal:
        timeline["thread_id"] = ref.external
    return to_json(timeline)
