"""Shared state vocabulary and graph builders."""

from relaygraph.graphs._state import (
    AgentRun,
    GuardDecision,
    HandoffReport,
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
    "AgentRun",
    "GuardDecision",
    "HandoffReport",
    "RelayState",
    "ReviewRecord",
    "Usage",
    "UsageTable",
    "VerbatimCheck",
    "append_records",
    "merge_dicts",
    "merge_usage",
]
