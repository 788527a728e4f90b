"""Several worker processes on one SQLite file: steps/s, relaygraph against SqliteSaver.

    python bench/bench_sqlite_workers.py [--workers 4] [--runs 3] [--threads 2]
                                         [--steps 31] [--rounds 5]
    python bench/bench_sqlite_workers.py --against ../base   # A/B: this tree's relaygraph
        # against another checkout's (its src/ first on PYTHONPATH), no SqliteSaver

Each round starts ``--workers`` processes on a fresh database file. Every process opens
one saver on the file and runs ``--runs`` threads of the workload at once (one per Python
thread), each ``--steps`` steps long, ``--threads`` times over. The processes start
together; the round's rate is all their steps over the wall time from the start signal
to the last process done. SQLite has one writer at a time across the processes, so what
each holds its write lock for decides how long the others wait (and sleep: a writer that
finds the file locked retries with SQLite's backoff).

The savers run in alternating rounds; the table shows each one's median steps/s with the
range, and the median of the per-round ratios.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _workload import finish_workers, run_worker, spawn_workers  # noqa: E402
from bench_checkpointers import open_saver  # noqa: E402


def worker(saver: str, path: str, index: int, runs: int, threads: int, steps: int,
           start: Any, done: Any) -> None:
    if saver == "SqliteSaver":
        from langgraph.checkpoint.sqlite import SqliteSaver

        cm: Any = SqliteSaver.from_conn_string(path)
    else:
        from relaygraph.checkpointers import SQLAlchemySaver

        cm = SQLAlchemySaver.from_conn_string(f"sqlite:///{path}")
    with cm as s:
        run_worker(s, index, runs, threads, steps, start, done)


def one_round(saver: str, args: argparse.Namespace) -> float:
    """Steps/s of one round, in this process's children (spawned: a fresh interpreter)."""
    import time

    with tempfile.TemporaryDirectory(prefix="rg-sqlite-workers-") as d:
        path = os.path.join(d, "workers.db")
        # the tables made (and the file put in WAL mode) once, before the workers start
        with open_saver("official" if saver == "SqliteSaver" else "relaygraph", "url",
                        "sqlite", {"sa": f"sqlite:///{path}", "path": path}):
            pass
        procs, start, done = spawn_workers(
            worker, lambda i: (saver, path, i, args.runs, args.threads, args.steps),
            args.workers)
        time.sleep(4.0)  # every worker started and warmed up before the clock starts
        t0 = time.perf_counter()
        start.set()
        wall = finish_workers(procs, done, saver) - t0
    return args.workers * args.runs * args.threads * args.steps / wall


def _in_process(label: str, args: argparse.Namespace) -> float:
    """One round in a fresh process; ``(B)`` runs relaygraph from ``--against``."""
    env = dict(os.environ)
    saver = "SqliteSaver" if label == "SqliteSaver" else "relaygraph"
    if label.endswith("(B)"):
        env["PYTHONPATH"] = os.pathsep.join(
            [str(Path(args.against).resolve() / "src"), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, __file__, "--one", saver, "--workers", str(args.workers),
           "--runs", str(args.runs), "--threads", str(args.threads), "--steps",
           str(args.steps)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False,
                         timeout=3600)
    if out.returncode != 0:
        raise SystemExit(f"{label} failed:\n{out.stderr}")
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--runs", type=int, default=3, help="concurrent runs per worker")
    ap.add_argument("--threads", type=int, default=2, help="threads each run goes through")
    ap.add_argument("--steps", type=int, default=31)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--against", metavar="CHECKOUT",
                    help="run relaygraph from this checkout's src/ as (B) instead of "
                         "SqliteSaver, and report this tree's steps/s against it")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(one_round(args.one, args))
        return
    labels = ["relaygraph", "relaygraph (B)" if args.against else "SqliteSaver"]
    rates: dict[str, list[float]] = {lb: [] for lb in labels}
    for r in range(args.rounds):
        for lb in labels if r % 2 == 0 else labels[::-1]:
            rates[lb].append(_in_process(lb, args))
            print(f"round {r + 1} {lb:>16}: {rates[lb][-1]:8.1f} steps/s", file=sys.stderr,
                  flush=True)
    print(f"\n{args.workers} workers x {args.runs} concurrent runs, {args.threads} threads "
          f"of {args.steps} steps per run, one SQLite file, {args.rounds} rounds")
    for lb in labels:
        xs = rates[lb]
        print(f"{lb:>16} | {statistics.median(xs):8.1f} steps/s ({min(xs):.1f}-{max(xs):.1f})")
    ratios = [a / b for a, b in zip(rates[labels[0]], rates[labels[1]], strict=True)]
    print(f"relaygraph / {labels[1]}: x{statistics.median(ratios):.2f} "
          f"(rounds x{min(ratios):.2f}-x{max(ratios):.2f})")


if __name__ == "__main__":
    main()
