"""``relaygraph reviews`` (pending, across threads) and ``relaygraph review THREAD ACTION``."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.console import Console

from relaygraph.cli._common import (
    CLIError,
    Leases,
    UsageError,
    check_database,
    common_options,
    non_negative_int,
    open_saver,
    print_json,
    short,
    status_of,
    workspace,
)


def register(sub: Any) -> None:
    reviews = sub.add_parser("reviews", help="pending human reviews across threads")
    common_options(reviews)
    reviews.add_argument("--limit", type=non_negative_int, default=200,
                         help="look at the newest N threads (200)")
    reviews.set_defaults(func=cmd_reviews)

    review = sub.add_parser(
        "review", help="decide a pending review: approve, edit field=value ..., or reject",
        description="Decide the review a thread waits on. Edits are field=value pairs "
        "(values are JSON when they parse, else text), validated against the contract.")
    review.add_argument("thread", metavar="THREAD")
    review.add_argument("action", choices=("approve", "edit", "reject"))
    review.add_argument("edits", nargs="*", metavar="field=value",
                        help="for edit: the fields to change")
    review.add_argument("--reason", help="why (required for reject)")
    review.add_argument("--comment", help="a note kept with the decision")
    review.add_argument("--reviewer", default="cli", help="who decides (cli)")
    review.add_argument("--interrupt", metavar="ID",
                        help="which review, when the thread waits on several")
    common_options(review)
    review.set_defaults(func=cmd_review)


def pending_reviews(saver: Any, ws: Any, limit: int | None) -> list[dict[str, Any]]:
    """Every open human-review request of every waiting thread, newest thread first."""
    from relaygraph.cli._threads import thread_rows

    out = []
    for row in thread_rows(saver, ws, limit):
        if row["status"] != "waiting":
            continue
        for w in row.get("waiting_on") or []:
            value = w.get("value")
            if not (isinstance(value, dict) and value.get("kind") == "human_review"):
                continue
            out.append({
                "thread_id": row["thread_id"], "graph_id": row["graph_id"],
                "interrupt_id": w.get("id"), "node": value.get("node") or w.get("node"),
                "subject": value.get("subject"), "value": value.get("value"),
                "actions": value.get("actions"), "policy_reason": value.get("policy_reason"),
                "why": value.get("guard_reason")
                if value.get("guard_route") in ("escalate", "halt") else None,
                "updated_at": row["updated_at"],
            })
    return out


def cmd_reviews(args: argparse.Namespace, console: Console) -> int:
    ws = workspace(args)
    check_database(ws.db, must_exist=True)
    with open_saver(ws.db, setup=False) as saver:
        items = pending_reviews(saver, ws, args.limit)
    if args.json:
        print_json(items)
        return 0
    if not items:
        console.print("no pending reviews")
        return 0
    from rich.table import Table

    t = Table(title=f"{len(items)} pending review(s)", title_justify="left")
    for col in ("thread", "graph", "node", "subject", "under review", "why", "actions"):
        t.add_column(col, overflow="fold")
    for it in items:
        t.add_row(it["thread_id"], it["graph_id"] or "-", str(it["node"]),
                  str(it["subject"]), short(_plain(it["value"]), 60),
                  short(it["why"] or it["policy_reason"] or "-", 40),
                  ", ".join(it["actions"] or []))
    console.print(t)
    console.print("decide with: relaygraph review THREAD approve|edit field=value|reject "
                  f"{ws.options}")
    return 0


def _plain(value: Any) -> Any:
    return value.model_dump(mode="json") if hasattr(value, "model_dump") else value


def parse_edits(pairs: list[str]) -> dict[str, Any]:
    """``["amount=120.5", "note=late"]`` → ``{"amount": 120.5, "note": "late"}``."""
    edits: dict[str, Any] = {}
    for pair in pairs:
        field, sep, raw = pair.partition("=")
        if not sep or not field.strip():
            raise UsageError(f"edits are field=value, got {pair!r}")
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw
        edits[field.strip()] = value
    return edits


def cmd_review(args: argparse.Namespace, console: Console) -> int:
    from relaygraph.durable import LeaseStore, ThreadBusyError, leased
    from relaygraph.nodes._review import (
        InvalidReviewDecision,
        NotWaitingForReview,
        submit_review,
    )
    from relaygraph.serve._threads import thread_config

    if args.action == "edit" and not args.edits:
        raise UsageError("edit needs the fields to change as field=value, e.g. amount=120.50")
    if args.action != "edit" and args.edits:
        raise UsageError(f"{args.action} takes no field=value edits; use edit")
    if args.action == "reject" and not args.reason:
        raise UsageError("reject needs --reason 'why'")
    decision: dict[str, Any] = {"action": args.action, "reviewer": args.reviewer}
    if args.action == "edit":
        decision["edits"] = parse_edits(args.edits)
    if args.reason:
        if args.action != "reject":
            raise UsageError("--reason goes with reject; use --comment for a note")
        decision["reason"] = args.reason
    if args.comment:
        decision["comment"] = args.comment

    ws = workspace(args)
    check_database(ws.db, must_exist=True)
    with open_saver(ws.db, setup=False) as saver:
        gid, graph = ws.graph_for_thread(saver, args.thread)
        store = LeaseStore.from_saver(saver)
        store.setup()
        config = thread_config(args.thread, gid)
        try:
            submit_review(leased(graph, store), config, decision,
                          interrupt_id=args.interrupt)
        except ThreadBusyError:
            raise CLIError(f"thread {args.thread!r} is running in another process; try again "
                           "when it pauses") from None
        except NotWaitingForReview as exc:
            raise CLIError(str(exc)) from None
        except InvalidReviewDecision as exc:
            raise CLIError(f"review refused: {exc}") from None
        except Exception:  # noqa: BLE001 - a node of the resumed run raised: status "failed"
            pass  # the decision was recorded with the run; the failure is reported below
        report = status_of(graph, args.thread, Leases(saver))
        values = graph.get_state(config).values
    if args.json:
        print_json({"thread_id": args.thread, "graph_id": gid, "decision": decision,
                    **report.as_dict()})
        return 0 if report.status != "failed" else 1
    from relaygraph.cli._threads import render_status

    console.print(f"{args.action} recorded for thread {args.thread}; the run continued")
    render_status(console, report, args.thread, ws.options, values)
    return 0 if report.status != "failed" else 1
