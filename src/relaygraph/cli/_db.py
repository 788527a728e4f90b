"""``relaygraph db upgrade|prune|stats`` (and ``setup``, the same as ``db upgrade``)."""

from __future__ import annotations

import argparse
from typing import Any

import sqlalchemy as sa
from rich.console import Console

from relaygraph.cli._common import (
    UsageError,
    check_database,
    common_options,
    non_negative_int,
    open_saver,
    print_json,
    redact,
    workspace,
)


def register(sub: Any) -> None:
    db = sub.add_parser("db", help="create/migrate relaygraph's tables, prune, statistics")
    dsub = db.add_subparsers(dest="db_command", required=True, metavar="upgrade|prune|stats")
    up = dsub.add_parser("upgrade", help="create or migrate every relaygraph table (idempotent)")
    common_options(up, graphs=False)
    up.set_defaults(func=cmd_upgrade)
    prune = dsub.add_parser("prune", help="drop old checkpoints of finished threads")
    common_options(prune)
    prune.add_argument("--keep-last", type=non_negative_int, default=1,
                       help="checkpoints to keep per thread (1); 0 deletes the threads")
    prune.add_argument("--thread", action="append", default=[], dest="threads",
                       metavar="ID", help="only this thread (repeatable; default: all)")
    prune.set_defaults(func=cmd_prune)
    stats = dsub.add_parser("stats", help="threads, checkpoints and table sizes")
    common_options(stats, graphs=False)
    stats.set_defaults(func=cmd_stats)

    setup = sub.add_parser("setup", help="the same as: db upgrade")
    common_options(setup, graphs=False)
    setup.set_defaults(func=cmd_upgrade)


def cmd_upgrade(args: argparse.Namespace, console: Console) -> int:
    from relaygraph.durable import EffectLedger, LeaseStore
    from relaygraph.guards import SQLBreakerStore
    from relaygraph.nodes import SQLAutonomyStore

    ws = workspace(args)
    parsed = check_database(ws.db, must_exist=False)
    with open_saver(ws.db, setup=True) as saver:
        # the same database also holds breaker state, autonomy records, leases and effects
        engine = saver.engine
        SQLBreakerStore(engine).setup()
        SQLAutonomyStore(engine).setup()
        LeaseStore.from_saver(saver).setup()
        EffectLedger(engine).setup()
        tables = sorted(t for t in sa.inspect(engine).get_table_names()
                        if t.startswith("relaygraph_"))
    if args.json:
        print_json({"database": redact(parsed), "tables": tables})
    else:
        console.print(f"relaygraph tables are ready in {redact(parsed)}: {', '.join(tables)}")
    return 0


def cmd_prune(args: argparse.Namespace, console: Console) -> int:
    from relaygraph.cli._threads import thread_rows

    ws = workspace(args)
    check_database(ws.db, must_exist=True)
    with open_saver(ws.db, setup=False) as saver:
        if args.threads:
            targets = list(args.threads)
            known = {t.thread_id for t in saver.list_threads()}
            missing = [t for t in targets if t not in known]
            if missing:
                raise UsageError(f"no such thread(s): {', '.join(missing)}")
            skipped: list[str] = []
        else:
            # only threads with nothing left to do: pruning a paused thread's history is
            # harmless, but deleting it (--keep-last 0) would lose the run
            rows = thread_rows(saver, ws, None)
            targets = [r["thread_id"] for r in rows if r["status"] == "finished"]
            skipped = [r["thread_id"] for r in rows if r["status"] != "finished"]
        before = sum(t.checkpoints for t in saver.list_threads())
        if targets:
            if args.keep_last == 0:
                saver.prune(targets, strategy="delete")
            else:
                saver.prune(targets, strategy="keep_latest", keep_last=args.keep_last)
        after = sum(t.checkpoints for t in saver.list_threads())
    result = {"threads": len(targets), "skipped_unfinished": len(skipped),
              "checkpoints_before": before, "checkpoints_after": after}
    if args.json:
        print_json(result)
    else:
        console.print(f"pruned {len(targets)} thread(s) to {args.keep_last} checkpoint(s) each"
                      f"; checkpoints {before} → {after}"
                      + (f"; {len(skipped)} unfinished thread(s) left alone" if skipped else ""))
    return 0


def cmd_stats(args: argparse.Namespace, console: Console) -> int:
    ws = workspace(args, need_db=True)
    parsed = check_database(ws.db, must_exist=True)
    with open_saver(ws.db, setup=False) as saver:
        threads = saver.list_threads()
        engine = saver.engine
        tables = {}
        with engine.connect() as conn:
            for name in sorted(sa.inspect(engine).get_table_names()):
                if name.startswith("relaygraph_") or name == "crm_refunds":
                    table = sa.Table(name, sa.MetaData())
                    tables[name] = conn.execute(
                        sa.select(sa.func.count()).select_from(table)).scalar_one()
    data = {"database": redact(parsed), "threads": len(threads),
            "checkpoints": sum(t.checkpoints for t in threads),
            "max_checkpoints_per_thread": max((t.checkpoints for t in threads), default=0),
            "rows": tables}
    if args.json:
        print_json(data)
        return 0
    from rich.table import Table

    console.print(f"{redact(parsed)}: {data['threads']} thread(s), {data['checkpoints']} "
                  f"checkpoint(s), at most {data['max_checkpoints_per_thread']} per thread")
    t = Table(title="rows per table", title_justify="left")
    t.add_column("table")
    t.add_column("rows", justify="right")
    for name, n in tables.items():
        t.add_row(name, f"{n:,}")
    console.print(t)
    return 0
