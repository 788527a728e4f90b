"""Cost per workflow execution across the runs stored in a database.

"Know the cost per run before you scale": `cost_report` reads the ``usage`` and
``handoffs`` channels of every thread's latest checkpoint (one thread is one workflow
execution) and summarises them per graph (mean, p50, p95 and max cost per run), per agent
and model (share of cost and tokens), the handoffs' compression savings, and a projection
for N runs a day. ``relaygraph costs`` prints the same report.

Example:
    >>> report = cost_report(saver, graph="refund")          # doctest: +SKIP
    >>> report.graphs["refund"].p95, report.project(1000)    # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from html import escape
from typing import Any

from relaygraph._errors import ConfigurationError

GRAPH_ID_KEY = "graph_id"


def money(value: float | None) -> str:
    """Money for people: ``$1,234.57``, or six decimals under a cent (``$0.000041``)."""
    if value is None:
        return "-"
    if abs(value) >= 0.01 or value == 0:
        return f"${value:,.2f}"
    return f"${value:.6f}"


def _round(value: float) -> float:
    # JSON consumers get money rounded to a millionth of a cent, not float noise
    return round(value, 8)


def percentile(values: list[float], p: float) -> float:
    """The nearest-rank percentile (``p`` in [0, 100]) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass(frozen=True)
class RunCost:
    """One workflow execution (a thread): its graph, cost and tokens."""

    thread_id: str
    graph_id: str | None
    cost: float
    input_tokens: int
    output_tokens: int
    updated_at: str | None


@dataclass(frozen=True)
class GraphCost:
    """Cost per run of one graph."""

    graph_id: str
    runs: int
    total: float
    mean: float
    p50: float
    p95: float
    max: float

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"graph": self.graph_id, "runs": self.runs, "total": _round(self.total),
                "mean": _round(self.mean), "p50": _round(self.p50), "p95": _round(self.p95),
                "max": _round(self.max)}


@dataclass(frozen=True)
class AgentModelCost:
    """One (graph, agent, model): calls, tokens, cost and their share of the total."""

    graph_id: str
    agent: str
    model: str
    calls: int
    input_tokens: int
    output_tokens: int
    cost: float
    cost_share: float
    token_share: float

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"graph": self.graph_id, "agent": self.agent, "model": self.model,
                "calls": self.calls, "input_tokens": self.input_tokens,
                "output_tokens": self.output_tokens, "cost": _round(self.cost),
                "cost_share": round(self.cost_share, 4),
                "token_share": round(self.token_share, 4)}


@dataclass(frozen=True)
class CostReport:
    """Cost per workflow execution over the stored runs (see `cost_report`).

    Attributes:
        runs: every run counted, newest first.
        graphs: per graph id (``"-"`` for threads without one): cost per run.
        agents: per graph, agent and model, most expensive first.
        handoffs: handoffs that filled their contract.
        saved_tokens: tokens the next agents did not read because a handoff passed a brief
            instead of the source (source tokens minus brief tokens).
        saved_cost: ``saved_tokens`` priced at the runs' mean cost per token (None without
            any priced usage).
    """

    runs: list[RunCost]
    graphs: dict[str, GraphCost]
    agents: list[AgentModelCost]
    handoffs: int = 0
    saved_tokens: int = 0
    saved_cost: float | None = None
    filters: dict[str, Any] = field(default_factory=dict)

    @property
    def total(self) -> float:
        """Cost of every run counted."""
        return sum(r.cost for r in self.runs)

    def project(self, per_day: int) -> dict[str, dict[str, float]]:
        """What ``per_day`` runs a day would cost per graph: at the mean and at p95."""
        if per_day < 0:
            raise ValueError(f"per_day must be >= 0, got {per_day}")
        return {g: {"runs_per_day": per_day, "per_day_mean": _round(c.mean * per_day),
                    "per_day_p95": _round(c.p95 * per_day),
                    "per_30_days_mean": _round(c.mean * per_day * 30)}
                for g, c in self.graphs.items()}

    def as_dict(self, per_day: int | None = None) -> dict[str, Any]:
        """A JSON-ready dict (money rounded to 8 decimals)."""
        out: dict[str, Any] = {
            "filters": self.filters,
            "runs": len(self.runs),
            "total": _round(self.total),
            "graphs": [g.as_dict() for g in self.graphs.values()],
            "agents": [a.as_dict() for a in self.agents],
            "handoffs": {"count": self.handoffs, "saved_tokens": self.saved_tokens,
                         "saved_cost": None if self.saved_cost is None
                         else _round(self.saved_cost)},
        }
        if per_day is not None:
            out["projection"] = self.project(per_day)
        return out

    # -- rendering -------------------------------------------------------------------
    def tables(self, per_day: int | None = None) -> list[tuple[str, list[str], list[list[str]]]]:
        """``(title, headers, rows)`` for each table, as the CLI and notebooks show them."""
        out = [("cost per run", ["graph", "runs", "mean", "p50", "p95", "max", "total"],
                [[g.graph_id, str(g.runs), money(g.mean), money(g.p50), money(g.p95),
                  money(g.max), money(g.total)] for g in self.graphs.values()])]
        out.append(("per agent and model",
                    ["graph", "agent", "model", "calls", "tokens in/out", "cost",
                     "cost share", "token share"],
                    [[a.graph_id, a.agent, a.model, str(a.calls),
                      f"{a.input_tokens}/{a.output_tokens}", money(a.cost),
                      f"{a.cost_share:.0%}", f"{a.token_share:.0%}"] for a in self.agents]))
        out.append(("handoff savings", ["handoffs", "tokens not read downstream",
                                        "worth (at the mean cost per token)"],
                    [[str(self.handoffs), f"{self.saved_tokens:,}", money(self.saved_cost)]]))
        if per_day is not None:
            out.append((f"projection for {per_day:,} runs a day",
                        ["graph", "per day (mean)", "per day (p95)", "per 30 days (mean)"],
                        [[g, money(p["per_day_mean"]), money(p["per_day_p95"]),
                          money(p["per_30_days_mean"])]
                         for g, p in self.project(per_day).items()]))
        return out

    def rich(self, per_day: int | None = None) -> Any:
        """A ``rich`` renderable with every table."""
        from rich.console import Group
        from rich.table import Table

        parts = []
        for title, headers, rows in self.tables(per_day):
            t = Table(title=title, title_justify="left")
            for h in headers:
                t.add_column(h)
            for row in rows:
                t.add_row(*row)
            parts.append(t)
        return Group(*parts)

    def __rich__(self) -> Any:
        return self.rich()

    def _repr_html_(self) -> str:
        return self.html()

    def html(self, per_day: int | None = None) -> str:
        """HTML tables for notebooks (every value escaped)."""
        out = ['<div class="relaygraph-costs">']
        for title, headers, rows in self.tables(per_day):
            out.append(f"<p><b>{escape(title)}</b></p><table><thead><tr>")
            out.extend(f"<th>{escape(h)}</th>" for h in headers)
            out.append("</tr></thead><tbody>")
            for row in rows:
                out.append("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>")
            out.append("</tbody></table>")
        out.append("</div>")
        return "".join(out)


def _parse_ts(ts: Any) -> datetime | None:
    if not isinstance(ts, str):
        return None
    try:
        parsed = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed


def _usage_rows(usage: Any) -> Iterable[tuple[str, str, Mapping[str, Any]]]:
    if not isinstance(usage, Mapping):
        return
    for agent, models in usage.items():
        if isinstance(models, Mapping):
            for model, u in models.items():
                if isinstance(u, Mapping):
                    yield str(agent), str(model), u


def cost_report(checkpointer: Any, *, graph: str | Iterable[str] | None = None,
                since: datetime | None = None, limit: int | None = None) -> CostReport:
    """Cost per workflow execution over the threads a relaygraph saver holds.

    Args:
        checkpointer: a relaygraph `SQLAlchemySaver` (threads are listed in SQL).
        graph: only threads whose checkpoint metadata names this ``graph_id`` (or one of
            these).
        since: only threads checkpointed at or after this time (timezone-aware, or UTC).
        limit: only the newest ``limit`` threads.

    Returns:
        A `CostReport`; it prints as tables in a terminal (``rich``) and a notebook.

    Raises:
        ConfigurationError: ``checkpointer`` cannot list its threads (it is not a
            relaygraph saver).
    """
    from datetime import UTC

    if not callable(getattr(checkpointer, "list_threads", None)):
        raise ConfigurationError(
            f"cost_report reads the threads of a relaygraph SQLAlchemySaver, got "
            f"{type(checkpointer).__name__}; pass the saver the graph was compiled with "
            "(relaygraph.checkpointers.SQLAlchemySaver), not the graph or another "
            "checkpointer")
    graphs_wanted = None if graph is None else (
        {graph} if isinstance(graph, str) else set(graph))
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    runs: list[RunCost] = []
    per_agent: dict[tuple[str, str, str], dict[str, float]] = {}
    handoffs = saved = 0
    for info in checkpointer.list_threads(limit=limit):
        tup = checkpointer.get_tuple({"configurable": {
            "thread_id": info.thread_id, "checkpoint_ns": "",
            "checkpoint_id": info.latest_checkpoint_id}})
        if tup is None:
            continue
        gid = (tup.metadata or {}).get(GRAPH_ID_KEY)
        gid = gid if isinstance(gid, str) else None
        if graphs_wanted is not None and gid not in graphs_wanted:
            continue
        ts = tup.checkpoint.get("ts")
        when = _parse_ts(ts)
        if since is not None and (when is None or when < since):
            continue
        values = tup.checkpoint.get("channel_values") or {}
        cost = 0.0
        tin = tout = 0
        for agent, model, u in _usage_rows(values.get("usage")):
            acc = per_agent.setdefault((gid or "-", agent, model),
                                       {"calls": 0, "in": 0, "out": 0, "cost": 0.0})
            acc["calls"] += int(u.get("calls", 0))
            acc["in"] += int(u.get("input_tokens", 0))
            acc["out"] += int(u.get("output_tokens", 0))
            acc["cost"] += float(u.get("cost", 0.0))
            cost += float(u.get("cost", 0.0))
            tin += int(u.get("input_tokens", 0))
            tout += int(u.get("output_tokens", 0))
        for h in values.get("handoffs") or []:
            if isinstance(h, Mapping) and not h.get("failure"):
                handoffs += 1
                saved += max(0, int(h.get("source_tokens") or 0) - int(h.get("brief_tokens")
                                                                       or 0))
        runs.append(RunCost(info.thread_id, gid, cost, tin, tout,
                            ts if isinstance(ts, str) else None))
    graphs: dict[str, GraphCost] = {}
    by_graph: dict[str, list[float]] = {}
    for r in runs:
        by_graph.setdefault(r.graph_id or "-", []).append(r.cost)
    for gid, costs in sorted(by_graph.items()):
        graphs[gid] = GraphCost(gid, len(costs), sum(costs), sum(costs) / len(costs),
                                percentile(costs, 50), percentile(costs, 95), max(costs))
    total_cost = sum(a["cost"] for a in per_agent.values())
    total_tokens = sum(a["in"] + a["out"] for a in per_agent.values())
    agents = sorted(
        (AgentModelCost(g, agent, model, int(a["calls"]), int(a["in"]), int(a["out"]),
                        a["cost"], a["cost"] / total_cost if total_cost else 0.0,
                        (a["in"] + a["out"]) / total_tokens if total_tokens else 0.0)
         for (g, agent, model), a in per_agent.items()),
        key=lambda a: (-a.cost, a.graph_id, a.agent, a.model))
    rate = total_cost / total_tokens if total_tokens and total_cost else None
    filters = {"graph": sorted(graphs_wanted) if graphs_wanted else None,
               "since": since.isoformat() if since else None, "limit": limit}
    return CostReport(runs=runs, graphs=graphs, agents=agents, handoffs=handoffs,
                      saved_tokens=saved, saved_cost=saved * rate if rate else None,
                      filters=filters)
