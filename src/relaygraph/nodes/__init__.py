"""Graph nodes: typed handoffs between agents, human review, agent tracking.

``handoff()`` compresses a source (a transcript, a state key) into a validated
:class:`Contract`, checks its :class:`Verbatim` facts against the source, repairs or
routes on failure, and keeps the raw source reachable through :func:`recall_tool`.
"""

from relaygraph.nodes._autonomy import (
    AutonomyPolicy,
    AutonomyStats,
    AutonomyStore,
    InMemoryAutonomyStore,
    PolicyDecision,
    SQLAutonomyStore,
    wilson_lower_bound,
)
from relaygraph.nodes._brief import brief_message, render_brief, with_brief
from relaygraph.nodes._contract import Contract, contract_allowlist, contract_serializer
from relaygraph.nodes._handoff import (
    CompressorTimeout,
    HandoffError,
    HandoffFeedback,
    HandoffNode,
    HandoffState,
    handoff,
)
from relaygraph.nodes._recall import (
    InMemorySourceStore,
    RecallError,
    SourceStore,
    recall_tool,
)
from relaygraph.nodes._reconcile import ReconcileError, ReconcileNode, reconcile
from relaygraph.nodes._review import (
    ApproveDecision,
    EditDecision,
    HumanReview,
    InvalidReviewDecision,
    NotWaitingForReview,
    RejectDecision,
    ReviewDecision,
    ReviewError,
    ReviewRequest,
    apply_edits,
    asubmit_review,
    parse_decision,
    pending_reviews,
    submit_review,
)
from relaygraph.nodes._tokens import TokenCounter, approx_tokens, default_counter
from relaygraph.nodes._track import TrackedAgent, track_agent
from relaygraph.nodes._verbatim import Verbatim
from relaygraph.nodes._versions import ContractVersionError, default, rename

__all__ = [
    "ApproveDecision",
    "AutonomyPolicy",
    "AutonomyStats",
    "AutonomyStore",
    "CompressorTimeout",
    "Contract",
    "ContractVersionError",
    "EditDecision",
    "HandoffError",
    "HandoffFeedback",
    "HandoffNode",
    "HandoffState",
    "HumanReview",
    "InMemoryAutonomyStore",
    "InMemorySourceStore",
    "InvalidReviewDecision",
    "NotWaitingForReview",
    "PolicyDecision",
    "RecallError",
    "ReconcileError",
    "ReconcileNode",
    "RejectDecision",
    "ReviewDecision",
    "ReviewError",
    "ReviewRequest",
    "SQLAutonomyStore",
    "SourceStore",
    "TokenCounter",
    "TrackedAgent",
    "Verbatim",
    "apply_edits",
    "approx_tokens",
    "asubmit_review",
    "brief_message",
    "contract_allowlist",
    "contract_serializer",
    "default",
    "default_counter",
    "handoff",
    "parse_decision",
    "pending_reviews",
    "recall_tool",
    "reconcile",
    "rename",
    "render_brief",
    "submit_review",
    "track_agent",
    "wilson_lower_bound",
    "with_brief",
]
