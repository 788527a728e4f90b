"""Thread retention: delete (or prune) threads not updated within their graph's TTL."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger("relaygraph.serve")


async def sweep_once(ctx: Any, *, batch: int = 500) -> int:
    """Apply each graph's retention once; returns how many threads were deleted/pruned.

    Each expired thread is removed under its lease (strategy ``reject``): a thread that is
    running, or that a run touched since it was listed, is left for a later sweep.
    """
    settings = ctx.settings
    done = 0
    for graph_id, ttl in settings.retention.items():
        cutoff = ctx.threads.clock() - ttl
        for internal in await ctx.threads.aexpired(graph_id, cutoff, limit=batch):
            try:
                lease = await ctx.leases.aacquire(internal, holder=ctx.holder, wait=0.0)
            except Exception:  # noqa: BLE001 - busy (or unreachable): next sweep
                continue
            try:
                row = await ctx.threads.aget(internal)
                if row is None or row.updated_at >= cutoff:
                    continue  # a run finished on it since it was listed
                if settings.retention_strategy == "delete":
                    await ctx.checkpointer.adelete_thread(internal)
                    await ctx.threads.adelete(internal)
                    # the protocol's thread metadata and run records go with it, so a
                    # swept thread is a 404, not an empty thread
                    from relaygraph.serve._runs import get_manager

                    await (await get_manager(ctx)).store.adelete_thread(internal)
                else:
                    await ctx.checkpointer.aprune([internal], strategy="keep_latest")
                    # the pruned thread keeps its row, aged anew: not pruned again until
                    # it has been idle for another TTL
                    await ctx.threads.aput(internal, row.tenant, row.graph_id, row.status,
                                           row.summary, review=row.review)
                done += 1
            finally:
                await ctx.leases.arelease(lease)
    return done


async def run_sweeper(ctx: Any) -> None:
    """Sweep every ``sweep_interval`` seconds until cancelled; errors are logged, not fatal."""
    while True:
        try:
            n = await sweep_once(ctx)
            if n:
                log.info("retention: %d expired thread(s) removed", n)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - a failed sweep must not stop the server
            log.exception("retention sweep failed")
        await asyncio.sleep(ctx.settings.sweep_interval)
