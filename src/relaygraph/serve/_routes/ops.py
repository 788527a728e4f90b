"""Operations: liveness, readiness and locally served API docs."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException

from relaygraph.serve._context import ServerContext, get_context

Ctx = Annotated[ServerContext, Depends(get_context)]
router = APIRouter(tags=["ops"])


@router.get("/health")
async def health() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@router.get("/ready")
async def ready(ctx: Ctx) -> dict[str, Any]:
    """Readiness: the database answers and the server is not draining (else 503)."""
    if ctx.draining:
        raise HTTPException(503, "draining: the server is shutting down")
    try:
        await ctx.threads.aping()
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        raise HTTPException(503, f"database unreachable: {type(exc).__name__}") from None
    return {"status": "ready", "graphs": sorted(ctx.graphs)}
