"""Runs of LangGraph's client protocol: one writer per thread, multitask strategies, streams.

A run is a row in ``relaygraph_runs`` (so ``runs.get`` and ``runs.join`` work from any server
process on the database) and, in the process that executes it, an asyncio task whose stream
events are kept for the clients that follow it.

Every run holds the thread's lease (`relaygraph.durable`) while it executes. When the
thread is busy the request's multitask strategy decides:

* ``reject`` (default): 409.
* ``enqueue``: wait for the lease, at most ``ServerSettings.enqueue_wait`` seconds.
* ``interrupt``: ask the holder to stop at its next step boundary, then run.
* ``rollback``: as ``interrupt``, then delete the checkpoints the stopped run wrote (its run
  id is in their metadata) and the run itself.

The holder may run in another process: cancellation goes through the lease table.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain_core.messages import BaseMessageChunk
from langgraph.types import Command

from relaygraph.serve._context import ServerContext
from relaygraph.serve._json import to_json
from relaygraph.serve._runstore import RunRecord, RunStore

log = logging.getLogger("relaygraph.serve.runs")

# SDK stream modes → the graph's own stream modes (None: accepted, nothing is streamed)
_GRAPH_MODE: dict[str, str | None] = {
    "values": "values", "updates": "updates", "messages-tuple": "messages",
    "messages": "messages", "custom": "custom", "debug": "debug", "tasks": "tasks",
    "checkpoints": "checkpoints", "events": None, "tools": None, "lifecycle": None,
}
# "events" is LangChain's event stream (astream_events v2); "tools" and "lifecycle" are
# accepted and send nothing
# modes whose chunks carry run configs (with the stored thread id)
_CONFIG_MODES = frozenset({"debug", "checkpoints", "tasks"})

_KEEP_FINISHED = 256  # finished runs whose events this process keeps for join_stream
_KEEP_EVENTS = 2000  # events a run keeps for clients that follow it late


def _busy_types() -> tuple[type[BaseException], ...]:
    from relaygraph.serve._errors import ThreadBusy

    types: list[type[BaseException]] = [ThreadBusy]
    with contextlib.suppress(ImportError):
        from relaygraph.durable import ThreadBusyError

        types.append(ThreadBusyError)
    return tuple(types)


def _drained_status(reason: str) -> str:
    return "timeout" if reason == "timeout" else "interrupted"


@dataclass
class RunSpec:
    """What a run executes (built by the routes from the request body)."""

    graph_id: str
    input: Any = None
    command: Mapping[str, Any] | None = None
    config: Mapping[str, Any] | None = None
    context: Any = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    stream_mode: Sequence[str] = ("values",)
    stream_subgraphs: bool = False
    interrupt_before: Any = None
    interrupt_after: Any = None
    checkpoint_id: str | None = None
    checkpoint_ns: str | None = None
    multitask_strategy: str = "reject"
    after_seconds: float | None = None
    durability: str | None = None


@dataclass
class RunHandle:
    """A run executing (or executed) in this process."""

    record: RunRecord
    spec: RunSpec
    events: list[tuple[str, Any]] = field(default_factory=list)
    dropped: int = 0  # events before ``events[0]`` (only the newest are kept)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    admitted: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future())
    task: asyncio.Task[None] | None = None
    status: str = "pending"
    error: BaseException | None = None
    stop_reason: str | None = None
    control: Any = None  # LangGraph's RunControl while the run holds the thread

    @property
    def external(self) -> str:
        """The client's thread id (the stored one without its tenant)."""
        return self.record.thread_id.split("/", 1)[-1]

    def message(self, exc: BaseException) -> str:
        """An error's message naming the thread by the client's id."""
        return str(exc).replace(self.record.thread_id, self.external)

    def client_ids(self, data: Any) -> Any:
        """JSON data with the stored thread id replaced by the client's (run configs)."""
        if isinstance(data, str):
            return self.external if data == self.record.thread_id else data
        if isinstance(data, dict):
            return {k: self.client_ids(v) for k, v in data.items()}
        if isinstance(data, list):
            return [self.client_ids(v) for v in data]
        return data

    def publish(self, event: str, data: Any) -> None:
        self.events.append((event, data))
        if len(self.events) > _KEEP_EVENTS:  # a long run: keep the newest, and the first
            del self.events[1:1 + _KEEP_EVENTS // 2]
            self.dropped += _KEEP_EVENTS // 2
        self.changed.set()

    async def follow(self, after: int | None = None) -> AsyncIterator[tuple[int, str, Any]]:
        """``(id, event, data)``: the run's events from the first kept (or those after the
        event ``after``), then live until it ends. Ids count from 0, the ``metadata`` event."""
        seen = 0 if after is None else after + 1  # the next id to deliver
        while True:
            while True:
                # events[0] (metadata) is never dropped; the rest start at ``dropped + 1``
                if seen == 0 and self.events:
                    index = 0
                else:
                    index = max(seen, self.dropped + 1) - self.dropped
                if index >= len(self.events):
                    break
                event, data = self.events[index]
                seen = index + self.dropped + 1 if index else 1
                yield seen - 1, event, data
            if self.done.is_set():
                return
            self.changed.clear()
            await self.changed.wait()


def _message_event(chunk: Any, tuple_mode: bool) -> tuple[str, Any]:
    """``messages-tuple``: ``[message, metadata]``; ``messages``: the message alone, as a
    partial (a chunk) or complete message."""
    msg, meta = chunk
    if tuple_mode:
        return "messages", [to_json(msg), to_json(meta)]
    partial = isinstance(msg, BaseMessageChunk)
    return "messages/partial" if partial else "messages/complete", [to_json(msg)]


class RunManager:
    """Starts, follows and cancels runs; one per app (``app.state``)."""

    def __init__(self, ctx: ServerContext, store: RunStore, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.ctx = ctx
        self.store = store
        self.clock = clock
        self.handles: dict[str, RunHandle] = {}
        self._finished: list[str] = []

    # -- starting

    async def start(self, *, thread_id: str, tenant: str, spec: RunSpec,
                    run_id: str | None = None) -> RunHandle:
        """Record a run and start executing it.

        ``reject`` runs are admitted before this returns: a busy thread raises the busy
        error (409) and leaves no run behind. A run scheduled with ``after_seconds``
        returns at once, ``pending``: the thread must have no run now, and if one holds it
        when the delay is over, the scheduled run ends ``error`` (busy).
        """
        scheduled = spec.multitask_strategy == "reject" and bool(spec.after_seconds)
        if scheduled:
            await self._refuse_if_busy(thread_id)
        run_id = run_id or str(uuid.uuid4())
        record = await self.store.acreate_run(
            run_id=run_id, thread_id=thread_id, tenant=tenant, assistant_id=spec.graph_id,
            multitask_strategy=spec.multitask_strategy, metadata=spec.metadata)
        handle = RunHandle(record=record, spec=spec)
        self.handles[run_id] = handle
        handle.task = asyncio.create_task(self._execute(handle), name=f"run {run_id}")
        self.ctx.active_runs.add(handle.task)
        handle.task.add_done_callback(self.ctx.active_runs.discard)
        if spec.multitask_strategy == "reject" and not scheduled:
            try:
                await asyncio.shield(handle.admitted)
            except _busy_types():
                await self.store.adelete_run(run_id)
                self.handles.pop(run_id, None)
                raise
        return handle

    async def _refuse_if_busy(self, thread_id: str) -> None:
        """409 when a run holds the thread or waits for it."""
        from relaygraph.serve._errors import ThreadHasRuns, busy_error

        lease = await self.ctx.leases.acurrent(thread_id)
        if lease is not None:
            raise busy_error(thread_id, lease.holder, lease.expires_at)
        active = await self.store.aactive_runs(thread_id)
        if active:
            raise ThreadHasRuns(thread_id, active[0].run_id, active[0].status)

    async def _execute(self, h: RunHandle) -> None:
        from langgraph.errors import GraphDrained

        from relaygraph.serve._runner import hold_thread

        rec, spec = h.record, h.spec
        try:
            if spec.after_seconds:
                await asyncio.sleep(spec.after_seconds)
            if spec.multitask_strategy == "enqueue":
                await self._wait_turn(rec)
            # the runs a rollback undoes: those executing when this one was asked for
            victims = ([r.run_id for r in await self.store.aactive_runs(rec.thread_id)
                        if r.run_id != rec.run_id and r.status == "running"]
                       if spec.multitask_strategy == "rollback" else [])
            async with hold_thread(self.ctx, rec.thread_id, graph_id=spec.graph_id,
                                   strategy=spec.multitask_strategy) as held:
                h.control = held.control
                admitted = await self._admit(h)
                if admitted:
                    if victims:
                        await self.rollback(rec.thread_id, victims)
                    await self._stream(h, held)
            # a stop asked for after the last step finds nothing left to stop: success
            status = "success" if admitted else "interrupted"
        except GraphDrained as exc:
            reason = str(getattr(exc, "reason", None) or "cancelled")
            status = _drained_status(reason)
            h.stop_reason = reason
            h.publish("error", {"error": "RunDrained",
                                "message": f"the run stopped at a step boundary: {reason}"})
        except _busy_types() as exc:
            if not h.admitted.done() and spec.multitask_strategy == "reject":
                h.admitted.set_exception(exc)  # start() answers 409
            h.error = exc
            status = "error"
            h.publish("error", {"error": "ThreadBusy", "message": h.message(exc)})
        except asyncio.CancelledError:
            status = "interrupted"
            h.stop_reason = h.stop_reason or "cancelled"
        except Exception as exc:  # noqa: BLE001 - a run's failure is the run's status
            log.info("run %s failed: %s: %s", rec.run_id, type(exc).__name__, exc)
            h.error = exc
            status = "error"
            h.publish("error", {"error": type(exc).__name__, "message": h.message(exc)})
        h.status = status
        if not h.admitted.done():
            h.admitted.set_result(None)
        error = h.message(h.error) if h.error else None
        if status in ("timeout", "interrupted") and h.stop_reason:
            error = f"the run stopped at a step boundary ({h.stop_reason}); the thread keeps " \
                    f"its last checkpoint"
        with contextlib.suppress(Exception):
            await self.store.aset_status(rec.run_id, status, error=error)
        h.done.set()
        h.changed.set()
        self._finished.append(rec.run_id)
        while len(self._finished) > _KEEP_FINISHED:
            self.handles.pop(self._finished.pop(0), None)

    async def _wait_turn(self, rec: RunRecord) -> None:
        """Queued runs take the thread in the order they were asked for: wait until no
        run queued earlier on the thread is still pending (at most ``enqueue_wait``)."""
        deadline = self.clock() + self.ctx.settings.enqueue_wait
        delay = 0.02
        while self.clock() < deadline:
            ahead = [r for r in await self.store.aactive_runs(rec.thread_id)
                     if r.status == "pending" and r.multitask_strategy == "enqueue"
                     and (r.created_at, r.run_id) < (rec.created_at, rec.run_id)]
            if not ahead:
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)

    async def _admit(self, h: RunHandle) -> bool:
        """The lease is held: mark the run running (unless it was cancelled meanwhile)."""
        changed = await self.store.aset_status(h.record.run_id, "running", only_if=["pending"])
        if not h.admitted.done():
            h.admitted.set_result(None)
        if not changed:  # cancelled while it waited for the thread
            h.stop_reason = h.stop_reason or "cancelled"
            return False
        h.status = "running"
        h.publish("metadata", {"run_id": h.record.run_id, "attempt": 1})
        return True

    async def _stream(self, h: RunHandle, held: Any) -> None:
        spec = h.spec
        graph = self.ctx.graph(spec.graph_id)
        config = held.config(self._config(h.record, spec))
        graph_modes = sorted({m for s in spec.stream_mode if (m := _GRAPH_MODE.get(s))}
                             | {"values"})
        kwargs: dict[str, Any] = {"stream_mode": graph_modes, "subgraphs": True,
                                  "control": held.control}
        if spec.interrupt_before is not None:
            kwargs["interrupt_before"] = spec.interrupt_before
        if spec.interrupt_after is not None:
            kwargs["interrupt_after"] = spec.interrupt_after
        if spec.context is not None:
            kwargs["context"] = spec.context
        if spec.durability is not None:
            kwargs["durability"] = spec.durability
        graph_input: Any = spec.input
        if spec.command is not None:
            graph_input = Command(**{k: v for k, v in spec.command.items()
                                     if k in ("resume", "update", "goto")})
        if "events" not in spec.stream_mode:
            async for ns, mode, chunk in graph.astream(graph_input, config, **kwargs):
                self._emit(h, ns, mode, chunk)
            return
        # "events": LangChain's event stream (v2); the graph's own chunks ride on the root
        # run's on_chain_stream events
        root: str | None = None
        async for event in graph.astream_events(graph_input, config, version="v2", **kwargs):
            if root is None and not event.get("parent_ids"):
                root = event.get("run_id")
            if event.get("event") == "on_chain_stream" and event.get("run_id") == root:
                chunk = (event.get("data") or {}).get("chunk")
                if isinstance(chunk, tuple) and len(chunk) == 3:
                    self._emit(h, *chunk)
                continue
            h.publish("events", h.client_ids(_event_json(event)))

    async def rollback(self, thread_id: str, run_ids: Sequence[str]) -> None:
        """Delete the checkpoints these runs wrote on the thread, and the runs."""
        delete = getattr(self.ctx.checkpointer, "adelete_for_runs", None)
        if delete is not None and run_ids:
            await delete(list(run_ids))
        for rid in run_ids:
            await self.store.adelete_run(rid)

    def _config(self, rec: RunRecord, spec: RunSpec) -> dict[str, Any]:
        sent = dict(spec.config or {})
        configurable = {k: v for k, v in dict(sent.get("configurable") or {}).items()
                        if isinstance(k, str) and not k.startswith("__")
                        and k not in ("thread_id", "checkpoint_id", "checkpoint_ns",
                                      "checkpoint_map")}
        configurable["thread_id"] = rec.thread_id
        if spec.checkpoint_id:
            configurable["checkpoint_id"] = spec.checkpoint_id
        if spec.checkpoint_ns:
            configurable["checkpoint_ns"] = spec.checkpoint_ns
        metadata = {**{k: v for k, v in dict(sent.get("metadata") or {}).items()
                       if isinstance(k, str)},
                    **dict(spec.metadata),
                    "run_id": rec.run_id, "graph_id": spec.graph_id,
                    "assistant_id": spec.graph_id}
        config: dict[str, Any] = {"configurable": configurable, "metadata": metadata,
                                  "run_id": uuid.UUID(rec.run_id)
                                  if _is_uuid(rec.run_id) else None}
        if config["run_id"] is None:
            del config["run_id"]
        if "recursion_limit" in sent:
            config["recursion_limit"] = sent["recursion_limit"]
        if isinstance(sent.get("tags"), list):
            config["tags"] = [t for t in sent["tags"] if isinstance(t, str)]
        return config

    def _emit(self, h: RunHandle, ns: Sequence[str], mode: str, chunk: Any) -> None:
        requested = h.spec.stream_mode
        if ns and not h.spec.stream_subgraphs:
            if mode != "messages":
                return
            ns = ()  # as a graph streams its subgraphs' model messages without subgraphs=True
        suffix = "|" + "|".join(ns) if ns else ""
        if mode == "messages":
            if "messages-tuple" not in requested and "messages" not in requested:
                return
            name, data = _message_event(chunk, "messages-tuple" in requested)
            h.publish(name + suffix, data)
            return
        if mode in requested:
            data = to_json(chunk)
            h.publish(mode + suffix, h.client_ids(data) if mode in _CONFIG_MODES else data)

    # -- following and cancelling

    async def cancel(self, record: RunRecord, *, action: str = "interrupt") -> None:
        """Stop a run at its next step boundary (any process); ``rollback`` also deletes it."""
        local = self.handles.get(record.run_id)
        if record.status == "pending":
            changed = await self.store.aset_status(record.run_id, "interrupted",
                                                   only_if=["pending"])
            if changed and local is not None and local.task is not None:
                local.stop_reason = "cancelled"
                if not local.admitted.done():
                    local.task.cancel()
        elif record.status == "running":
            if local is not None and local.control is not None:
                local.control.request_drain("cancelled")
            else:  # executing in another process: it sees the request when it renews
                await self.ctx.leases.arequest_cancel(record.thread_id)
        if action == "rollback":
            await self.wait_done(record.run_id, limit=self.ctx.settings.enqueue_wait)
            await self.rollback(record.thread_id, [record.run_id])

    async def wait_done(self, run_id: str, *, limit: float | None = None
                        ) -> RunRecord | None:
        """Wait until a run is finished (here or in another process); its final record."""
        local = self.handles.get(run_id)
        if local is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(local.done.wait(), limit)
            return await self.store.aget_run(run_id)
        deadline = None if limit is None else self.clock() + limit
        delay = 0.05
        orphaned_since: float | None = None
        while True:
            rec = await self.store.aget_run(run_id)
            if rec is None or rec.terminal:
                return rec
            if deadline is not None and self.clock() > deadline:
                return rec
            # "running" with nobody holding the thread for a whole lease TTL: the process
            # that ran it is gone (a finished run writes its status right after releasing)
            if rec.status == "running" and await self.ctx.leases.acurrent(
                    rec.thread_id) is None:
                now = self.clock()
                if orphaned_since is None:
                    orphaned_since = now
                elif now - orphaned_since > self.ctx.settings.lease_ttl:
                    await self.store.aset_status(
                        run_id, "error", only_if=["running"],
                        error="the server process running it stopped; the thread keeps "
                              "its last checkpoint")
                    continue
            else:
                orphaned_since = None
            await asyncio.sleep(delay)  # another process runs it: poll its row
            delay = min(delay * 2, 1.0)

    async def refresh_index(self, thread_id: str, graph_id: str | None) -> None:
        """Write the thread's row in the listing index from its current state."""
        from relaygraph.serve._runner import refresh

        await refresh(self.ctx, thread_id, graph_id)


def _event_json(event: Mapping[str, Any]) -> Any:
    try:
        return to_json(event)
    except Exception:  # noqa: BLE001 - an event with an object JSON cannot show: its repr
        return {k: (to_json(v) if k not in ("data",) else repr(v)[:2000])
                for k, v in event.items()}


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


async def get_manager(ctx: ServerContext) -> RunManager:
    """The app's run manager, created (and its tables set up) on first use."""
    manager = getattr(ctx, "_protocol_runs", None)
    if manager is not None:
        return manager  # type: ignore[no-any-return]
    lock = ctx.__dict__.setdefault("_protocol_lock", asyncio.Lock())
    async with lock:
        manager = getattr(ctx, "_protocol_runs", None)
        if manager is None:
            store = RunStore(ctx.threads.engine)
            await store.asetup()
            manager = RunManager(ctx, store)
            ctx._protocol_runs = manager  # type: ignore[attr-defined]
    return manager
