"""Observability: run timelines rebuilt from checkpoints, cost per run, LangSmith metadata.

Example:
    >>> from relaygraph.observe import timeline, Pricing
    >>> tl = timeline(graph, {"configurable": {"thread_id": "t1"}})  # doctest: +SKIP
    >>> tl.cost, tl.cost_by_agent                                   # doctest: +SKIP
"""

from relaygraph.observe._costs import CostReport, cost_report
from relaygraph.observe._draw import GraphDrawing, draw_graph
from relaygraph.observe._langsmith import annotate_guard_decision, annotate_run
from relaygraph.observe._pricing import (
    DEFAULT_PRICES,
    DEFAULT_PRICES_AS_OF,
    ModelPrice,
    Pricing,
    cost_by_agent,
    run_cost,
    tokens_by_agent,
)
from relaygraph.observe._status import (
    StatusReport,
    ThreadStatus,
    aget_thread_status,
    get_thread_status,
    thread_status,
)
from relaygraph.observe._timeline import Timeline, TimelineStep, atimeline, timeline

__all__ = [
    "CostReport",
    "DEFAULT_PRICES",
    "DEFAULT_PRICES_AS_OF",
    "GraphDrawing",
    "ModelPrice",
    "Pricing",
    "StatusReport",
    "ThreadStatus",
    "Timeline",
    "TimelineStep",
    "aget_thread_status",
    "annotate_guard_decision",
    "annotate_run",
    "atimeline",
    "cost_by_agent",
    "cost_report",
    "draw_graph",
    "get_thread_status",
    "run_cost",
    "thread_status",
    "timeline",
    "tokens_by_agent",
]
