"""A run's timeline as the timeline page shows it, from `relaygraph.observe.atimeline`.

The same data the CLI's ``relaygraph timeline`` prints: each step's node, what it received
and wrote, duration, tokens and cost, and the handoff reports, guard decisions and reviews
it recorded; plus the graph drawn with the path the run took.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from markupsafe import Markup

from relaygraph.observe._timeline import BOOKKEEPING
from relaygraph.serve._inbox_graph import graph_svg
from relaygraph.serve._json import to_json
from relaygraph.serve._runner import thread_config

MAX_SHOWN = 6000
"""Characters of one step's output shown before it is cut (the JSON API has it all)."""


@dataclass(frozen=True)
class StepView:
    step: int
    node: str
    status: str
    received: list[str]
    wrote: str
    wrote_keys: list[str]
    duration_s: float | None
    latency_ms: float | None
    input_tokens: int
    output_tokens: int
    cost: float
    guard_decisions: list[dict[str, Any]] = field(default_factory=list)
    handoffs: list[dict[str, Any]] = field(default_factory=list)
    reviews: list[dict[str, Any]] = field(default_factory=list)
    reconciles: list[dict[str, Any]] = field(default_factory=list)
    waiting: bool = False
    error: str | None = None


@dataclass(frozen=True)
class TimelineView:
    thread_id: str
    graph_id: str
    status: str
    steps: list[StepView]
    cost: float
    input_tokens: int
    output_tokens: int
    duration_s: float | None
    cost_by_agent: dict[str, float]
    svg: Markup
    waiting_at: list[str]
    pricing_as_of: str | None


def _compact(value: Any) -> Any:
    """State values for people: messages as ``{type, content}``, contracts as dicts."""
    from langchain_core.messages import BaseMessage

    if isinstance(value, BaseMessage):
        out: dict[str, Any] = {"type": value.type, "content": value.content}
        calls = getattr(value, "tool_calls", None)
        if calls:
            out["tool_calls"] = [{"name": c.get("name"), "args": c.get("args")} for c in calls]
        return out
    if isinstance(value, Mapping):
        return {str(k): _compact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_compact(v) for v in value]
    return value


def _shown(wrote: Mapping[str, Any]) -> str:
    data = {k: v for k, v in wrote.items() if k not in BOOKKEEPING}
    if not data:
        return ""
    try:
        text = json.dumps(to_json(_compact(data)), indent=2, ensure_ascii=False,
                          default=str)
    except Exception as exc:  # noqa: BLE001 - show the step even if a value will not print
        text = f"(cannot be shown: {type(exc).__name__})"
    return text if len(text) <= MAX_SHOWN else text[:MAX_SHOWN] + "\n… (cut)"


def _elapsed(tl: Any) -> float | None:
    """Wall time from the first checkpoint to the last one (so far, for a paused run)."""
    from datetime import datetime

    stamps = [x for s in tl.steps for x in (s.started_at, s.ended_at) if x]
    if len(stamps) < 2:
        return None
    try:
        times = [datetime.fromisoformat(x) for x in stamps]
    except ValueError:
        return None
    return (max(times) - min(times)).total_seconds()


async def atimeline_view(graph: Any, graph_id: str, thread_id: str, internal: str
                         ) -> TimelineView:
    """The timeline page's data for the thread (``thread_id`` as the client names it)."""
    from relaygraph.observe import atimeline

    tl = await atimeline(graph, thread_config(internal))
    steps = []
    for s in tl.steps:
        steps.append(StepView(
            step=s.step, node=s.node, status=s.status, received=list(s.received),
            wrote=_shown(s.wrote), wrote_keys=sorted(k for k in s.wrote if k not in
                                                     BOOKKEEPING),
            duration_s=s.duration_s, latency_ms=s.latency_ms,
            input_tokens=s.input_tokens, output_tokens=s.output_tokens, cost=s.cost,
            guard_decisions=[dict(g) for g in s.guard_decisions],
            handoffs=[dict(h) for h in s.handoffs], reviews=[dict(r) for r in s.reviews],
            reconciles=[dict(c) for c in s.reconciles],
            waiting=s.status == "interrupted", error=s.error,
        ))
    path = [s.node for s in tl.steps if s.status in ("done", "interrupted", "error")]
    if tl.status == "finished":
        path.append("__end__")
    waiting = [s.node for s in tl.steps if s.status == "interrupted"]
    try:
        svg = graph_svg(graph, path, waiting)
    except Exception:  # noqa: BLE001 - a graph that cannot be drawn still has a timeline
        svg = Markup('<p class="muted">This graph cannot be drawn.</p>')
    return TimelineView(
        thread_id=thread_id, graph_id=graph_id, status=tl.status, steps=steps,
        cost=tl.cost, input_tokens=tl.input_tokens, output_tokens=tl.output_tokens,
        duration_s=_elapsed(tl), cost_by_agent=tl.cost_by_agent, svg=svg,
        waiting_at=waiting, pricing_as_of=tl.pricing_as_of)
