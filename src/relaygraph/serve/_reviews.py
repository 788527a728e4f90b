"""Pending human reviews: recognising review interrupts and submitting decisions."""

from __future__ import annotations

from typing import Any

try:
    from relaygraph.nodes import (
        InvalidReviewDecision,
        NotWaitingForReview,
        ReviewDecision,
        asubmit_review,
        submit_review,
    )
except ImportError:  # TEMPORARY: until relaygraph.nodes re-exports the review API
    from relaygraph.nodes._review import (
        InvalidReviewDecision,
        NotWaitingForReview,
        ReviewDecision,
        asubmit_review,
        submit_review,
    )

REVIEW_KIND = "human_review"

__all__ = [
    "REVIEW_KIND",
    "InvalidReviewDecision",
    "NotWaitingForReview",
    "ReviewDecision",
    "asubmit_review",
    "is_review_request",
    "submit_review",
]


def is_review_request(value: Any) -> bool:
    """Whether an interrupt value is a ``HumanReview`` request (and not some other pause)."""
    if hasattr(value, "model_dump"):
        value = value.model_dump()
    return isinstance(value, dict) and value.get("kind") == REVIEW_KIND
