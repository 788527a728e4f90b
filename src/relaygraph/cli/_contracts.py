"""``relaygraph contracts check``: the threads that would fail to resume under this code."""

from __future__ import annotations

import argparse
from typing import Any

from rich.console import Console

from relaygraph.cli._common import check_database, common_options, open_saver, print_json, workspace


def register(sub: Any) -> None:
    contracts = sub.add_parser("contracts", help="stored contracts against the current code")
    inner = contracts.add_subparsers(dest="contracts_command", required=True, metavar="ACTION")
    check = inner.add_parser(
        "check", help="read every thread's latest checkpoint under the current code and list "
        "the threads that would fail to resume (exit 1 if any)")
    common_options(check)
    check.set_defaults(func=cmd_check)


def check_threads(saver: Any) -> list[dict[str, Any]]:
    """Each thread's latest checkpoint read back (its contracts upgraded) as resuming would.

    Returns one row per thread: ``thread_id``, ``ok`` and, for a failing one, ``error``.
    """
    from relaygraph.checkpointers import CorruptCheckpointError
    from relaygraph.serve._threads import thread_config

    # the saver's own listing reads thread ids and counts, not checkpoint values
    thread_ids = [th.thread_id for th in saver.list_threads()]
    rows = []
    for tid in thread_ids:
        try:
            saver.get_tuple(thread_config(tid))
        except CorruptCheckpointError as exc:
            rows.append({"thread_id": tid, "ok": False, "error": str(exc)})
        else:
            rows.append({"thread_id": tid, "ok": True, "error": None})
    return rows


def cmd_check(args: argparse.Namespace, console: Console) -> int:
    ws = workspace(args)
    check_database(ws.db, must_exist=True)
    with open_saver(ws.db, setup=False) as saver:
        ws.compile(saver)  # imports the graphs' modules: their contracts at today's versions
        rows = check_threads(saver)
    failing = [r for r in rows if not r["ok"]]
    if args.json:
        print_json(rows)
    else:
        for r in rows:
            mark = "[green]ok[/]" if r["ok"] else f"[red]fails[/]: {r['error']}"
            console.print(f"{r['thread_id']}: {mark}", soft_wrap=True)
        console.print(f"{len(rows)} thread(s), {len(failing)} would fail to resume")
    return 1 if failing else 0
