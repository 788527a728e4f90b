"""Example workflows built with `relaygraph.graphs.pipeline`, runnable offline.

* `refund`: intake agent → handoff ``RefundCase`` → confidence guard → resolver → review.
* `research`: researcher → handoff ``ResearchBrief`` → writer.

Each example registers in `EXAMPLES` with a builder, its scripted input and the classes it
keeps in state; ``relaygraph demo``, ``relaygraph timeline`` and ``relaygraph serve`` find
them there. Checkpoints rebuild those classes only with a serializer that allows them:
use `serde()`::

    with SQLAlchemySaver.from_conn_string(url, serde=examples.serde()) as saver:
        graph = EXAMPLES["refund"].build().compile(checkpointer=saver)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from langgraph.graph import StateGraph

from relaygraph.graphs.examples import refund, research


@dataclass(frozen=True)
class Example:
    """A registered example workflow.

    Attributes:
        name: the graph id used in thread metadata and in URLs.
        description: one line for listings.
        build: returns the (uncompiled) ``StateGraph``.
        make_input: returns the input that starts a run.
        state_types: the classes the workflow keeps in state (for the serializer).
    """

    name: str
    description: str
    build: Callable[[], StateGraph]
    make_input: Callable[[], dict[str, Any]]
    state_types: tuple[type, ...] = ()


EXAMPLES: dict[str, Example] = {
    refund.GRAPH_ID: Example(
        name=refund.GRAPH_ID,
        description="customer refund: intake → handoff RefundCase → guard → resolver → review",
        build=refund.build_refund_graph,
        make_input=refund.refund_input,
        state_types=(refund.RefundCase, refund.Resolution),
    ),
    research.GRAPH_ID: Example(
        name=research.GRAPH_ID,
        description="research report: researcher → handoff ResearchBrief → writer",
        build=research.build_research_graph,
        make_input=research.research_input,
        state_types=(research.ResearchBrief,),
    ),
}
"""Example workflows by graph id."""


def serde() -> Any:
    """A strict msgpack serializer that rebuilds every example's contracts from checkpoints."""
    from relaygraph.nodes import contract_serializer

    return contract_serializer(*(t for ex in EXAMPLES.values() for t in ex.state_types))


__all__ = ["EXAMPLES", "Example", "refund", "research", "serde"]
