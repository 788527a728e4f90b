"""Pending human reviews: recognising review interrupts and submitting decisions."""

from __future__ import annotations

from typing import Any

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
    "asubmit_review",
    "is_review_request",
    "submit_review",
]


def is_review_request(value: Any) -> bool:
    """Whether an interrupt value is a ``HumanReview`` request (and not some other pause)."""
    if hasattr(value, "model_dump"):
        value = value.model_dump()
    return isinstance(value, dict) and value.get("kind") == REVIEW_KIND
