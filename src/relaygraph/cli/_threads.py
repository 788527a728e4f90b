"""``relaygraph threads`` and ``relaygraph timeline``: what ran, where each thread stands."""

from __future__ import annotations

import argparse
from typing import Any

from rich.console import Console

from relaygraph.cli._common import (
    Leases,
    check_database,
    common_options,
    non_negative_int,
    open_saver,
    print_json,
    status_of,
    waiting_label,
    workspace,
)

STATUSES = ("running", "waiting", "interrupted", "finished", "failed", "unknown")


def register(sub: Any) -> None:
    threads = sub.add_parser("threads", help="list threads and their status")
    common_options(threads)
    threads.add_argument("--limit", type=non_negative_int, default=50,
                         help="newest N threads (50)")
    threads.add_argument("--status", choices=STATUSES, help="only threads with this status")
    threads.set_defaults(func=cmd_threads)

    tl = sub.add_parser("timeline", help="one thread's steps, handoffs, guards, reviews and "
                        "cost")
    tl.add_argument("thread", metavar="THREAD", help="thread id")
    common_options(tl)
    tl.set_defaults(func=cmd_timeline)


def thread_rows(saver: Any, ws: Any, limit: int | None) -> list[dict[str, Any]]:
    """Every thread with its graph and status, newest first (status from thread_status)."""
    from relaygraph.serve._threads import list_threads

    graphs = ws.compile(saver)
    leases = Leases(saver)
    rows = []
    for th in list_threads(saver, {}, limit=limit):
        gid = th.graph_id
        graph = graphs.get(gid) if gid else (next(iter(graphs.values()))
                                             if len(graphs) == 1 else None)
        row = th.as_dict()
        row.pop("interrupts", None)
        if graph is None:
            row.update(status="unknown", waiting_on=[], error=None, resumable=False,
                       note=f"graph {gid!r} not loaded" if gid else "no graph_id recorded")
        else:
            report = status_of(graph, th.thread_id, leases)
            row.update(report.as_dict())
            row["waiting"] = waiting_label(report.waiting_on)
        rows.append(row)
    return rows


def cmd_threads(args: argparse.Namespace, console: Console) -> int:
    ws = workspace(args)
    check_database(ws.db, must_exist=True)
    with open_saver(ws.db, setup=False) as saver:
        rows = thread_rows(saver, ws, args.limit)
    if args.status:
        rows = [r for r in rows if r["status"] == args.status]
    if args.json:
        print_json(rows)
        return 0
    from rich.table import Table

    if not rows:
        console.print("no threads" + (f" with status {args.status}" if args.status else "")
                      + " in this database")
        return 0
    t = Table(title=f"{len(rows)} thread(s)", title_justify="left")
    for col in ("thread", "graph", "status", "step", "checkpoints", "updated", "next / why"):
        t.add_column(col, overflow="fold")
    style = {"running": "cyan", "waiting": "yellow", "interrupted": "magenta",
             "finished": "green", "failed": "red"}
    for r in rows:
        why = r.get("waiting") or r.get("error") or r.get("note") or ", ".join(r["next"]) or "-"
        status = r["status"]
        t.add_row(r["thread_id"], r["graph_id"] or "-",
                  f"[{style.get(status, 'white')}]{status}[/]", str(r["step"]),
                  str(r["checkpoints"]), r["updated_at"] or "-", why)
    console.print(t)
    return 0


def cmd_timeline(args: argparse.Namespace, console: Console) -> int:
    from relaygraph.observe import timeline
    from relaygraph.serve._threads import thread_config

    ws = workspace(args)
    check_database(ws.db, must_exist=True)
    with open_saver(ws.db, setup=False) as saver:
        gid, graph = ws.graph_for_thread(saver, args.thread)
        config = thread_config(args.thread)
        tl = timeline(graph, config)
        report = status_of(graph, args.thread, Leases(saver))
    if args.json:
        data = tl.to_dict()
        data["graph_id"] = gid
        data.update(report.as_dict())
        data.pop("steps", None)
        data["steps"] = [{k: v for k, v in s.items() if k not in ("received_values",)}
                         for s in tl.to_dict()["steps"]]
        data["handoffs"] = tl.values.get("handoffs") or []
        data["guard_log"] = tl.values.get("guard_log") or []
        data["reviews"] = tl.values.get("reviews") or []
        print_json(data)
        return 0
    console.print(f"thread [bold]{args.thread}[/bold] · graph [bold]{gid}[/bold] "
                  "(rebuilt from the checkpoints in the database)")
    console.print(tl)
    render_status(console, report, args.thread, ws.options, tl.values)
    render_result(console, report, tl.values)
    return 0


def _last_decision(values: Any) -> str | None:
    reviews = (values or {}).get("reviews") or [] if isinstance(values, dict) else []
    return str(reviews[-1].get("decision")) if reviews else None


def render_result(console: Console, report: Any, values: Any) -> None:
    """The run's ``resolution``, once it finished without being rejected."""
    result = (values or {}).get("resolution") if isinstance(values, dict) else None
    if result is None or report.status != "finished" or _last_decision(values) == "reject":
        return  # a rejected proposal is not the result
    data = result.model_dump(mode="json") if hasattr(result, "model_dump") else result
    console.print(f"result: {data}")


def render_status(console: Console, report: Any, thread_id: str, options: str,
                  values: Any = None) -> None:
    """One line: the status, and what to do about it.

    ``options`` are the ``--db``/``--config``/``--graph`` options the printed commands need.
    """
    s = report.status
    if s == "waiting":
        console.print(f"[yellow]status: waiting on {waiting_label(report.waiting_on)}[/yellow]"
                      f"\ndecide with: relaygraph review {thread_id} approve {options}")
    elif s == "interrupted":
        console.print(f"[magenta]status: interrupted before {', '.join(report.next)}[/magenta]"
                      f"\ncontinue with: relaygraph resume {thread_id} {options}")
    elif s == "failed":
        console.print(f"[red]status: failed: {report.error}[/red]"
                      f"\nretry with: relaygraph resume {thread_id} {options}")
    elif s == "running":
        console.print("[cyan]status: running (a live lease holds the thread)[/cyan]")
    else:
        last = _last_decision(values)
        outcome = {"approve": "approved", "edit": "approved with edits",
                   "reject": "rejected", "skipped": "approved by policy"}.get(str(last), "")
        console.print(f"[green]status: finished{', ' + outcome if outcome else ''}[/green]")
