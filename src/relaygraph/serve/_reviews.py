"""Pending human reviews: recognising review interrupts and deciding them exactly once.

A decision is applied under the thread's lease (strategy ``reject``) after re-reading the
thread: a second decision on the same interrupt, from this server or another one on the
same database, finds the thread busy or no longer waiting and gets 409. The reviewer
recorded is the authenticated caller's, never a name from the request body.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from langgraph.errors import GraphDrained
from langgraph.types import Command

from relaygraph.nodes import (
    InvalidReviewDecision,
    NotWaitingForReview,
    ReviewDecision,
    ReviewRequest,
    asubmit_review,
    submit_review,
)

REVIEW_KIND: str = ReviewRequest.model_fields["kind"].default
"""The ``kind`` every ``HumanReview`` request carries (``"human_review"``)."""

__all__ = [
    "REVIEW_KIND",
    "InvalidReviewDecision",
    "NotWaitingForReview",
    "ReviewDecision",
    "adecide",
    "asubmit_review",
    "is_review_request",
    "submit_review",
]


def is_review_request(value: Any) -> bool:
    """Whether an interrupt value is a ``HumanReview`` request (and not some other pause)."""
    if hasattr(value, "model_dump"):
        value = value.model_dump()
    return isinstance(value, dict) and value.get("kind") == REVIEW_KIND


def with_reviewer(raw: Any, reviewer: str) -> Any:
    """The decision with the authenticated reviewer; a different name in the body is refused."""
    if isinstance(raw, ReviewDecision):
        raw = raw.root.model_dump()
    if not isinstance(raw, Mapping):
        return raw  # parse_decision reports the shape
    sent = raw.get("reviewer")
    if sent not in (None, "", reviewer):
        raise InvalidReviewDecision(
            f"reviewer is the authenticated identity ({reviewer!r}); the body names "
            f"{str(sent)[:60]!r}: leave it out")
    return {**raw, "reviewer": reviewer}


def review_command(graph: Any, snapshot: Any, config: Mapping[str, Any], decision: Any,
                   reviewer: str, interrupt_id: str | None) -> Command:
    """The resume command for a decision, validated against the open review."""
    from relaygraph.nodes._review import _prepare

    return _prepare(graph, snapshot, config, with_reviewer(decision, reviewer), interrupt_id)


async def adecide(ctx: Any, graph_id: str, internal: str, decision: Any, *, reviewer: str,
                  interrupt_id: str | None = None, strategy: str = "reject") -> Any:
    """Apply a review decision exactly once; returns the thread's state afterwards.

    ``strategy`` ``reject`` answers a running thread with 409 at once; ``enqueue`` waits for
    it (up to ``enqueue_wait``) and then decides against the thread as the run left it.

    Raises:
        ThreadBusyError: the thread is running or another decision is being applied (409).
        NotWaitingForReview: no open review (already decided, or never asked) (409).
        InvalidReviewDecision: the decision does not fit the request (422).
    """
    from relaygraph.serve._errors import RunStopped
    from relaygraph.serve._runner import hold_thread, thread_config

    graph = ctx.graph(graph_id)
    config = thread_config(internal, graph_id)
    if strategy not in ("reject", "enqueue"):
        raise InvalidReviewDecision(
            f"multitask_strategy for a review is 'reject' or 'enqueue', got {strategy!r}")
    async with hold_thread(ctx, internal, graph_id=graph_id, strategy=strategy) as held:
        # re-read under the lease: whoever decided first has already moved the thread on
        snapshot = await graph.aget_state(config)
        try:
            command = review_command(graph, snapshot, config, decision, reviewer,
                                     interrupt_id)
        except (NotWaitingForReview, InvalidReviewDecision) as exc:
            # the message names the thread as the client does, not by its stored id
            external = internal.split("/", 1)[-1]
            raise type(exc)(str(exc).replace(repr(internal), repr(external))) from None
        try:
            await graph.ainvoke(command, held.config(config), control=held.control)
        except GraphDrained as exc:
            raise RunStopped(internal, exc.reason,
                             timeout=ctx.settings.run_timeout) from None
    return await graph.aget_state(config)
