"""Pending human reviews: recognising review interrupts and validating decisions."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

REVIEW_KIND = "human_review"


class DecisionBody(BaseModel):
    """A reviewer's decision, as posted to ``POST /reviews/{thread_id}``.

    Attributes:
        action: ``approve``, ``edit`` (with ``edits``) or ``reject``.
        edits: field → new value, for ``edit``; validated by the review node against the
            contract under review.
        reviewer: who decided.
        comment: free text; a reason is expected for ``reject``.
        interrupt_id: which pending review this answers, when a thread has several.
    """

    model_config = ConfigDict(extra="forbid")

    action: Literal["approve", "edit", "reject"]
    edits: dict[str, Any] = Field(default_factory=dict)
    reviewer: str | None = Field(default=None, max_length=200)
    comment: str | None = Field(default=None, max_length=5000)
    interrupt_id: str | None = None

    def resume_value(self) -> dict[str, Any]:
        """The value handed to the review node through ``Command(resume=...)``."""
        return self.model_dump(exclude={"interrupt_id"}, exclude_none=True)


def is_review_request(value: Any) -> bool:
    """Whether an interrupt value is a human-review request (and not some other pause)."""
    if hasattr(value, "model_dump"):
        value = value.model_dump()
    return isinstance(value, dict) and value.get("kind") == REVIEW_KIND
