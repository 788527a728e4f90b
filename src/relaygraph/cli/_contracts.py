"""``relaygraph contracts check`` and ``diff``: stored contracts against the current code."""

from __future__ import annotations

import argparse
from typing import Any

from rich.console import Console

from relaygraph.cli._common import (
    check_database,
    common_options,
    graph_not_loaded,
    open_saver,
    print_json,
    workspace,
)


def register(sub: Any) -> None:
    contracts = sub.add_parser("contracts", help="stored contracts against the current code")
    inner = contracts.add_subparsers(dest="contracts_command", required=True, metavar="ACTION")
    check = inner.add_parser(
        "check", help="read every thread's latest checkpoint under the current code and list "
        "the threads that would fail to resume (exit 1 if any)")
    common_options(check)
    check.set_defaults(func=cmd_check)
    d = inner.add_parser("diff", help="compare two versions of a contract (module:attr each) "
                         "and say whether threads in flight survive the change (exit 1 if not)")
    d.add_argument("old", metavar="OLD", help="the deployed contract, module:attr")
    d.add_argument("new", metavar="NEW", help="the new contract, module:attr")
    d.add_argument("--json", action="store_true", help="print JSON")
    d.set_defaults(func=cmd_diff)


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
            rows.append({"thread_id": tid, "ok": False,
                         "error": graph_not_loaded(exc) or str(exc)})
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


def _load(spec: str) -> Any:
    import importlib

    from relaygraph.cli._common import CLIError, UsageError

    module, sep, attr = spec.partition(":")
    if not sep or not module or not attr:
        raise UsageError(f"a contract is given as module:attr (e.g. myapp.cases:RefundCase), "
                         f"got {spec!r}")
    try:
        obj = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise CLIError(f"cannot load {spec!r}: {exc}") from exc
    if not isinstance(obj, type) or not hasattr(obj, "model_fields"):
        raise UsageError(f"{spec!r} is not a contract class")
    return obj


def cmd_diff(args: argparse.Namespace, console: Console) -> int:
    from relaygraph.nodes._versions import diff, version_of

    old, new = _load(args.old), _load(args.new)
    changes = diff(old, new)
    breaking = [c for c in changes if c["breaking"]]
    if args.json:
        print_json({"old_version": version_of(old), "new_version": version_of(new),
                    "compatible": not breaking, "changes": changes})
    else:
        for c in changes:
            mark = "[red]breaks threads in flight[/]" if c["breaking"] else "compatible"
            console.print(f"{c['field']}: {c['change']} ({mark})", soft_wrap=True)
        console.print(f"version {version_of(old)} -> {version_of(new)}: "
                      + ("compatible" if not breaking else
                         f"{len(breaking)} change(s) break stored instances; add an upgrade"))
    return 1 if breaking else 0
