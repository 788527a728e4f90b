"""Human reviews: ``GET /reviews`` (pending, paginated) and ``POST /reviews/{thread_id}``.

The listing reads the thread index (`relaygraph.serve._index`): paginated by an opaque
``cursor``, never decoding state, so a page costs the same at any number of threads and
one unreadable thread is an ``error`` row, not a failed page.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from relaygraph.serve._auth import Principal, require_principal
from relaygraph.serve._context import ServerContext, get_context
from relaygraph.serve._errors import BadRequest
from relaygraph.serve._json import to_json
from relaygraph.serve._reviews import ReviewDecision, adecide
from relaygraph.serve._runner import thread_config
from relaygraph.serve._tenancy import ThreadNotFound, external_thread_id, internal_thread_id

Caller = Annotated[Principal, Depends(require_principal)]
Ctx = Annotated[ServerContext, Depends(get_context)]
router = APIRouter(tags=["reviews"])


class ReviewRow(BaseModel):
    thread_id: str
    graph_id: str | None
    interrupt_id: str
    node: str | None
    updated_at: str
    request: Any


class ReviewPage(BaseModel):
    reviews: list[ReviewRow]
    next_cursor: str | None = Field(None, description="pass as ?cursor= for the next page")


class DecisionResult(BaseModel):
    thread_id: str
    graph_id: str
    status: str
    next: list[str]
    interrupts: list[dict[str, Any]]
    values: dict[str, Any]


async def resolve_thread(ctx: ServerContext, principal: Principal, thread_id: str
                         ) -> tuple[str, str]:
    """``(internal id, graph id)`` of the caller's thread; 404 if it has none by that id."""
    internal = internal_thread_id(principal, thread_id)
    row = await ctx.threads.aget(internal)
    gid = row.graph_id if row is not None else None
    if gid is None:
        tup = await ctx.checkpointer.aget_tuple(thread_config(internal))
        if tup is None:
            raise ThreadNotFound(f"thread {thread_id!r} not found")
        gid = (tup.metadata or {}).get("graph_id")
        if gid is None and len(ctx.graphs) == 1:
            gid = next(iter(ctx.graphs))
    if gid not in ctx.graphs:
        raise ThreadNotFound(f"thread {thread_id!r} belongs to graph {gid!r}, which this "
                             f"server does not serve")
    return internal, str(gid)


def _limit(ctx: ServerContext, limit: int | None) -> int:
    if limit is None:
        return ctx.settings.page_size
    if not 1 <= limit <= ctx.settings.max_page_size:
        raise BadRequest(f"limit must be in [1, {ctx.settings.max_page_size}], got {limit}")
    return limit


async def _page(ctx: ServerContext, principal: Principal, *, limit: int, cursor: str | None,
                **filters: Any) -> Any:
    try:
        return await ctx.threads.apage(principal.tenant, limit=limit, cursor=cursor, **filters)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None


@router.get("/reviews", response_model=ReviewPage)
async def list_reviews(
    ctx: Ctx,
    principal: Caller,
    graph: str | None = None,
    limit: Annotated[int | None, Query(description="page size (threads)")] = None,
    cursor: Annotated[str | None, Query(max_length=2000)] = None,
) -> ReviewPage:
    """Reviews waiting for a decision in the caller's tenant, newest first."""
    page = await _page(ctx, principal, limit=_limit(ctx, limit), cursor=cursor,
                       graph_id=graph, review_only=True)
    items = []
    for row in page.rows:
        tid = external_thread_id(principal, row.thread_id)
        updated = row.as_dict(tid)["updated_at"]
        for intr in row.summary.get("interrupts", []):
            if intr.get("review"):
                items.append(ReviewRow(thread_id=tid, graph_id=row.graph_id,
                                       interrupt_id=intr["id"], node=intr.get("node"),
                                       updated_at=updated, request=intr.get("value")))
    return ReviewPage(reviews=items, next_cursor=page.next_cursor)


@router.post("/reviews/{thread_id}", response_model=DecisionResult)
async def decide(
    thread_id: str,
    decision: ReviewDecision,
    ctx: Ctx,
    principal: Caller,
    interrupt_id: Annotated[str | None, Query(max_length=200)] = None,
    multitask_strategy: Literal["reject", "enqueue"] = "reject",
) -> DecisionResult:
    """Decide a pending review: ``{"action": "approve" | "edit" | "reject", ...}``.

    The reviewer recorded is the caller's identity. The decision applies exactly once:
    a review already decided gets 409; a thread that is running gets 409 too, or with
    ``multitask_strategy=enqueue`` the decision waits (bounded) for the run to finish.
    """
    internal, gid = await resolve_thread(ctx, principal, thread_id)
    snap = await adecide(ctx, gid, internal, decision.root.model_dump(),
                         reviewer=principal.reviewer, interrupt_id=interrupt_id,
                         strategy=multitask_strategy)
    row = await ctx.threads.aget(internal)
    return DecisionResult(
        thread_id=thread_id, graph_id=gid, status=row.status if row else "unknown",
        next=list(snap.next),
        interrupts=to_json([{"id": i.id, "value": i.value} for i in snap.interrupts]),
        values=to_json(snap.values))
