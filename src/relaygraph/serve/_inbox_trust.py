"""The trust page: each agent's standing with its autonomy policy, and a way back to review.

One row per (agent, decision kind) that a served graph's ``HumanReview`` node governs with
an `AutonomyPolicy`: reviews and approvals so far, approvals in a row, the agreement lower
bound, and the current sampling rate. A reviewer can reset an agent to full review (its
approvals in a row go back to zero); a reset only ever adds human checks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from relaygraph.nodes._review import HumanReview
from relaygraph.serve._inbox_review import Standing, astanding


@dataclass(frozen=True)
class TrustRow:
    graph_id: str
    node: str
    standing: Standing

    @property
    def key(self) -> str:
        return f"{self.graph_id}:{self.node}"


def governed(graphs: Mapping[str, Any]) -> list[tuple[str, str, HumanReview]]:
    """``(graph id, node, review)`` for every review node with an autonomy policy."""
    out = []
    for gid in sorted(graphs):
        nodes = getattr(getattr(graphs[gid], "builder", None), "nodes", None) or {}
        for name, spec in nodes.items():
            runnable = getattr(spec, "runnable", None)
            if isinstance(runnable, HumanReview) and runnable.policy is not None:
                out.append((gid, name, runnable))
    return out


async def atrust_rows(graphs: Mapping[str, Any]) -> list[TrustRow]:
    """The trust page's rows (one per governed agent and decision kind, first node wins)."""
    rows = []
    seen: set[tuple[int, str, str]] = set()
    for gid, name, review in governed(graphs):
        mark = (id(review.policy.store), review.agent, review.kind)  # type: ignore[union-attr]
        if mark in seen:
            continue
        seen.add(mark)
        standing = await astanding(graphs[gid], name, review.agent, review.kind)
        if standing is not None:
            rows.append(TrustRow(gid, name, standing))
    return rows


async def areset(graphs: Mapping[str, Any], graph_id: str, node: str, reviewer: str,
                 at: float) -> Standing | None:
    """Reset the agent behind ``graph_id``/``node`` to full review; None if no such policy."""
    for gid, name, review in governed(graphs):
        if gid == graph_id and name == node:
            policy = review.policy
            assert policy is not None
            await policy.store.areset(review.agent, review.kind,
                                      f"reset to full review by {reviewer}"[:255], at)
            return await astanding(graphs[gid], name, review.agent, review.kind)
    return None
