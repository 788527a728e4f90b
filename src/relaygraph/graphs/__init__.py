"""Shared state vocabulary, the `pipeline` builder and example workflows.

``relaygraph.graphs.examples`` (the customer-refund and research-report workflows) is
imported on first use.
"""

from typing import Any

from relaygraph.graphs._pipeline import Agent, Budget, Guard, Handoff, Review, Stage, pipeline
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
    "Agent",
    "AgentRun",
    "Budget",
    "Guard",
    "GuardDecision",
    "Handoff",
    "HandoffReport",
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


def __getattr__(name: str) -> Any:
    # the examples import relaygraph.nodes, which imports this package: load them lazily
    if name == "examples":
        import importlib

        return importlib.import_module("relaygraph.graphs.examples")
    raise AttributeError(f"module 'relaygraph.graphs' has no attribute {name!r}")
