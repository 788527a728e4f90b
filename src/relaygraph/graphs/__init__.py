"""The `pipeline` builder and example workflows, on top of ``nodes`` and ``guards``.

The shared state vocabulary (`RelayState`, the record types, the reducers) lives in the
low-level `relaygraph.state` and is re-exported here. ``relaygraph.graphs.examples`` holds
the customer-refund and research-report workflows.
"""

from relaygraph.graphs import examples
from relaygraph.graphs._pipeline import Agent, Budget, Guard, Handoff, Review, Stage, pipeline
from relaygraph.state import (
    AgentRun,
    GuardDecision,
    HandoffReport,
    ReconcileReport,
    RelayState,
    ReviewRecord,
    Usage,
    UsageTable,
    VerbatimCheck,
    append_records,
    merge_dicts,
    merge_usage,
)

__all__ = [
    "Agent",
    "AgentRun",
    "Budget",
    "Guard",
    "GuardDecision",
    "Handoff",
    "HandoffReport",
    "ReconcileReport",
    "RelayState",
    "Review",
    "ReviewRecord",
    "Stage",
    "Usage",
    "UsageTable",
    "VerbatimCheck",
    "append_records",
    "examples",
    "merge_dicts",
    "merge_usage",
    "pipeline",
]

