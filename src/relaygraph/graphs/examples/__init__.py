"""Example workflows built from relaygraph nodes, runnable offline.

* `refund`: intake agent → handoff ``RefundCase`` → confidence guard → resolver → review.

Each example registers in `EXAMPLES` with a builder and its scripted input, which is how
``relaygraph demo``, ``relaygraph timeline`` and ``relaygraph serve`` find them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from langgraph.graph import StateGraph

from relaygraph.graphs.examples import refund


@dataclass(frozen=True)
class Example:
    """A registered example workflow.

    Attributes:
        name: the graph id used in thread metadata and in URLs.
        description: one line for listings.
        build: returns the (uncompiled) ``StateGraph``.
        make_input: returns the input that starts a run.
    """

    name: str
    description: str
    build: Callable[[], StateGraph]
    make_input: Callable[[], dict[str, Any]]


EXAMPLES: dict[str, Example] = {
    refund.GRAPH_ID: Example(
        name=refund.GRAPH_ID,
        description="customer refund: intake → handoff RefundCase → guard → resolver → review",
        build=refund.build_refund_graph,
        make_input=refund.refund_input,
    ),
}
"""Example workflows by graph id."""

__all__ = ["EXAMPLES", "Example", "refund"]
