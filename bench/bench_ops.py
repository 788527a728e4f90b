"""Where a saver's time goes: the benchmark workload's saver calls, replayed on one thread.

    python bench/bench_ops.py                       # SQLite: 4 savers, 5 interleaved rounds
    python bench/bench_ops.py --db postgres --rounds 3
    python bench/bench_ops.py --profile "rg url"    # cProfile of one saver's replay
    python bench/bench_ops.py --steps 31 --threads 20
    python bench/bench_ops.py --instructions --threads 10   # callgrind: instructions per step
    python bench/bench_ops.py --savers "rg url" --against ../base   # A/B: this tree's
        # relaygraph against another checkout's (its src/ first on PYTHONPATH), interleaved

A run of the workload (bench/_workload.py, durability "sync") is recorded once through
``InMemorySaver``: every ``get_tuple``, ``put`` and ``put_writes`` LangGraph makes, with
its arguments. Each saver then replays exactly those calls, in order, on one thread, in a
fresh process and on a fresh database, with nothing else running in the process: no
graph, no executor threads, no interpreter lock shared with the agents. That isolates
the saver's own cost from LangGraph's, which a steps/s figure mixes in.

Reported per saver (medians over rounds; ratios are medians of per-round ratios with
their range): the CPU time (``time.thread_time``) and wall time of each kind of call,
and the saver's total per step. CPU time is what a saver adds to a step under durability
``"async"``, where its calls run beside the graph in the same interpreter.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import cProfile
import gc
import json
import os
import pickle
import pstats
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from langchain_core.messages import HumanMessage

sys.path.insert(0, str(Path(__file__).parent))
from _workload import build  # noqa: E402
from bench_checkpointers import fresh_db, open_saver  # noqa: E402

SAVERS = {  # label -> (saver, constructor) as bench_checkpointers.open_saver takes them
    "InMemorySaver": ("memory", ""),
    "official": ("official", ""),
    "rg url": ("relaygraph", "url"),
    "rg engine": ("relaygraph", "engine"),
}
KINDS = ("get_tuple", "put", "put_writes")


def record(threads: int, steps: int) -> list[tuple[Any, ...]]:
    """The saver calls of ``threads`` threads of ``steps`` steps, in the order made."""
    from langgraph.checkpoint.memory import InMemorySaver

    calls: list[tuple[Any, ...]] = []

    def plain(config: Any) -> dict[str, Any]:
        # LangGraph's own entries (callables, the runtime) are not the saver's input
        conf = config.get("configurable", {})
        return {"configurable": {k: v for k, v in conf.items() if not k.startswith("__")
                                 and isinstance(v, str | int | float | type(None))}}

    class Recorder(InMemorySaver):
        def get_tuple(self, config: Any) -> Any:
            calls.append(("get_tuple", plain(config)))
            return super().get_tuple(config)

        def put(self, config: Any, checkpoint: Any, metadata: Any, new_versions: Any) -> Any:
            calls.append(("put", plain(config), checkpoint, metadata, dict(new_versions)))
            return super().put(config, checkpoint, metadata, new_versions)

        def put_writes(self, config: Any, writes: Any, task_id: str,
                       task_path: str = "") -> None:
            calls.append(("put_writes", plain(config), list(writes), task_id, task_path))
            super().put_writes(config, writes, task_id, task_path)

    g = build().compile(checkpointer=Recorder())
    for i in range(threads):
        g.invoke({"messages": [HumanMessage(f"case {i}", id=f"in-{i}")], "count": 0,
                  "target": steps},
                 {"configurable": {"thread_id": f"t{i}"}, "recursion_limit": 4 * steps + 10},
                 durability="sync")
    # one copy of the whole run: items shared between checkpoints (the messages a reducer
    # carries over) stay shared, as the saver saw them
    return copy.deepcopy(calls)


def in_versions_of(saver: Any, calls: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """``calls`` with every channel version replaced by one ``saver`` makes.

    Channel versions come from the saver (``get_next_version``), and relaygraph's carry
    what its deltas rely on; a recording holds ``InMemorySaver``'s. LangGraph asks for
    one new version per step (the next after the highest of the checkpoint's) and gives
    it to every channel the step updated, so each version of the recording maps to one
    of the saver's, whatever channels share it.
    """
    mapped: dict[tuple[str, str], Any] = {}  # (thread, recorded version) -> the saver's
    heads: dict[str, Any] = {}  # thread -> the newest version made for it

    def vmap(tid: str, versions: dict[str, Any]) -> dict[str, Any]:
        return {ch: mapped.get((tid, str(v)), v) for ch, v in versions.items()}

    out = []
    for kind, *args in calls:
        if kind == "put":
            config, ckpt, md, new = args
            tid = config["configurable"]["thread_id"]
            for v in sorted({str(v): v for v in new.values()}.values()):
                if (tid, str(v)) not in mapped:
                    heads[tid] = mapped[(tid, str(v))] = saver.get_next_version(
                        heads.get(tid), None)
            ckpt = {**ckpt, "channel_versions": vmap(tid, ckpt["channel_versions"]),
                    "versions_seen": {n: vmap(tid, vs)
                                      for n, vs in ckpt["versions_seen"].items()}}
            args = [config, ckpt, md, vmap(tid, new)]
        out.append((kind, *args))
    return out


def replay(saver: Any, calls: list[tuple[Any, ...]],
           profile: cProfile.Profile | None = None) -> dict[str, Any]:
    cpu = dict.fromkeys(KINDS, 0.0)
    wall = dict.fromkeys(KINDS, 0.0)
    count = dict.fromkeys(KINDS, 0)
    gc.collect()
    if profile is not None:
        profile.enable()
    for kind, *args in calls:
        fn = getattr(saver, kind)
        c, w = time.thread_time(), time.perf_counter()
        fn(*args)
        cpu[kind] += time.thread_time() - c
        wall[kind] += time.perf_counter() - w
        count[kind] += 1
    if profile is not None:
        profile.disable()
    return {"cpu": cpu, "wall": wall, "count": count}


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    with open(spec["calls"], "rb") as f:
        calls, warm = pickle.load(f)
    if "threads" in spec:  # the first N threads' calls only (--instructions)
        tids = list(dict.fromkeys(c[1]["configurable"]["thread_id"] for c in calls))
        keep = set(tids[:spec["threads"]])
        calls = [c for c in calls if c[1]["configurable"]["thread_id"] in keep]
    saver_kind, ctor = SAVERS[spec["label"].removesuffix(" (B)")]
    kind = "memory" if saver_kind == "memory" else spec["kind"]
    with open_saver(saver_kind, ctor, kind, spec["db"]) as saver:
        calls, warm = in_versions_of(saver, calls), in_versions_of(saver, warm)
        replay(saver, warm)  # statements compiled, pools filled
        prof = cProfile.Profile(time.thread_time) if spec.get("profile") else None
        out = replay(saver, calls, prof)
    if prof is not None:
        stats = pstats.Stats(prof, stream=sys.stderr)
        stats.sort_stats(spec.get("sort", "tottime")).print_stats(spec.get("top", 40))
        stats.sort_stats("cumulative").print_stats(spec.get("top", 40))
    return out


def _fresh(spec: dict[str, Any]) -> dict[str, Any]:
    env = dict(os.environ)
    if spec.get("src"):  # another checkout's relaygraph
        env["PYTHONPATH"] = os.pathsep.join([spec["src"], env.get("PYTHONPATH", "")])
    cmd = [sys.executable, __file__, "--worker", json.dumps(spec)]
    if "threads" in spec:  # instructions counted by valgrind (deterministic, unlike time)
        env["PYTHONHASHSEED"] = "0"
        cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *cmd]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600, check=False,
                          env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {spec['label']} failed:\n{proc.stderr}")
    if "threads" in spec:
        (line,) = [ln for ln in proc.stderr.splitlines() if "Collected :" in ln]
        return {"instructions": int(line.split(":")[-1])}
    if spec.get("profile"):
        sys.stderr.write(proc.stderr)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def instructions(a: argparse.Namespace, labels: list[str], src: str | None, calls: str,
                 tmp: Path, steps_total: int) -> None:
    import concurrent.futures

    def count(label: str, threads: int) -> int:
        with fresh_db(a.db, tmp) as db:
            return int(_fresh({"label": label, "kind": a.db, "db": db, "calls": calls,
                               "threads": threads,
                               "src": src if label.endswith(" (B)") else None})["instructions"])

    jobs = [(lb, n) for lb in labels for n in (a.threads, 0)]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        got = dict(zip(jobs, pool.map(lambda j: count(*j), jobs), strict=True))
    per = {lb: (got[(lb, a.threads)] - got[(lb, 0)]) / steps_total for lb in labels}
    print(f"\n{a.db}: {a.threads} threads x {a.steps} steps replayed under callgrind; "
          "the saver's instructions per step (replay minus start-up)")
    for lb in labels:
        line = f"{lb:<14}{per[lb] / 1e6:>10.3f} M"
        other = f"{lb} (B)" if a.against else "official"
        if other in per and other != lb:
            line += f"   ×{per[lb] / per[other]:.3f} of {other}"
        print(line)


def _spread(xs: list[float]) -> str:
    return f"×{statistics.median(xs):.2f} ({min(xs):.2f}–{max(xs):.2f})"


@contextlib.contextmanager
def _calls_file(threads: int, steps: int) -> Iterator[str]:
    with tempfile.NamedTemporaryFile(suffix=".pickle", delete=False) as f:
        pickle.dump((record(threads, steps), record(1, 3)), f)
    try:
        yield f.name
    finally:
        os.unlink(f.name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--db", default="sqlite", choices=("sqlite", "postgres"))
    ap.add_argument("--threads", type=int, default=20)
    ap.add_argument("--steps", type=int, default=31)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--savers", default=",".join(SAVERS),
                    help="comma-separated labels: " + ", ".join(SAVERS))
    ap.add_argument("--profile", metavar="LABEL", help="cProfile one saver's replay")
    ap.add_argument("--against", metavar="CHECKOUT",
                    help="also run relaygraph's savers from this checkout, labelled (B)")
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--instructions", action="store_true",
                    help="count each saver's instructions per step under valgrind's "
                         "callgrind instead of timing it: the replay with --threads and "
                         "with none, the difference divided by the steps (two processes "
                         "at a time; minutes each)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        print(json.dumps(worker(json.loads(a.worker))))
        return
    tmp = Path(tempfile.mkdtemp(prefix="rg-ops-"))
    steps_total = a.threads * a.steps
    with _calls_file(a.threads, a.steps) as calls:
        if a.profile:
            with fresh_db(a.db, tmp) as db:
                _fresh({"label": a.profile, "kind": a.db, "db": db, "calls": calls,
                        "profile": True, "top": a.top})
            return
        labels = a.savers.split(",")
        if a.against:
            labels += [f"{lb} (B)" for lb in labels if lb.startswith("rg ")]
        src = str(Path(a.against).resolve() / "src") if a.against else None
        if a.instructions:
            instructions(a, labels, src, calls, tmp, steps_total)
            return
        rng = random.Random(18)
        runs: dict[str, list[dict[str, Any]]] = {lb: [] for lb in labels}
        for r in range(a.rounds):
            order = labels[:]
            rng.shuffle(order)
            for label in order:
                print(f"round {r + 1}/{a.rounds}: {label}", file=sys.stderr, flush=True)
                with fresh_db(a.db, tmp) as db:
                    runs[label].append(_fresh({
                        "label": label, "kind": a.db, "db": db, "calls": calls,
                        "src": src if label.endswith(" (B)") else None}))
    print(f"\n{a.db}: {a.threads} threads x {a.steps} steps replayed on one thread, "
          f"{a.rounds} rounds; ms per call (CPU / wall), medians")
    print(f"{'saver':<14}" + "".join(f"{k:>22}" for k in KINDS)
          + f"{'ms/step CPU':>14}{'ms/step wall':>14}")
    for label in labels:
        rs = runs[label]
        cells = []
        for k in KINDS:
            n = rs[0]["count"][k]
            c = statistics.median(x["cpu"][k] for x in rs) * 1000 / n
            w = statistics.median(x["wall"][k] for x in rs) * 1000 / n
            cells.append(f"{c:.3f} / {w:.3f}".rjust(22))
        cs = statistics.median(sum(x["cpu"].values()) for x in rs) * 1000 / steps_total
        ws = statistics.median(sum(x["wall"].values()) for x in rs) * 1000 / steps_total
        print(f"{label:<14}" + "".join(cells) + f"{cs:>14.3f}{ws:>14.3f}")
    def base_of(label: str) -> str | None:
        if a.against:  # each saver against its own run from the other checkout
            return f"{label} (B)" if f"{label} (B)" in labels else None
        base = "official" if "official" in labels else labels[0]
        return base if label != base else None

    print("\nsaver time per step against " + ("the same saver from the other checkout"
                                            if a.against else "the official saver")
          + " (median of per-round ratios, range; below 1 is cheaper)")
    for label in labels:
        base = base_of(label)
        if base is None:
            continue
        for what in ("cpu", "wall"):
            xs = [sum(a_[what].values()) / sum(b_[what].values())
                  for a_, b_ in zip(runs[label], runs[base], strict=True)]
            print(f"{label:<14}{what:>5}  {_spread(xs)}")


if __name__ == "__main__":
    main()
