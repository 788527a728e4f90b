"""Many workers on one PostgreSQL: throughput and connections, against PostgresSaver.

    python bench/bench_workers.py [--workers 8] [--runs 5] [--threads 4] [--steps 31]
                                  [--rounds 3]

Each round starts ``--workers`` processes on a fresh database. Every process opens one
saver and runs ``--runs`` threads of the workload at once (one per Python thread), each
thread ``--steps`` steps long, ``--threads`` times over. The processes start together
and the round's rate is all their steps over the wall time from the start signal to the
last process done. Meanwhile the parent samples ``pg_stat_activity`` for the database's
connections and keeps the peak.

The savers, in alternating rounds:

- ``PostgresSaver``: one ``psycopg_pool.ConnectionPool`` per worker, sized to its
  concurrent runs (what LangGraph's docs recommend for concurrent use);
- ``relaygraph``: ``SQLAlchemySaver.from_conn_string`` per worker, with its default pool.

The table shows each saver's median steps/s and peak connections over the rounds, with
the range, and the ratio of the medians.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _workload import finish_workers, run_worker, spawn_workers  # noqa: E402

PG = "postgresql+psycopg://postgres@127.0.0.1:5432"
LIBPQ = "postgresql://postgres@127.0.0.1:5432"
SAVERS = ("PostgresSaver", "relaygraph")


def _open(saver: str, name: str, runs: int) -> tuple[Any, Any]:
    """(saver, closer) for one worker process."""
    if saver == "PostgresSaver":
        from langgraph.checkpoint.postgres import PostgresSaver
        from psycopg.rows import dict_row
        from psycopg_pool import ConnectionPool

        pool = ConnectionPool(f"{LIBPQ}/{name}", min_size=runs, max_size=runs, open=True,
                              kwargs={"autocommit": True, "prepare_threshold": 0,
                                      "row_factory": dict_row})
        return PostgresSaver(pool), pool.close
    from relaygraph.checkpointers import SQLAlchemySaver

    cm = SQLAlchemySaver.from_conn_string(f"{PG}/{name}")
    return cm.__enter__(), lambda: cm.__exit__(None, None, None)


def worker(saver_name: str, name: str, index: int, runs: int, threads: int, steps: int,
           start: Any, done: Any) -> None:
    saver, close = _open(saver_name, name, runs)
    try:
        run_worker(saver, index, runs, threads, steps, start, done)
    finally:
        close()


def one_round(saver: str, args: argparse.Namespace) -> tuple[float, int]:
    name = f"rgworkers_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(f"{PG}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        if saver == "PostgresSaver":
            from langgraph.checkpoint.postgres import PostgresSaver

            with PostgresSaver.from_conn_string(f"{LIBPQ}/{name}") as s:
                s.setup()
        else:
            from relaygraph.checkpointers import SQLAlchemySaver

            with SQLAlchemySaver.from_conn_string(f"{PG}/{name}") as s:
                s.setup()
        procs, start, done = spawn_workers(
            worker, lambda i: (saver, name, i, args.runs, args.threads, args.steps),
            args.workers)
        peak = [0]
        stop = threading.Event()

        def sample() -> None:
            q = sa.text("SELECT count(*) FROM pg_stat_activity WHERE datname = :d")
            with admin.connect() as c:
                while not stop.is_set():
                    peak[0] = max(peak[0], c.execute(q, {"d": name}).scalar_one())
                    time.sleep(0.05)

        sampler = threading.Thread(target=sample)
        sampler.start()
        time.sleep(1.0)
        # every worker warmed up (its connections open) before the clock starts
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and peak[0] < args.workers:
            time.sleep(0.1)
        time.sleep(2.0)
        t0 = time.perf_counter()
        start.set()
        wall = finish_workers(procs, done, saver) - t0
        stop.set()
        sampler.join()
        steps = args.workers * args.runs * args.threads * args.steps
        return steps / wall, peak[0] - 1  # the sampler's own connection is not counted
    finally:
        with admin.connect() as c:
            c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--runs", type=int, default=5, help="concurrent runs per worker")
    ap.add_argument("--threads", type=int, default=4, help="threads each run goes through")
    ap.add_argument("--steps", type=int, default=31)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    if min(args.workers, args.runs, args.threads, args.steps, args.rounds) < 1:
        ap.error("every count must be at least 1")
    rates: dict[str, list[float]] = {s: [] for s in SAVERS}
    peaks: dict[str, list[int]] = {s: [] for s in SAVERS}
    for r in range(args.rounds):
        order = SAVERS if r % 2 == 0 else SAVERS[::-1]
        for saver in order:
            rate, peak = one_round(saver, args)
            rates[saver].append(rate)
            peaks[saver].append(peak)
            print(f"round {r + 1} {saver:>13}: {rate:7.1f} steps/s, peak {peak} connections",
                  flush=True)
    print(f"\n{args.workers} workers x {args.runs} concurrent runs, {args.threads} threads of "
          f"{args.steps} steps per run, {args.rounds} rounds")
    print(f"{'saver':>13} | {'steps/s (median, range)':>28} | peak connections (median, range)")
    for s in SAVERS:
        print(f"{s:>13} | {statistics.median(rates[s]):9.1f} ({min(rates[s]):.1f}-"
              f"{max(rates[s]):.1f}) | {statistics.median(peaks[s]):g} "
              f"({min(peaks[s])}-{max(peaks[s])})")
    ratios = [a / b for a, b in zip(rates["relaygraph"], rates["PostgresSaver"], strict=True)]
    print(f"relaygraph / PostgresSaver: x{statistics.median(ratios):.2f} "
          f"(rounds x{min(ratios):.2f}-x{max(ratios):.2f})")


if __name__ == "__main__":
    main()
