"""Terminal (rich) and notebook (HTML) renderings of a :class:`Timeline`."""

from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from relaygraph.observe._timeline import Timeline, TimelineStep


def _short(value: Any, width: int = 48) -> str:
    text = value if isinstance(value, str) else repr(value)
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _decisions(step: TimelineStep) -> str:
    parts = []
    for g in step.guard_decisions:
        score = g.get("score")
        parts.append(f"guard {g.get('guard')}: {'-' if score is None else f'{score:.2f}'}"
                     f" → {g.get('route')}")
    for h in step.handoffs:
        failed = [k for k, v in (h.get("verbatim") or {}).items() if not v.get("passed")]
        parts.append(f"handoff {h.get('contract')}: {h.get('source_tokens')}→"
                     f"{h.get('brief_tokens')} tok"
                     + (f", failed {failed}" if failed else "")
                     + (f", {h.get('repairs')} repairs" if h.get("repairs") else ""))
    for c in step.reconciles:
        parts.append(f"reconcile {c.get('contract')}: {c.get('candidates')} candidates → "
                     f"{c.get('resolution')}"
                     + (f" by {c.get('reviewer')}" if c.get("reviewer") else "")
                     + (f", conflicts {c.get('conflicts')}" if c.get("conflicts") else "")
                     + (f", failed: {_short(c.get('failure'), 60)}" if c.get("failure") else ""))
    for r in step.reviews:
        who = f" by {r.get('reviewer')}" if r.get("reviewer") else ""
        parts.append(f"review: {r.get('decision')}{who}")
    for v in step.interrupts:
        if isinstance(v, dict) and v.get("kind") == "human_review":
            parts.append("waiting for review" + (f" ({v.get('error')})" if v.get("error") else ""))
        else:
            parts.append(f"waiting: {_short(v, 40)}")
    if step.error:
        parts.append(f"error: {_short(step.error, 60)}")
    return "\n".join(parts)


def _duration(step: TimelineStep) -> str:
    if step.latency_ms is not None:
        return f"{step.latency_ms:.0f} ms"
    if step.duration_s is not None:
        return f"{step.duration_s * 1000:.0f} ms"
    return "-"


def _rows(tl: Timeline) -> list[list[str]]:
    rows = []
    for s in tl.steps:
        if s.node == "__start__":
            node = "input"
        else:
            node = s.node
        rows.append([
            str(s.step), node, s.status,
            ", ".join(s.received) if s.node != "__start__" else "",
            ", ".join(sorted(s.wrote)),
            _decisions(s),
            f"{s.input_tokens}/{s.output_tokens}" if s.usage else "",
            f"${s.cost:.6f}" if s.usage else "",
            _duration(s),
        ])
    return rows


def _money(value: float) -> str:
    from relaygraph.observe._costs import money

    return money(value)


def record_tables(values: Any) -> list[tuple[str, list[str], list[list[str]]]]:
    """The handoff, guard and review records in ``values`` as ``(title, headers, rows)``.

    The CLI's ``timeline`` and the notebook view show the same tables.
    """
    values = values if isinstance(values, dict) else {}
    out: list[tuple[str, list[str], list[list[str]]]] = []
    handoffs = [h for h in values.get("handoffs") or [] if isinstance(h, dict)]
    if handoffs:
        rows = []
        for h in handoffs:
            checks = ", ".join(
                f"{k} {'ok' if isinstance(v, dict) and v.get('passed') else 'FAILED'}"
                for k, v in (h.get("verbatim") or {}).items())
            rows.append([str(h.get("contract", "?")),
                         f"{h.get('source_tokens')} → {h.get('brief_tokens')}",
                         f"{float(h.get('ratio') or 0):.0%}", checks or "-",
                         str(h.get("repairs", 0)), _short(h.get("failure") or "-", 60)])
        out.append(("handoffs", ["contract", "tokens", "ratio", "verbatim checks", "repairs",
                                 "failure"], rows))
    guards = [g for g in values.get("guard_log") or [] if isinstance(g, dict)]
    if guards:
        rows = []
        for g in guards:
            score = g.get("score")
            rows.append([str(g.get("guard", "?")),
                         "-" if not isinstance(score, int | float) else f"{score:.2f}",
                         str(g.get("threshold")),
                         str(g.get("route", "?")) + (f" → {g['goto']}" if g.get("goto") else ""),
                         str(g.get("breaker_state") or "-"),
                         ", ".join(g.get("failed_checks") or []) or "-"])
        out.append(("guard decisions", ["guard", "score", "threshold", "route", "breaker",
                                        "failed checks"], rows))
    reviews = [r for r in values.get("reviews") or [] if isinstance(r, dict)]
    if reviews:
        rows = [[str(r.get("node", "?")), str(r.get("decision")), str(r.get("reviewer") or "-"),
                 _short(r.get("comment") or r.get("reason") or "-", 40),
                 _short(r.get("policy_reason") or "-", 40)] for r in reviews]
        out.append(("reviews", ["node", "decision", "reviewer", "comment", "policy"], rows))
    return out


HEADERS = ["step", "node", "status", "received", "wrote", "decisions", "tokens in/out",
           "cost", "duration"]


def rich_timeline(tl: Timeline) -> Any:
    """A ``rich`` renderable: the steps table, then cost per agent."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    steps = Table(title=f"thread {tl.thread_id} · {tl.status}", title_justify="left")
    for h in HEADERS:
        steps.add_column(h, justify="right" if h in ("step", "tokens in/out", "cost") else "left",
                         overflow="fold")
    for row in _rows(tl):
        steps.add_row(*row)
    costs = Table(title="cost per agent" + (f" (prices as of {tl.pricing_as_of})"
                                            if tl.pricing_as_of else ""), title_justify="left")
    for h in ("agent", "model", "calls", "input tok", "output tok", "cost (USD)"):
        costs.add_column(h, justify="left" if h in ("agent", "model") else "right")
    for agent, models in sorted(tl.usage.items()):
        for model, u in sorted(models.items()):
            costs.add_row(agent, model, str(u.get("calls", 0)), str(u.get("input_tokens", 0)),
                          str(u.get("output_tokens", 0)), f"{float(u.get('cost', 0.0)):.6f}")
    costs.add_row("total", "", "", str(tl.input_tokens), str(tl.output_tokens),
                  f"{tl.cost:.6f}", style="bold")
    parts: list[Any] = [steps]
    for title, headers, rows in record_tables(tl.values):
        table = Table(title=title, title_justify="left")
        for h in headers:
            table.add_column(h, overflow="fold")
        for row in rows:
            table.add_row(*row)
        parts.append(table)
    parts.append(costs)
    if tl.next:
        parts.append(Text(f"next: {', '.join(tl.next)}", style="yellow"))
    return Group(*parts)


def html_timeline(tl: Timeline) -> str:
    """An HTML table for notebooks (every value escaped)."""
    head = "".join(f"<th>{escape(h)}</th>" for h in HEADERS)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(c).replace(chr(10), '<br>')}</td>" for c in row)
        + "</tr>" for row in _rows(tl))
    cost_rows = "".join(
        f"<tr><td>{escape(agent)}</td><td>{escape(model)}</td><td>{u.get('calls', 0)}</td>"
        f"<td>{u.get('input_tokens', 0)}</td><td>{u.get('output_tokens', 0)}</td>"
        f"<td>{float(u.get('cost', 0.0)):.6f}</td></tr>"
        for agent, models in sorted(tl.usage.items()) for model, u in sorted(models.items()))
    as_of = f" (prices as of {escape(str(tl.pricing_as_of))})" if tl.pricing_as_of else ""
    records = "".join(
        f"<p>{escape(title)}</p><table><thead><tr>"
        + "".join(f"<th>{escape(h)}</th>" for h in headers) + "</tr></thead><tbody>"
        + "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>"
                  for row in rows) + "</tbody></table>"
        for title, headers, rows in record_tables(tl.values))
    return (
        f'<div class="relaygraph-timeline"><p><b>thread {escape(str(tl.thread_id))}</b> · '
        f"{escape(tl.status)} · total ${tl.cost:.6f}</p>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{records}"
        f"<p>cost per agent{as_of}</p><table><thead><tr><th>agent</th><th>model</th>"
        f"<th>calls</th><th>input tok</th><th>output tok</th><th>cost (USD)</th></tr></thead>"
        f"<tbody>{cost_rows}<tr><td><b>total</b></td><td></td><td></td>"
        f"<td>{tl.input_tokens}</td><td>{tl.output_tokens}</td><td><b>{tl.cost:.6f}</b></td>"
        f"</tr></tbody></table></div>"
    )
