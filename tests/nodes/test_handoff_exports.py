"""Pins the public names of ``relaygraph.nodes``.

Each component lists its own names; the test checks ``__all__`` is exactly their union.
Adding a component's exports means adding its set here.
"""

from __future__ import annotations

import relaygraph.nodes

HANDOFF_EXPORTS = {
    "CompressorTimeout", "Contract", "HandoffError", "HandoffFeedback", "HandoffNode",
    "HandoffState", "InMemorySourceStore", "RecallError", "SourceStore", "TokenCounter",
    "Verbatim", "approx_tokens", "brief_message", "contract_allowlist", "contract_serializer",
    "default_counter", "handoff", "recall_tool", "render_brief", "with_brief",
}
# Exports of the review / autonomy / tracking components.
OTHER_EXPORTS = {
    "ApproveDecision", "AutonomyPolicy", "AutonomyStats", "AutonomyStore", "EditDecision",
    "HumanReview", "InMemoryAutonomyStore", "InvalidReviewDecision", "NotWaitingForReview",
    "PolicyDecision", "RejectDecision", "ReviewDecision", "ReviewError", "ReviewRequest",
    "SQLAutonomyStore", "TrackedAgent", "apply_edits", "asubmit_review", "parse_decision",
    "pending_reviews", "submit_review", "track_agent", "wilson_lower_bound",
}

# Exports of reconcile().
RECONCILE_EXPORTS = {"ReconcileError", "ReconcileNode", "reconcile"}

# Exports of contract versions.
VERSION_EXPORTS = {"ContractVersionError", "default", "rename"}


def test_handoff_names_are_exported() -> None:
    assert HANDOFF_EXPORTS <= set(relaygraph.nodes.__all__)


def test_all_is_pinned_sorted_and_importable() -> None:
    names = relaygraph.nodes.__all__
    pinned = HANDOFF_EXPORTS | OTHER_EXPORTS | RECONCILE_EXPORTS | VERSION_EXPORTS
    assert set(names) == pinned, (
        "relaygraph.nodes.__all__ changed: update the pinned sets in this test"
    )
    assert len(names) == len(set(names))
    for name in names:
        assert getattr(relaygraph.nodes, name) is not None
