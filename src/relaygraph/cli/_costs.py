"""``relaygraph costs``: cost per workflow execution across the stored runs."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

from rich.console import Console

from relaygraph.cli._common import (
    check_database,
    common_options,
    non_negative_int,
    open_saver,
    print_json,
    workspace,
)


def _date(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a date or time like 2026-01-31 or 2026-01-31T12:00, got {text!r}"
        ) from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def register(sub: Any) -> None:
    costs = sub.add_parser(
        "costs", help="cost per workflow execution: mean/p50/p95 per graph, per agent and "
        "model, handoff savings, a projection",
        description="Understand the cost per workflow execution before scaling: reads the "
        "usage recorded in every thread's latest checkpoint (one thread = one run).")
    common_options(costs, graphs=False)
    costs.add_argument("--graph", action="append", default=[], dest="graph_filter",
                       metavar="NAME[=module:attr]",
                       help="only runs of this graph id (repeatable); with =module:attr the "
                       "graph is also loaded, so that its state classes are read back")
    costs.add_argument("--since", type=_date, metavar="DATE",
                       help="only runs checkpointed since DATE (ISO 8601, UTC by default)")
    costs.add_argument("--per-day", type=non_negative_int, metavar="N",
                       help="project the cost of N runs a day")
    costs.add_argument("--limit", type=non_negative_int, help="only the newest N runs")
    costs.set_defaults(func=cmd_costs)


def cmd_costs(args: argparse.Namespace, console: Console) -> int:
    from relaygraph.observe import cost_report

    names = [g.partition("=")[0].strip() for g in args.graph_filter]
    args.graph_specs = [g for g in args.graph_filter if "=" in g]
    ws = workspace(args)
    check_database(ws.db, must_exist=True)
    with open_saver(ws.db, setup=False) as saver:
        ws.compile(saver)  # lets the serializer rebuild the graphs' state classes
        report = cost_report(saver, graph=names or None, since=args.since, limit=args.limit)
    if args.json:
        print_json(report.as_dict(per_day=args.per_day))
        return 0
    if not report.runs:
        console.print("no runs match" + (f" graph {', '.join(names)}" if names else "")
                      + (f" since {args.since:%Y-%m-%d %H:%M}" if args.since else ""))
        return 0
    console.print(f"{len(report.runs)} run(s) (one thread = one workflow execution)")
    console.print(report.rich(per_day=args.per_day))
    return 0
