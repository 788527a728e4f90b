"""Runs (LangGraph's client protocol): create, wait, stream, join, get, list, cancel.

A run on a busy thread follows its ``multitask_strategy`` (see `relaygraph.serve._runs`).
Resuming an interrupt is a run with ``command={"resume": ...}``; on a thread that is not
waiting it is a 409. Stateless runs (``/runs/...``) execute on a throwaway thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Coroutine, Mapping
from typing import Annotated, Any, Literal
from urllib.parse import quote

import anyio
import orjson
from fastapi import APIRouter, Header, HTTPException, Query, Request, Response
from fastapi.responses import StreamingResponse

from relaygraph.serve._errors import BadRequest, ServerDraining, ThreadNotWaiting
from relaygraph.serve._json import json_default, to_json
from relaygraph.serve._protocol import (
    MAX_OFFSET,
    Caller,
    CallerDep,
    RunBatchItem,
    RunCancelMany,
    RunCreate,
    RunOut,
    run_out,
)
from relaygraph.serve._routes.threads import (
    ThreadRef,
    find_thread,
    require_checkpoint,
    require_thread,
)
from relaygraph.serve._runs import RunHandle, RunManager, RunSpec, get_manager
from relaygraph.serve._runstore import RunRecord

router = APIRouter(tags=["runs"])

_STATELESS_PREFIX = "stateless-"


def _location(external: str, run_id: str) -> str:
    return f"/threads/{quote(external, safe='')}/runs/{run_id}"


def _check_input(body: RunCreate) -> None:
    """Refuse input the graph would choke on (unknown message types) with a 422."""
    if isinstance(body.input, dict) and isinstance(body.input.get("messages"), list):
        from langchain_core.messages import convert_to_messages

        try:
            convert_to_messages(body.input["messages"])
        except (ValueError, TypeError, NotImplementedError, KeyError) as exc:
            raise BadRequest(f"input.messages: {exc}") from None
    if body.input is not None and body.command is not None:
        raise BadRequest("send either input or command, not both")
    for part in ("configurable", "metadata"):
        value = (body.config or {}).get(part)
        if value is not None and not isinstance(value, dict):
            raise BadRequest(f"config.{part} must be an object, got {type(value).__name__}")
    limit = (body.config or {}).get("recursion_limit")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                              or limit < 1):
        raise BadRequest(f"config.recursion_limit must be an integer >= 1, got {limit!r}")
    if body.command is not None:
        body.command.check()
    if body.webhook is not None:
        raise BadRequest("webhooks are not supported by this server; poll runs.get or "
                         "use runs.join")


async def _resume_value(caller: Caller, ref: ThreadRef, resume: Any) -> Any:
    """Check the thread waits on an interrupt; a review decision is validated against its
    request and records the authenticated reviewer (as ``POST /reviews`` does)."""
    if ref.graph is None:
        raise ThreadNotWaiting(f"thread {ref.external!r} is not waiting on an interrupt")
    snap = await ref.graph.aget_state(ref.config())
    pending = list(snap.interrupts)
    if not pending:
        raise ThreadNotWaiting(
            f"thread {ref.external!r} is not waiting on an interrupt (next: "
            f"{list(snap.next) or 'nothing'}); nothing to resume")
    by_id = {i.id: i for i in pending}
    if isinstance(resume, Mapping) and resume and set(resume) <= set(by_id):
        return {k: _review(caller, ref, snap, by_id[k], v) for k, v in resume.items()}
    if len(pending) == 1:
        return _review(caller, ref, snap, pending[0], resume)
    return resume


def _review(caller: Caller, ref: ThreadRef, snap: Any, intr: Any, value: Any) -> Any:
    from relaygraph.serve._reviews import is_review_request, review_command

    if not is_review_request(intr.value):
        return value
    # InvalidReviewDecision (422): not a decision at all ("approve", 5), a malformed one,
    # bad edits, another reviewer's name
    command = review_command(ref.graph, snap, {"configurable": {"thread_id": ref.external}},
                             value, caller.principal.reviewer, intr.id)
    return command.resume[intr.id]  # type: ignore[index]


def _check_interrupt_nodes(body: RunCreate, graph: Any) -> None:
    """422 for a node name the graph does not have: LangGraph would ignore it silently."""
    nodes = getattr(graph, "nodes", None)
    if not isinstance(nodes, Mapping):
        return
    for part in ("interrupt_before", "interrupt_after"):
        names = getattr(body, part)
        unknown = [n for n in names if n not in nodes] if isinstance(names, list) else []
        if unknown:
            known = ", ".join(repr(n) for n in nodes if not n.startswith("__"))
            raise BadRequest(f"{part}: graph {body.assistant_id!r} has no node {unknown[0]!r}; "
                             f"its nodes are {known} (or '*' for all)")


async def _prepare(caller: Caller, manager: RunManager, thread_id: str | None,
                   body: RunCreate) -> tuple[ThreadRef, RunSpec]:
    if caller.ctx.draining:
        raise ServerDraining("the server is shutting down and takes no new runs")
    graph = caller.graph(body.assistant_id)
    _check_input(body)
    _check_interrupt_nodes(body, graph)
    stateless = thread_id is None
    external = thread_id if thread_id is not None else f"{_STATELESS_PREFIX}{uuid.uuid4()}"
    ref = await find_thread(caller, external, manager)
    if ref is None:
        if not stateless and body.if_not_exists != "create":
            raise HTTPException(404, f"thread {external!r} not found; create it first or "
                                     f"pass if_not_exists='create'")
        meta = await manager.store.aput_thread(caller.internal(external), caller.tenant,
                                               body.assistant_id, {})
        ref = ThreadRef(external, meta.thread_id, meta, body.assistant_id, graph)
    elif ref.graph_id is None:
        ref.meta = await manager.store.aput_thread(ref.internal, caller.tenant,
                                                   body.assistant_id, {})
        ref.graph_id, ref.graph = body.assistant_id, graph
    elif ref.graph_id != body.assistant_id:
        raise HTTPException(409, f"thread {external!r} belongs to graph {ref.graph_id!r}, "
                                 f"not {body.assistant_id!r}")
    command = body.command.model_dump(exclude_none=True) if body.command else None
    strategy = body.multitask_strategy or "reject"
    if command is not None and "resume" in command:
        busy = await caller.ctx.leases.acurrent(ref.internal) is not None
        if not busy or strategy == "reject":
            command["resume"] = await _resume_value(caller, ref, command["resume"])
    checkpoint_id = body.checkpoint_id or (body.checkpoint.checkpoint_id
                                           if body.checkpoint else None)
    await require_checkpoint(caller, ref, checkpoint_id,
                             body.checkpoint.checkpoint_ns if body.checkpoint else "")
    spec = RunSpec(
        graph_id=body.assistant_id, input=body.input, command=command, config=body.config,
        context=body.context, metadata=dict(body.metadata or {}), stream_mode=body.modes(),
        stream_subgraphs=body.stream_subgraphs, interrupt_before=body.interrupt_before,
        interrupt_after=body.interrupt_after, checkpoint_id=checkpoint_id,
        checkpoint_ns=body.checkpoint.checkpoint_ns if body.checkpoint else None,
        multitask_strategy=strategy, after_seconds=body.after_seconds,
        durability=body.durability)
    return ref, spec


async def _start(caller: Caller, thread_id: str | None, body: RunCreate
                 ) -> tuple[RunManager, ThreadRef, RunHandle]:
    manager = await get_manager(caller.ctx)
    ref, spec = await _prepare(caller, manager, thread_id, body)
    handle = await manager.start(thread_id=ref.internal, tenant=caller.tenant, spec=spec)
    await manager.store.atouch_thread(ref.internal)
    return manager, ref, handle


async def _output(caller: Caller, manager: RunManager, ref: ThreadRef, run_id: str) -> Any:
    """What ``wait`` and ``join`` return: the thread's values (``__interrupt__`` if paused),
    or ``__error__`` when the run failed."""
    rec = await manager.store.aget_run(run_id)
    if rec is not None and rec.status in ("error", "timeout"):
        local = manager.handles.get(run_id)
        err = local.error if local is not None else None
        return {"__error__": {"error": type(err).__name__ if err else rec.status,
                              "message": local.message(err) if local is not None and err
                              else (rec.error or rec.status)}}
    if ref.graph is None:
        return {}
    snap = await ref.graph.aget_state(ref.config())
    out = to_json(snap.values)
    if snap.interrupts and isinstance(out, dict):
        from relaygraph.serve._protocol import interrupt_json

        out["__interrupt__"] = [interrupt_json(i) for i in snap.interrupts]
    return out


async def _discard_stateless(caller: Caller, manager: RunManager, ref: ThreadRef,
                             body: RunCreate) -> None:
    if body.on_completion == "keep":
        return
    await caller.ctx.checkpointer.adelete_thread(ref.internal)
    await manager.store.adelete_thread(ref.internal)
    await caller.ctx.threads.adelete(ref.internal)


_background: set[asyncio.Task[None]] = set()


def _later(work: Coroutine[Any, Any, None]) -> None:
    task = asyncio.create_task(work)
    _background.add(task)  # keep a reference until it is done
    task.add_done_callback(_background.discard)


async def _discard_after(handle: RunHandle, caller: Caller, manager: RunManager,
                         ref: ThreadRef, body: RunCreate) -> None:
    await handle.done.wait()
    await _discard_stateless(caller, manager, ref, body)


def _sse(event: str, data: Any, event_id: int | None = None) -> bytes:
    head = b"" if event_id is None else b"id: %d\n" % event_id
    return (head + b"event: " + event.encode() + b"\ndata: "
            + orjson.dumps(data, default=json_default) + b"\n\n")


def _stream_response(caller: Caller, manager: RunManager, ref: ThreadRef, handle: RunHandle,
                     body: RunCreate | None, *, stateless: bool,
                     cancel_on_disconnect: bool, after: int | None = None
                     ) -> StreamingResponse:
    async def events() -> AsyncIterator[bytes]:
        finished = False
        try:
            async for event_id, event, data in handle.follow(after):
                yield _sse(event, data, event_id)
            finished = True
        finally:
            # the client may be gone and this task cancelled: finish the cleanup anyway
            with anyio.CancelScope(shield=True):
                if not finished and cancel_on_disconnect and not handle.done.is_set():
                    rec = await manager.store.aget_run(handle.record.run_id)
                    if rec is not None:
                        await manager.cancel(rec)
                if stateless and body is not None:
                    if handle.done.is_set():
                        await _discard_stateless(caller, manager, ref, body)
                    else:  # the client left first: discard the thread when the run ends
                        _later(_discard_after(handle, caller, manager, ref, body))

    location = _location(ref.external, handle.record.run_id)
    headers = {"Content-Location": location, "Cache-Control": "no-store"}
    if body is not None and body.stream_resumable and not stateless:
        # a client cut off mid-stream reconnects here with Last-Event-ID (same process)
        headers["Location"] = f"{location}/stream"
    return StreamingResponse(events(), media_type="text/event-stream", headers=headers)


def _last_event_id(raw: str | None) -> int | None:
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"Last-Event-ID must be an event id this server sent (an integer), "
                         f"got {raw[:40]!r}") from None
    if value < 0:
        raise BadRequest(f"Last-Event-ID must be >= 0, got {value}")
    return value


async def _record(caller: Caller, manager: RunManager, thread_id: str, run_id: str
                  ) -> tuple[ThreadRef, RunRecord]:
    ref = await require_thread(caller, thread_id, manager)
    rec = await manager.store.aget_run(run_id)
    if rec is None or rec.thread_id != ref.internal or rec.tenant != caller.tenant:
        raise HTTPException(404, f"run {run_id!r} not found on thread {thread_id!r}")
    return ref, rec


# ----------------------------------------------------------------------- runs on a thread


@router.post("/threads/{thread_id}/runs", response_model=RunOut)
async def create_run(thread_id: str, body: RunCreate, response: Response,
                     *, caller: CallerDep) -> RunOut:
    """Start a run in the background."""
    manager, ref, handle = await _start(caller, thread_id, body)
    response.headers["Content-Location"] = _location(ref.external, handle.record.run_id)
    rec = await manager.store.aget_run(handle.record.run_id) or handle.record
    return run_out(rec, ref.external)


@router.post("/threads/{thread_id}/runs/wait")
async def wait_run(thread_id: str, body: RunCreate, response: Response, request: Request,
                   *, caller: CallerDep) -> Any:
    """Run and answer with the thread's values when it ends (or pauses)."""
    manager, ref, handle = await _start(caller, thread_id, body)
    response.headers["Content-Location"] = _location(ref.external, handle.record.run_id)
    await _wait(manager, handle, body, request)
    return await _output(caller, manager, ref, handle.record.run_id)


async def _wait(manager: RunManager, handle: RunHandle, body: RunCreate,
                request: Request) -> None:
    """Wait for the run; a client that leaves with ``on_disconnect='cancel'`` stops it."""
    if body.on_disconnect != "cancel":
        await handle.done.wait()
        return
    while not handle.done.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(handle.done.wait(), 0.25)
        if not handle.done.is_set() and await request.is_disconnected():
            rec = await manager.store.aget_run(handle.record.run_id)
            if rec is not None and not rec.terminal:
                await manager.cancel(rec)
            return


@router.post("/threads/{thread_id}/runs/stream")
async def stream_run(thread_id: str, body: RunCreate, *, caller: CallerDep
                     ) -> StreamingResponse:
    """Run and stream its events (SSE: ``metadata``, then one event per stream mode)."""
    manager, ref, handle = await _start(caller, thread_id, body)
    return _stream_response(caller, manager, ref, handle, body, stateless=False,
                            cancel_on_disconnect=body.on_disconnect == "cancel")


@router.get("/threads/{thread_id}/runs", response_model=list[RunOut])
async def list_runs(thread_id: str, limit: int = Query(10, ge=1, le=1000),
                    offset: int = Query(0, ge=0, le=MAX_OFFSET),
                    status: Literal["pending", "running", "error", "success", "timeout",
                                    "interrupted"] | None = None,
                    *, caller: CallerDep) -> list[RunOut]:
    manager = await get_manager(caller.ctx)
    ref = await require_thread(caller, thread_id, manager)
    runs = await manager.store.alist_runs(ref.internal, limit=limit, offset=offset,
                                          status=status)
    return [run_out(r, ref.external) for r in runs]


@router.get("/threads/{thread_id}/runs/{run_id}", response_model=RunOut)
async def get_run(thread_id: str, run_id: str, *, caller: CallerDep) -> RunOut:
    manager = await get_manager(caller.ctx)
    ref, rec = await _record(caller, manager, thread_id, run_id)
    return run_out(rec, ref.external)


@router.delete("/threads/{thread_id}/runs/{run_id}", status_code=204)
async def delete_run(thread_id: str, run_id: str, *, caller: CallerDep
                     ) -> Response:
    manager = await get_manager(caller.ctx)
    _, rec = await _record(caller, manager, thread_id, run_id)
    if not rec.terminal:
        raise HTTPException(409, f"run {run_id!r} is {rec.status}; cancel it first")
    await manager.store.adelete_run(run_id)
    return Response(status_code=204)


@router.post("/threads/{thread_id}/runs/{run_id}/cancel")
async def cancel_run(thread_id: str, run_id: str, wait: bool = False,
                     action: Literal["interrupt", "rollback"] = "interrupt",
                     *, caller: CallerDep) -> Any:
    """Stop the run at its next step boundary; ``rollback`` also deletes what it wrote."""
    manager = await get_manager(caller.ctx)
    ref, rec = await _record(caller, manager, thread_id, run_id)
    if rec.terminal and action != "rollback":
        raise HTTPException(409, f"run {run_id!r} already ended ({rec.status})")
    await manager.cancel(rec, action=action)
    if wait and action != "rollback":
        await manager.wait_done(run_id, limit=caller.ctx.settings.enqueue_wait)
    return None


@router.get("/threads/{thread_id}/runs/{run_id}/join")
async def join_run(thread_id: str, run_id: str, *, caller: CallerDep) -> Any:
    """Wait for the run to end (here or on another server process); the thread's values."""
    manager = await get_manager(caller.ctx)
    ref, rec = await _record(caller, manager, thread_id, run_id)
    await manager.wait_done(run_id, limit=None)
    return await _output(caller, manager, ref, run_id)


@router.get("/threads/{thread_id}/runs/{run_id}/stream")
async def join_stream(thread_id: str, run_id: str, cancel_on_disconnect: bool = False,
                      last_event_id: Annotated[str | None, Header()] = None,
                      *, caller: CallerDep) -> StreamingResponse:
    """Follow a run's events (after ``Last-Event-ID``, if sent); a run executing in another
    process streams its final values."""
    manager = await get_manager(caller.ctx)
    ref, rec = await _record(caller, manager, thread_id, run_id)
    after = _last_event_id(last_event_id)
    local = manager.handles.get(run_id)
    if local is not None:
        return _stream_response(caller, manager, ref, local, None, stateless=False,
                                cancel_on_disconnect=cancel_on_disconnect, after=after)

    async def remote() -> AsyncIterator[bytes]:
        yield _sse("metadata", {"run_id": run_id, "attempt": 1})
        await manager.wait_done(run_id, limit=None)
        out = await _output(caller, manager, ref, run_id)
        if "__error__" in out:
            yield _sse("error", out["__error__"])
        else:
            yield _sse("values", out)

    return StreamingResponse(remote(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store"})


# ------------------------------------------------------------------------ stateless runs


@router.post("/runs", response_model=RunOut)
async def create_stateless_run(body: RunCreate, response: Response,
                               *, caller: CallerDep) -> RunOut:
    """A background run on a new thread (kept: read it back with the thread id returned)."""
    body = body.model_copy(update={"on_completion": body.on_completion or "keep"})
    manager, ref, handle = await _start(caller, None, body)
    response.headers["Content-Location"] = _location(ref.external, handle.record.run_id)
    return run_out(handle.record, ref.external)


@router.post("/runs/wait")
async def wait_stateless_run(body: RunCreate, request: Request, *, caller: CallerDep) -> Any:
    manager, ref, handle = await _start(caller, None, body)
    await _wait(manager, handle, body, request)
    try:
        return await _output(caller, manager, ref, handle.record.run_id)
    finally:
        await _discard_stateless(caller, manager, ref, body)


@router.post("/runs/stream")
async def stream_stateless_run(body: RunCreate, *, caller: CallerDep
                               ) -> StreamingResponse:
    manager, ref, handle = await _start(caller, None, body)
    return _stream_response(caller, manager, ref, handle, body, stateless=True,
                            cancel_on_disconnect=body.on_disconnect == "cancel")


@router.post("/runs/batch", response_model=list[RunOut])
async def create_runs_batch(body: list[RunBatchItem], *, caller: CallerDep) -> list[RunOut]:
    """Start several background runs (each on its thread, or stateless and kept)."""
    out = []
    for item in body:
        run = RunCreate.model_validate(item.model_dump(exclude={"thread_id"}))
        if item.thread_id is None:
            run = run.model_copy(update={"on_completion": run.on_completion or "keep"})
        manager, ref, handle = await _start(caller, item.thread_id, run)
        out.append(run_out(handle.record, ref.external))
    return out


@router.post("/runs/cancel", status_code=204)
async def cancel_runs(body: RunCancelMany,
                      action: Literal["interrupt", "rollback"] = "interrupt", *,
                      caller: CallerDep) -> Response:
    """Cancel runs by id, or a thread's pending / running runs."""
    manager = await get_manager(caller.ctx)
    if body.run_ids is None and body.thread_id is None:
        raise BadRequest("name the runs: run_ids, or a thread_id (with status)")
    records: list[RunRecord] = []
    if body.run_ids is not None:
        for run_id in body.run_ids:
            rec = await manager.store.aget_run(run_id)
            if rec is None or rec.tenant != caller.tenant:
                raise HTTPException(404, f"run {run_id!r} not found")
            records.append(rec)
    else:
        assert body.thread_id is not None
        ref = await require_thread(caller, body.thread_id, manager)
        records = await manager.store.aactive_runs(ref.internal)
    wanted = {"pending": {"pending"}, "running": {"running"}}.get(
        body.status or "all", {"pending", "running"})
    for rec in records:
        if rec.status in wanted:
            await manager.cancel(rec, action=action)
    return Response(status_code=204)
