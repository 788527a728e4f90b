"""A thread's run rebuilt from its checkpoint history.

Every completed LangGraph step leaves its writes in the checkpoint it started from
(``StateSnapshot.tasks[i].result``), so the timeline needs nothing but the checkpointer:
what each node received, what it wrote, the guard decisions, handoff reports, reviews,
agent runs and usage it recorded, and how long the step took.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Literal

from relaygraph.nodes._track import _present
from relaygraph.observe._pricing import Pricing, cost_by_agent, run_cost
from relaygraph.state import (
    AgentRun,
    GuardDecision,
    HandoffReport,
    ReconcileReport,
    ReviewRecord,
    UsageTable,
    merge_usage,
)

StepStatus = Literal["done", "interrupted", "error", "pending"]

#: Channels relaygraph writes for its own bookkeeping (not "what a node received").
BOOKKEEPING = frozenset({"guard_log", "handoffs", "reviews", "usage", "agent_runs",
                         "reconciles"})


class _UsageTotals:
    """Tokens and dollar cost of a ``usage`` table (a step's increments or a whole run's)."""

    usage: UsageTable

    @property
    def input_tokens(self) -> int:
        """Input tokens used."""
        return _total(self.usage, "input_tokens")

    @property
    def output_tokens(self) -> int:
        """Output tokens used."""
        return _total(self.usage, "output_tokens")

    @property
    def cost(self) -> float:
        """Dollar cost (from the ``usage`` channel)."""
        return run_cost(self.usage)


@dataclass(frozen=True)
class TimelineStep(_UsageTotals):
    """One node execution (one task of one LangGraph step).

    Attributes:
        step: LangGraph step number of the checkpoint the task started from.
        node: the node name (``__start__`` is the run's input).
        task_id: LangGraph task id.
        checkpoint_id: checkpoint the task started from.
        status: ``done``, ``interrupted`` (waiting, e.g. for a review), ``error`` or
            ``pending`` (scheduled, not run yet).
        received: state keys the node received (the agent's own record when tracked,
            otherwise the non-empty state keys at the start of the step).
        wrote: the node's writes, channel → value.
        next: nodes scheduled after this step.
        guard_decisions, handoffs, reviews, agent_runs, reconciles: records the node
            appended.
        usage: the node's ``usage`` increments.
        started_at, ended_at: checkpoint timestamps around the step (ISO-8601).
        duration_s: ``ended_at - started_at`` (includes time waiting for a human).
        latency_ms: the agent's own measured latency when tracked.
        interrupts: pending interrupt values (for ``interrupted`` steps).
        error: the error text for failed tasks.
    """

    step: int
    node: str
    task_id: str
    checkpoint_id: str | None
    status: StepStatus
    received: list[str]
    wrote: dict[str, Any]
    next: list[str] = field(default_factory=list)
    guard_decisions: list[GuardDecision] = field(default_factory=list)
    handoffs: list[HandoffReport] = field(default_factory=list)
    reviews: list[ReviewRecord] = field(default_factory=list)
    agent_runs: list[AgentRun] = field(default_factory=list)
    reconciles: list[ReconcileReport] = field(default_factory=list)
    usage: UsageTable = field(default_factory=dict)
    started_at: str | None = None
    ended_at: str | None = None
    duration_s: float | None = None
    latency_ms: float | None = None
    interrupts: list[Any] = field(default_factory=list)
    error: str | None = None

    @property
    def calls(self) -> int:
        """Model calls in this step."""
        return sum(u.get("calls", 0) for m in self.usage.values() for u in m.values())


@dataclass(frozen=True)
class Timeline(_UsageTotals):
    """A thread's run, step by step, with its cost.

    Render it with ``rich`` (``rich.print(timeline)`` or :meth:`render`) or in a notebook
    (``_repr_html_``); :meth:`to_dict` gives plain data.
    """

    thread_id: str | None
    steps: list[TimelineStep]
    usage: UsageTable
    next: list[str]
    values: dict[str, Any] = field(repr=False, default_factory=dict)
    pricing_as_of: str | None = None

    @property
    def cost_by_agent(self) -> dict[str, float]:
        """Dollar cost per agent."""
        return cost_by_agent(self.usage)

    @property
    def status(self) -> str:
        """``waiting`` (an interrupt is pending), ``pending``, ``error`` or ``finished``."""
        if any(s.status == "interrupted" for s in self.steps):
            return "waiting"
        if any(s.status == "error" for s in self.steps):
            return "error"
        return "pending" if self.next else "finished"

    @property
    def duration_s(self) -> float | None:
        """Wall time from the first to the last checkpoint."""
        stamps = [s for s in (self.steps[0].started_at if self.steps else None,
                              self.steps[-1].ended_at if self.steps else None)]
        if None in stamps:
            return None
        return _seconds(stamps[0], stamps[1])

    def by_node(self, node: str) -> list[TimelineStep]:
        """The steps of one node, in order."""
        return [s for s in self.steps if s.node == node]

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON-able when the state is)."""
        return {
            "thread_id": self.thread_id, "status": self.status, "next": list(self.next),
            "cost": self.cost, "cost_by_agent": self.cost_by_agent,
            "input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
            "usage": self.usage, "pricing_as_of": self.pricing_as_of,
            "steps": [{**asdict(s), "input_tokens": s.input_tokens,
                       "output_tokens": s.output_tokens, "cost": s.cost} for s in self.steps],
        }

    def __rich__(self) -> Any:
        from relaygraph.observe._render import rich_timeline

        return rich_timeline(self)

    def render(self, console: Any = None) -> None:
        """Print the timeline to a ``rich`` console (a new one by default)."""
        from rich.console import Console

        (console or Console()).print(self)

    def _repr_html_(self) -> str:
        from relaygraph.observe._render import html_timeline

        return html_timeline(self)


def _seconds(a: str | None, b: str | None) -> float | None:
    if not a or not b:
        return None
    try:
        return (datetime.fromisoformat(b) - datetime.fromisoformat(a)).total_seconds()
    except ValueError:
        return None


def _total(usage: UsageTable, key: str) -> int:
    """Sum one token counter over every agent and model of a usage table."""
    return sum(int(u.get(key, 0) or 0) for models in usage.values()  # type: ignore[call-overload]
               for u in models.values())


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def _lineage(snapshots: Iterable[Any], head_id: str | None) -> list[Any]:
    """The checkpoints leading to ``head_id`` (or the newest), oldest first."""
    snaps = list(snapshots)
    if not snaps:
        return []
    by_id = {s.config["configurable"]["checkpoint_id"]: s for s in snaps}
    head = by_id.get(head_id) if head_id else snaps[0]
    head = head or snaps[0]
    chain = []
    seen = set()
    while head is not None:
        cid = head.config["configurable"]["checkpoint_id"]
        if cid in seen:
            break
        seen.add(cid)
        chain.append(head)
        parent = head.parent_config
        head = by_id.get(parent["configurable"]["checkpoint_id"]) if parent else None
    chain.reverse()
    return chain


def _reprice(usage: UsageTable, pricing: Pricing) -> UsageTable:
    out: UsageTable = {}
    for agent, models in usage.items():
        out[agent] = {}
        for model, u in models.items():
            out[agent][model] = {**u, "cost": pricing.cost(model, u.get("input_tokens", 0),
                                                           u.get("output_tokens", 0))}
    return out


def _build(chain: list[Any], thread_id: str | None, pricing: Pricing | None,
           cut: bool = False) -> Timeline:
    steps: list[TimelineStep] = []
    for i, snap in enumerate(chain):
        after = chain[i + 1] if i + 1 < len(chain) else None
        values = snap.values if isinstance(snap.values, Mapping) else {}
        state_keys = sorted(k for k, v in values.items() if k not in BOOKKEEPING and _present(v))
        for task in snap.tasks:
            # A timeline cut at an older checkpoint does not show what happened after it.
            hidden = cut and after is None
            result = None if hidden else task.result
            if result is not None and not isinstance(result, Mapping):
                result = {"__result__": result}
            if result is not None:
                status: StepStatus = "done"
            elif task.error is not None and not hidden:
                status = "error"
            elif task.interrupts and not hidden:
                status = "interrupted"
            else:
                status = "pending"
            wrote = dict(result or {})
            runs = _as_list(wrote.get("agent_runs"))
            usage = merge_usage(None, wrote.get("usage") or {})
            if pricing is not None:
                usage = _reprice(usage, pricing)
            received = sorted({k for r in runs for k in r.get("input_keys", [])}) if runs \
                else state_keys
            ended = after.created_at if (after is not None and status == "done") else None
            steps.append(TimelineStep(
                step=int((snap.metadata or {}).get("step", i - 1)),
                node=task.name,
                task_id=task.id,
                checkpoint_id=snap.config["configurable"].get("checkpoint_id"),
                status=status,
                received=received,
                wrote=wrote,
                next=list(after.next) if after is not None and status == "done" else [],
                guard_decisions=_as_list(wrote.get("guard_log")),
                handoffs=_as_list(wrote.get("handoffs")),
                reviews=_as_list(wrote.get("reviews")),
                agent_runs=runs,
                reconciles=_as_list(wrote.get("reconciles")),
                usage=usage,
                started_at=snap.created_at,
                ended_at=ended,
                duration_s=_seconds(snap.created_at, ended),
                latency_ms=(sum(float(r.get("latency_ms", 0.0)) for r in runs) if runs
                            else None),
                interrupts=([intr.value for intr in task.interrupts]
                            if status == "interrupted" else []),
                error=repr(task.error) if status == "error" else None,
            ))
    last = chain[-1] if chain else None
    values = dict(last.values) if last is not None and isinstance(last.values, Mapping) else {}
    usage = merge_usage(None, values.get("usage") or {})
    if pricing is not None:
        usage = _reprice(usage, pricing)
    as_of = str(pricing.as_of) if pricing is not None else next(
        (r.get("pricing_as_of") for s in steps for r in s.agent_runs if r.get("pricing_as_of")),
        None)
    return Timeline(thread_id=thread_id, steps=steps, usage=usage,
                    next=list(last.next) if last is not None else [], values=values,
                    pricing_as_of=as_of)


def _is_cut(snaps: list[Any], head: str | None) -> bool:
    return bool(head and snaps and snaps[0].config["configurable"]["checkpoint_id"] != head)


def _thread_id(config: Mapping[str, Any]) -> str | None:
    tid = (config.get("configurable") or {}).get("thread_id")
    return None if tid is None else str(tid)


def timeline(graph: Any, config: Mapping[str, Any], *, pricing: Pricing | None = None
             ) -> Timeline:
    """Rebuild a thread's run from its checkpoint history.

    Args:
        graph: a compiled graph with a checkpointer.
        config: ``{"configurable": {"thread_id": ...}}``; with a ``checkpoint_id`` the
            timeline ends at that checkpoint (forks are followed through their parents).
        pricing: re-price the recorded tokens with this table instead of the costs
            recorded at run time.

    Returns:
        A :class:`Timeline`, oldest step first.
    """
    conf = dict(config.get("configurable") or {})
    head = conf.pop("checkpoint_id", None)
    base = {**config, "configurable": conf}
    snaps = list(graph.get_state_history(base))
    return _build(_lineage(snaps, head), _thread_id(config), pricing,
                  cut=_is_cut(snaps, head))


async def atimeline(graph: Any, config: Mapping[str, Any], *, pricing: Pricing | None = None
                    ) -> Timeline:
    """Async twin of :func:`timeline`."""
    conf = dict(config.get("configurable") or {})
    head = conf.pop("checkpoint_id", None)
    base = {**config, "configurable": conf}
    snaps = [s async for s in graph.aget_state_history(base)]
    return _build(_lineage(snaps, head), _thread_id(config), pricing,
                  cut=_is_cut(snaps, head))
