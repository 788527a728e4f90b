"""What a saver's calls into C cost inside a graph: model savers against the real ones.

    python bench/bench_gil.py                  # 150 threads x 6 steps, 5 rounds
    python bench/bench_gil.py --steps 31 --threads 30 --rounds 3
    python bench/bench_gil.py --cpus 0         # every process on one core
    python bench/bench_gil.py --only "SqliteSaver sync=NORMAL,relaygraph url"

Under durability "async" LangGraph runs a saver's ``put`` and ``put_writes`` on its
executor threads while the graph goes on. A call into C that lets go of the interpreter
lock (every sqlite3 statement, every zstd compression) lets a thread waiting for the
lock take it; the saver's thread then waits to get it back. This runs the benchmark's
workload (bench/_workload.py) in fresh processes, interleaved rounds, with:

  InMemorySaver, SqliteSaver, relaygraph's saver from a URL (SQLite file)
  SqliteSaver at ``synchronous=NORMAL``: the official saver's statements, committed as
      relaygraph commits (WAL, no sync at each commit): what a sqlite3 saver doing the
      least work per step, with relaygraph's durability, runs at
  model savers: InMemorySaver that first spends ``--put-us`` / ``--writes-us`` of CPU in
      Python per put / put_writes (by default what relaygraph's calls take, replayed
      alone: ``bench_ops.py``), then lets go of the lock N times for about H
      microseconds each (hashing a buffer, which releases the lock; sized at start-up)

and reports steps/s (median, and the ratio to SqliteSaver per round), voluntary
context switches and the process's CPU per step (``getrusage``), and the saver's CPU per
step inside the graph (``time.thread_time`` around its ``put`` and ``put_writes``). The
models separate what the saver's own CPU costs from what its hand-overs of the lock
cost (docs/performance.md, "Two cores and one interpreter lock").
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _workload import build  # noqa: E402
from bench_checkpointers import _cpus, fresh_db, open_saver  # noqa: E402

#: (label, kind, releases per call, microseconds per release)
MODELS = (
    ("model: CPU only", "model", 0, 0.0),
    ("model: +1 release of 4 us", "model", 1, 4.0),
    ("model: +4 releases of 1 us", "model", 4, 1.0),
    ("model: +4 releases of 4 us", "model", 4, 4.0),
    ("model: +4 releases of 10 us", "model", 4, 10.0),
)
REAL = (("InMemorySaver", "memory", 0, 0.0), ("SqliteSaver", "official", 0, 0.0),
        ("SqliteSaver sync=NORMAL", "official-normal", 0, 0.0),
        ("relaygraph url", "relaygraph", 0, 0.0))


def _burn(us: float) -> None:
    end = time.thread_time() + us / 1e6
    while time.thread_time() < end:
        pass


def _hash_size(us: float) -> int:
    """Bytes that sha256 takes ``us`` microseconds over (at least 2048: hashlib lets go
    of the lock only from that size)."""
    buf = b"x" * 65536
    hashlib.sha256(buf)
    t = time.perf_counter()
    for _ in range(200):
        hashlib.sha256(buf)
    per_byte = (time.perf_counter() - t) / (200 * len(buf))
    return max(2048, int(us / 1e6 / per_byte))


def _model(put_us: float, writes_us: float, releases: int, hold_us: float) -> Any:
    from langgraph.checkpoint.memory import InMemorySaver

    buf = b"x" * _hash_size(hold_us) if releases else b""

    def calls_into_c() -> None:
        for _ in range(releases):
            hashlib.sha256(buf)

    class ModelSaver(InMemorySaver):
        def put(self, *args: Any, **kwargs: Any) -> Any:
            _burn(put_us)
            calls_into_c()
            return super().put(*args, **kwargs)

        def put_writes(self, *args: Any, **kwargs: Any) -> None:
            _burn(writes_us)
            calls_into_c()
            super().put_writes(*args, **kwargs)

    return ModelSaver()


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    if spec.get("cpus"):
        os.sched_setaffinity(0, spec["cpus"])  # before LangGraph starts its threads
    from langchain_core.messages import HumanMessage

    kind = spec["kind"]
    with contextlib.ExitStack() as stack:
        if kind == "model":
            saver = _model(spec["put_us"], spec["writes_us"], spec["releases"],
                           spec["hold_us"])
        else:  # as bench_checkpointers.py opens them (and sets them up)
            db = stack.enter_context(fresh_db("sqlite", Path(stack.enter_context(
                tempfile.TemporaryDirectory()))))
            saver = stack.enter_context(open_saver(
                kind.removesuffix("-normal"), "url", "sqlite", db))
            if kind == "official-normal":  # relaygraph's commit: WAL, no sync per commit
                saver.conn.execute("PRAGMA synchronous=NORMAL")
        spent = [0.0]  # the saver's CPU inside the graph, on the threads it runs on

        def timed(fn: Any) -> Any:
            def call(*args: Any, **kwargs: Any) -> Any:
                t = time.thread_time()
                try:
                    return fn(*args, **kwargs)
                finally:
                    spent[0] += time.thread_time() - t
            return call

        saver.put, saver.put_writes = timed(saver.put), timed(saver.put_writes)
        g = build().compile(checkpointer=saver)
        steps = spec["steps"]

        def thread(tid: str) -> None:
            g.invoke({"messages": [HumanMessage(f"case {tid}", id=f"in-{tid}")],
                      "count": 0, "target": steps},
                     {"configurable": {"thread_id": tid},
                      "recursion_limit": 4 * steps + 10}, durability="async")

        thread("warm-up")
        spent[0] = 0.0
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        for i in range(spec["threads"]):
            thread(f"t{i}")
        t1, r1 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    n = spec["threads"] * steps
    return {"steps_s": n / (t1 - t0), "vcsw": (r1.ru_nvcsw - r0.ru_nvcsw) / n,
            "cpu_ms": 1000 * (r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime) / n,
            "saver_ms": 1000 * spent[0] / n}


def _fresh(spec: dict[str, Any]) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)],
                          capture_output=True, text=True, timeout=1800, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {spec['label']} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--threads", type=int, default=150)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--put-us", type=float, default=116.0,
                    help="the model's CPU per put, in microseconds")
    ap.add_argument("--writes-us", type=float, default=54.0,
                    help="the model's CPU per put_writes, in microseconds")
    ap.add_argument("--cpus", help="comma-separated CPU ids every process runs on")
    ap.add_argument("--only", help="comma-separated labels to run (SqliteSaver always runs)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        print(json.dumps(worker(json.loads(a.worker))))
        return
    if a.steps < 1 or a.threads < 1 or a.rounds < 1:
        ap.error("--steps, --threads and --rounds take positive numbers")
    cpus = _cpus(ap, a.cpus)
    configs = REAL + MODELS
    if a.only:
        wanted = {w.strip() for w in a.only.split(",")} | {"SqliteSaver"}
        unknown = wanted - {c[0] for c in configs}
        if unknown:
            ap.error(f"--only: unknown labels {sorted(unknown)}; "
                     f"known: {[c[0] for c in configs]}")
        configs = tuple(c for c in configs if c[0] in wanted)
    got: dict[str, list[dict[str, Any]]] = {c[0]: [] for c in configs}
    for r in range(a.rounds):
        order = configs[r % len(configs):] + configs[:r % len(configs)]
        for label, kind, releases, hold in order:
            print(f"round {r + 1}/{a.rounds}: {label} ...", file=sys.stderr, flush=True)
            got[label].append(_fresh({
                "label": label, "kind": kind, "releases": releases, "hold_us": hold,
                "put_us": a.put_us, "writes_us": a.writes_us, "steps": a.steps,
                "threads": a.threads, "cpus": cpus}))
    base = got["SqliteSaver"]
    print(f"\n{a.threads} threads x {a.steps} steps, durability 'async', {a.rounds} rounds"
          f" in fresh processes; models: {a.put_us:g} us of CPU per put, {a.writes_us:g} "
          "per put_writes" + (f"; on CPUs {a.cpus}" if a.cpus else ""))
    print(f"{'saver':<32}{'steps/s':>9}{'vs SqliteSaver':>26}{'switches/step':>15}"
          f"{'CPU ms/step':>13}{'saver CPU':>11}")
    for label, *_ in configs:
        rs = got[label]
        ratios = [x["steps_s"] / b["steps_s"] for x, b in zip(rs, base, strict=True)]
        spread = (f"×{statistics.median(ratios):.2f} ({min(ratios):.2f}–{max(ratios):.2f})"
                  if label != "SqliteSaver" else "")
        print(f"{label:<32}{statistics.median(x['steps_s'] for x in rs):>9.0f}{spread:>26}"
              f"{statistics.median(x['vcsw'] for x in rs):>15.1f}"
              f"{statistics.median(x['cpu_ms'] for x in rs):>13.3f}"
              f"{statistics.median(x['saver_ms'] for x in rs):>11.3f}")


if __name__ == "__main__":
    main()
