"""Async checkpointer benchmark: AsyncSQLAlchemySaver vs LangGraph's async savers.

    python bench/bench_async.py            # SQLite, and PostgreSQL when reachable
    python bench/bench_async.py --quick    # one repeat
    python bench/bench_async.py --instructions --only postgres   # callgrind, per step

The workload of ``bench_checkpointers.py`` (bench/_workload.py) under ``ainvoke``:
steps/s over many short threads (30 threads x 6 steps) and on one thread growing to 300
steps, each saver from its ``from_conn_string`` (relaygraph's also on an application's
own ``create_async_engine(url)``: "relaygraph engine") on a fresh database. Medians over
repeats, round-robin across the savers, each measurement after a 3-step warm-up thread
(connections opened, statements compiled) and a full garbage collection (as in
``bench_checkpointers.py``).

``--instructions`` counts instead of timing: each saver's whole process (graph included)
under valgrind's callgrind, running 40 short threads and 10 (the difference divided by the
180 steps between them), and growing the long thread to 300 steps and to 100 (divided by
200). Counts repeat from run to run where times on a shared machine
do not; ``--against CHECKOUT`` adds relaygraph's savers from another checkout, labelled
(B), for an A/B.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from langchain_core.messages import HumanMessage

sys.path.insert(0, str(Path(__file__).parent))
from _workload import build  # noqa: E402
from bench_checkpointers import (  # noqa: E402
    LONG,
    PG,
    SHORT_STEPS,
    SHORT_THREADS,
    _reachable,
    fresh_db,
    settle,
)

CHUNK = 50


@contextlib.asynccontextmanager
async def make_saver(name: str, db: dict[str, str]) -> AsyncIterator[Any]:
    if name == "relaygraph":
        from relaygraph.checkpointers import AsyncSQLAlchemySaver

        async with AsyncSQLAlchemySaver.from_conn_string(db["sa"]) as s:
            await s.asetup()
            yield s
    elif name == "relaygraph engine":
        # the application's own AsyncEngine, default options
        from sqlalchemy.ext.asyncio import create_async_engine

        from relaygraph.checkpointers import AsyncSQLAlchemySaver
        from relaygraph.checkpointers._urls import resolve_url

        engine = create_async_engine(resolve_url(db["sa"], async_=True))
        try:
            s = AsyncSQLAlchemySaver(engine)
            await s.asetup()
            yield s
        finally:
            await engine.dispose()
    elif name == "AsyncSqliteSaver":
        from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

        async with AsyncSqliteSaver.from_conn_string(db["path"]) as s:
            await s.setup()
            yield s
    elif name == "AsyncPostgresSaver":
        from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

        async with AsyncPostgresSaver.from_conn_string(db["libpq"]) as s:
            await s.setup()
            yield s
    else:
        raise ValueError(name)


async def atimed(fn: Callable[[], Awaitable[Any]]) -> float:
    t = time.perf_counter()
    await fn()
    return time.perf_counter() - t


async def warm_up(g: Any) -> None:
    """One 3-step thread before timing: connections opened, statements compiled (as the
    sync benchmark's matrix does), for every saver alike."""
    await g.ainvoke({"messages": [HumanMessage("warm", id="warm")], "count": 0, "target": 3},
                    {"configurable": {"thread_id": "warm-up"}})


async def short_once(name: str, kind: str, tmp: Path) -> float:
    with fresh_db(kind, tmp) as db:
        async with make_saver(name, db) as saver:
            g = build().compile(checkpointer=saver)
            await warm_up(g)

            async def short() -> None:
                for i in range(SHORT_THREADS):
                    await g.ainvoke(
                        {"messages": [HumanMessage(f"case {i}", id=f"in-{i}")], "count": 0,
                         "target": SHORT_STEPS},
                        {"configurable": {"thread_id": f"short-{i}"}})

            settle()
            return SHORT_THREADS * SHORT_STEPS / await atimed(short)


async def long_once(name: str, kind: str, tmp: Path) -> float:
    with fresh_db(kind, tmp) as db:
        async with make_saver(name, db) as saver:
            g = build().compile(checkpointer=saver)
            await warm_up(g)
            cfg = {"configurable": {"thread_id": "long"}, "recursion_limit": 10_000}

            async def long() -> None:
                for target in range(CHUNK, LONG + 1, CHUNK):
                    inp: dict[str, Any] = {"target": target}
                    if target == CHUNK:
                        inp.update(messages=[HumanMessage("start", id="start")], count=0)
                    await g.ainvoke(inp, cfg)

            settle()
            return LONG / await atimed(long)


async def counted_once(name: str, db: dict[str, str], threads: int, steps: int) -> None:
    """``--instructions``' worker: the warm-up, then ``threads`` short threads or, with
    ``steps``, one thread grown to ``steps`` steps as the long run grows it."""
    async with make_saver(name, db) as saver:
        g = build().compile(checkpointer=saver)
        await warm_up(g)
        for i in range(threads):
            await g.ainvoke({"messages": [HumanMessage(f"case {i}", id=f"in-{i}")],
                             "count": 0, "target": SHORT_STEPS},
                            {"configurable": {"thread_id": f"short-{i}"}})
        cfg = {"configurable": {"thread_id": "long"}, "recursion_limit": 10_000}
        for target in range(CHUNK, steps + 1, CHUNK):
            inp: dict[str, Any] = {"target": target}
            if target == CHUNK:
                inp.update(messages=[HumanMessage("start", id="start")], count=0)
            await g.ainvoke(inp, cfg)


# --instructions' processes: short threads, 40 against 10; the long thread, 300 steps
# against 100
FEW, MANY = 10, 40
SHORTER, LONGER = 100, LONG


def count_instructions(name: str, kind: str, tmp: Path, threads: int, steps: int,
                       src: str | None) -> int:
    """Instructions of one whole process (see ``counted_once``)."""
    env = dict(os.environ, PYTHONHASHSEED="0")
    if src:  # another checkout's relaygraph
        env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")])
    with fresh_db(kind, tmp) as db:
        spec = json.dumps({"name": name.removesuffix(" (B)"), "db": db, "threads": threads,
                           "steps": steps})
        proc = subprocess.run(
            ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
             sys.executable, __file__, "--worker", spec],
            capture_output=True, text=True, timeout=3600, check=False, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{name} on {kind} failed:\n{proc.stderr[-4000:]}")
    (line,) = [ln for ln in proc.stderr.splitlines() if "Collected :" in ln]
    return int(line.split(":")[-1])


def instructions(plan: list[tuple[str, str]], tmp: Path, against: str | None) -> None:
    if against is not None:
        plan = plan + [(f"{n} (B)", k) for n, k in plan if n.startswith("relaygraph")]
    src = str(Path(against) / "src") if against is not None else None
    works = [(MANY, 0), (FEW, 0), (0, LONGER), (0, SHORTER)]
    jobs = [(n, k, t, st) for n, k in plan for t, st in works]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:  # two processes at a time
        counts = dict(zip(jobs, pool.map(
            lambda j: count_instructions(j[0], j[1], tmp, j[2], j[3],
                                         src if j[0].endswith(" (B)") else None), jobs),
            strict=True))
    short_steps = (MANY - FEW) * SHORT_STEPS
    long_steps = LONGER - SHORTER
    print(f"instructions per step (whole process under callgrind): short, {MANY} short "
          f"threads against {FEW} over the {short_steps} steps between them; long, one "
          f"thread of {LONGER} steps against {SHORTER}")
    per = {(n, k): ((counts[(n, k, MANY, 0)] - counts[(n, k, FEW, 0)]) / short_steps,
                    (counts[(n, k, 0, LONGER)] - counts[(n, k, 0, SHORTER)]) / long_steps)
           for n, k in plan}
    print(f"  {'saver':<24}{'db':<10}{'short':>10}{'long':>10}")
    for (n, k), (sh, lo) in per.items():
        extra = ""
        b = per.get((f"{n} (B)", k))
        if b is not None:
            extra = f"   x{sh / b[0]:.3f} / x{lo / b[1]:.3f} of (B)"
        print(f"  {n:<24}{k:<10}{sh / 1e6:8.3f} M{lo / 1e6:8.3f} M{extra}")


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="one repeat instead of five")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--only", help="comma-separated database kinds (sqlite, postgres)")
    ap.add_argument("--instructions", action="store_true",
                    help="count instructions per step under valgrind's callgrind instead "
                         "of timing (two processes at a time; minutes each)")
    ap.add_argument("--against", metavar="CHECKOUT",
                    help="with --instructions, also count relaygraph's savers from this "
                         "checkout's src/, labelled (B)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        spec = json.loads(args.worker)
        await counted_once(spec["name"], spec["db"], spec["threads"], spec["steps"])
        return
    repeats = 1 if args.quick else args.repeats
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / "relaygraph-bench"
    tmp.mkdir(parents=True, exist_ok=True)
    kinds = set(args.only.split(",")) if args.only else {"sqlite", "postgres"}
    plan: list[tuple[str, str]] = []
    if "sqlite" in kinds:
        plan += [("relaygraph", "sqlite"), ("relaygraph engine", "sqlite"),
                 ("AsyncSqliteSaver", "sqlite")]
    if "postgres" in kinds and _reachable(PG + "/postgres"):
        plan += [("relaygraph", "postgres"), ("relaygraph engine", "postgres"),
                 ("AsyncPostgresSaver", "postgres")]
    elif "postgres" in kinds:
        print("PostgreSQL not reachable at 127.0.0.1:5432: skipped")
    if args.instructions:
        instructions(plan, tmp, args.against)
        return
    short: dict[tuple[str, str], list[float]] = {p: [] for p in plan}
    long: dict[tuple[str, str], list[float]] = {p: [] for p in plan}
    for rep in range(repeats):
        for name, kind in plan:
            print(f"repeat {rep + 1}: {name} on {kind} ...", file=sys.stderr, flush=True)
            short[(name, kind)].append(await short_once(name, kind, tmp))
            long[(name, kind)].append(await long_once(name, kind, tmp))
    hdr = f"{'saver':<22}{'db':<10}{'short st/s':>11}{'long st/s':>11}"
    print(hdr)
    print("-" * len(hdr))
    for name, kind in plan:
        print(f"{name:<22}{kind:<10}{statistics.median(short[(name, kind)]):>11.0f}"
              f"{statistics.median(long[(name, kind)]):>11.0f}   short "
              f"{[round(x) for x in short[(name, kind)]]} long "
              f"{[round(x) for x in long[(name, kind)]]}")
    print("\nratios, relaygraph / official on the same database (medians of the per-round "
          "ratios):")
    for kind, official in (("sqlite", "AsyncSqliteSaver"), ("postgres", "AsyncPostgresSaver")):
        for label in ("relaygraph", "relaygraph engine"):
            ours, theirs = (label, kind), (official, kind)
            if ours not in short or theirs not in short:
                continue
            rs = statistics.median(a / b for a, b in zip(short[ours], short[theirs],
                                                         strict=True))
            rl = statistics.median(a / b for a, b in zip(long[ours], long[theirs],
                                                         strict=True))
            print(f"  {label:<18} {kind:<9} vs {official:<19} short st/s x{rs:.2f}  "
                  f"long st/s x{rl:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
