"""Running a graph on a thread: one writer (a lease), a time limit, a drain, the index.

Every route that writes to a thread (LangServe invoke/stream, review decisions, protocol
runs) goes through `hold_thread`: it takes the thread's lease by the request's multitask
strategy, renews it while the run lives, and hands the run a LangGraph ``RunControl`` that
is asked to drain (stop at the next step boundary, checkpoint kept) when the run exceeds
``run_timeout``, when the server shuts down, or when the lease is lost. On exit the thread's
index row is refreshed and the lease released.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from langgraph.runtime import RunControl

from relaygraph.serve._errors import BadRequest, ServerDraining
from relaygraph.serve._index import summarize
from relaygraph.serve._tenancy import SEPARATOR

log = logging.getLogger("relaygraph.serve")

MultitaskStrategy = Literal["reject", "enqueue", "interrupt", "rollback"]
STRATEGIES: tuple[str, ...] = ("reject", "enqueue", "interrupt", "rollback")


@dataclass
class HeldThread:
    """A thread this process writes to, until the ``hold_thread`` block exits."""

    thread_id: str
    lease: Any
    control: RunControl = field(default_factory=RunControl)

    def config(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """``config`` with the lease as the checkpoint write fence (a write after another
        process took the thread over is refused, not silently forked)."""
        from relaygraph.checkpointers._fence import FENCE_KEY

        if not hasattr(self.lease, "fence_statement"):
            return dict(config)
        return {**config, "configurable": {**(config.get("configurable") or {}),
                                           FENCE_KEY: self.lease}}

    @property
    def stop_reason(self) -> str | None:
        return self.control.drain_reason


def tenant_of(internal: str) -> str:
    return internal.split(SEPARATOR, 1)[0]


def thread_config(internal: str, graph_id: str | None = None) -> dict[str, Any]:
    config: dict[str, Any] = {"configurable": {"thread_id": internal}}
    if graph_id is not None:
        config["metadata"] = {"graph_id": graph_id}
    return config


async def _acquire(ctx: Any, internal: str, strategy: str) -> Any:
    leases = ctx.leases
    if strategy == "reject":
        return await leases.aacquire(internal, holder=ctx.holder, wait=0.0)
    if strategy == "enqueue":
        return await leases.aacquire(internal, holder=ctx.holder, wait=ctx.settings.enqueue_wait)
    if strategy in ("interrupt", "rollback"):
        # ask the holder to stop at its next step boundary, then wait for the lease
        await leases.arequest_cancel(internal)
        return await leases.aacquire(internal, holder=ctx.holder, wait=ctx.settings.enqueue_wait)
    raise BadRequest(f"multitask_strategy must be one of {list(STRATEGIES)}, got {strategy!r}")


@contextlib.asynccontextmanager
async def hold_thread(ctx: Any, internal: str, *, graph_id: str | None,
                      strategy: str = "reject") -> AsyncIterator[HeldThread]:
    """Hold ``internal``'s lease for one run (see the module docstring).

    Raises:
        ServerDraining: the server is shutting down (503).
        ThreadBusyError: the thread is held elsewhere and the strategy gave up (409).
    """
    if ctx.draining:
        raise ServerDraining("the server is shutting down and takes no new runs; retry on "
                             "another server")
    lease = await _acquire(ctx, internal, strategy)
    held = HeldThread(internal, lease)
    loop = asyncio.get_running_loop()
    timer = None
    if ctx.settings.run_timeout is not None:
        timer = loop.call_later(ctx.settings.run_timeout, held.control.request_drain,
                                "timeout")
    renewer = asyncio.create_task(_renew(ctx, held))
    task = asyncio.current_task()
    if task is not None:
        ctx.active_runs.add(task)
    ctx.controls[internal] = held.control
    watch = getattr(ctx.leases, "_watch", None)  # a cancel from this process: at once
    unwatch = watch(internal, lambda: held.control.request_drain("cancelled")) if watch else None
    try:
        await ctx.threads.amark_running(internal, tenant_of(internal), graph_id)
        yield held
    finally:
        if timer is not None:
            timer.cancel()
        if unwatch is not None:
            unwatch()
        renewer.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await renewer
        ctx.controls.pop(internal, None)
        if task is not None:
            ctx.active_runs.discard(task)
        try:
            await refresh(ctx, internal, graph_id)
        finally:
            await ctx.leases.arelease(held.lease)


async def _renew(ctx: Any, held: HeldThread) -> None:
    interval = max(ctx.settings.lease_ttl / 3, 0.05)
    while True:
        await asyncio.sleep(interval)
        try:
            held.lease = await ctx.leases.arenew(held.lease)
        except Exception as exc:  # noqa: BLE001 - lost or unreachable: stop the run cleanly
            log.warning("lease on %s lost (%s): stopping at the next step boundary",
                        held.thread_id, exc)
            held.control.request_drain("lease lost")
            return
        cancelled = getattr(ctx.leases, "cancel_requested", None)
        if getattr(held.lease, "cancel_requested", False) or (
                cancelled is not None and cancelled(held.thread_id)):
            held.control.request_drain("cancelled")
            return


async def refresh(ctx: Any, internal: str, graph_id: str | None, *,
                  running: bool = False) -> None:
    """Re-read a thread's state and write its index row (an error row if unreadable)."""
    graph = ctx.graphs.get(graph_id) if graph_id is not None else None
    tenant = tenant_of(internal)
    if graph is None:
        return
    try:
        snapshot = await graph.aget_state(thread_config(internal))
        if not snapshot.values and not snapshot.next and snapshot.config.get(
                "configurable", {}).get("checkpoint_id") is None:
            await ctx.threads.adelete(internal)
            return
        status, summary, review = summarize(snapshot, running=running)
    except Exception as exc:  # noqa: BLE001 - the listing shows the thread as broken
        log.warning("thread %s cannot be read: %s", internal, exc)
        status, summary, review = "error", {
            "error": f"state cannot be read: {type(exc).__name__}: {str(exc)[:300]}",
            "next": [], "interrupts": []}, False
    try:
        await ctx.threads.aput(internal, tenant, graph_id, status, summary, review=review)
    except Exception:  # noqa: BLE001 - the run itself succeeded; the listing is stale
        log.exception("could not index thread %s", internal)


def drain_reason_status(reason: str) -> int:
    """HTTP status for a run stopped early: 408 on timeout, 503 on shutdown, else 409."""
    return {"timeout": 408, "shutdown": 503}.get(reason, 409)
