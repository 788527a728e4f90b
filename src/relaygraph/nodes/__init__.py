"""Graph nodes: typed handoffs between agents.

``handoff()`` compresses a source (a transcript, a state key) into a validated
:class:`Contract`, checks its :class:`Verbatim` facts against the source, repairs or
routes on failure, and keeps the raw source reachable through :func:`recall_tool`.
"""

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
from relaygraph.nodes._tokens import TokenCounter, approx_tokens, default_counter
from relaygraph.nodes._verbatim import Verbatim

__all__ = [
    "CompressorTimeout",
    "Contract",
    "HandoffError",
    "HandoffFeedback",
    "HandoffNode",
    "HandoffState",
    "InMemorySourceStore",
    "RecallError",
    "SourceStore",
    "TokenCounter",
    "Verbatim",
    "approx_tokens",
    "brief_message",
    "contract_allowlist",
    "contract_serializer",
    "default_counter",
    "handoff",
    "recall_tool",
    "render_brief",
    "with_brief",
]
