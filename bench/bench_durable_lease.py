"""What running a graph under its thread's lease costs per run, on SQLite.

A small graph (``--steps`` steps of one node, sync saver from ``from_conn_string``: WAL,
the savers' settings) runs plain (``graph.invoke``) and leased (``leased(graph,
store).invoke``) in alternating rounds on one SQLite file. A leased run acquires the lease
(one transaction), fences every checkpoint and task write (one more read in each of their
transactions), starts and stops the heartbeat thread, and releases (one UPDATE). The
overhead per run is leased - plain for each pair of rounds (the medians of the rounds'
runs); the table shows the median and the spread over the rounds.

    python bench/bench_durable_lease.py            # 21 rounds of 20 runs, 3 steps
    python bench/bench_durable_lease.py --url postgresql://postgres@127.0.0.1/bench

Two workloads: every run on a new thread (a first lease: the row is inserted) and runs
on a thread that already holds a long history of runs (the lease row is reused).
"""

from __future__ import annotations

import argparse
import operator
import statistics
import tempfile
import time
import uuid
from typing import Annotated, Any

from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict

from relaygraph.checkpointers import SQLAlchemySaver
from relaygraph.durable import LeaseStore, leased


class S(TypedDict, total=False):
    count: int
    log: Annotated[list[str], operator.add]


def _graph(saver: Any, steps: int) -> Any:
    def step(state: S) -> S:
        n = state.get("count", 0) + 1
        return {"count": n, "log": [f"step:{n}"]}

    b = StateGraph(S)
    b.add_node("step", step)
    b.add_edge(START, "step")
    b.add_conditional_edges("step", lambda s: END if s.get("count", 0) >= steps else "step")
    return b.compile(checkpointer=saver)


def _round(run: Any, runs: int, thread: str | None) -> float:
    """Median ms per run over ``runs`` runs (each on a new thread when ``thread`` is None)."""
    times = []
    for _ in range(runs):
        cfg = {"configurable": {"thread_id": thread or uuid.uuid4().hex}}
        t0 = time.perf_counter()
        run({"count": 0}, cfg)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=21)
    ap.add_argument("--runs", type=int, default=20, help="graph runs per round")
    ap.add_argument("--steps", type=int, default=3, help="steps per run")
    ap.add_argument("--url", help="a database URL instead of a new SQLite file")
    args = ap.parse_args()
    url = args.url or f"sqlite:///{tempfile.mkdtemp()}/bench.db"
    print(f"{url.split(':')[0]}, {args.steps}-step graph, {args.rounds} alternating rounds of "
          f"{args.runs} runs (median ms per run)")
    print(f"{'workload':<22}{'plain':>9}{'leased':>9}{'overhead':>10}{'spread (p10-p90)':>20}")
    with SQLAlchemySaver.from_conn_string(url) as saver:
        saver.setup()
        store = LeaseStore.from_saver(saver)
        store.setup()
        graph = _graph(saver, args.steps)
        runner = leased(graph, store)
        for workload, thread in (("new thread per run", None),
                                 ("one thread, repeated", "hot")):
            # warm up both paths (statement caches, the thread's history)
            for _ in range(3):
                _round(graph.invoke, args.runs, thread and f"{thread}-plain")
                _round(runner.invoke, args.runs, thread and f"{thread}-leased")
            plain, lease, diffs = [], [], []
            for r in range(args.rounds):
                order = [("plain", graph.invoke), ("leased", runner.invoke)]
                if r % 2:
                    order.reverse()
                got = {}
                for name, run in order:
                    got[name] = _round(run, args.runs, thread and f"{thread}-{name}")
                plain.append(got["plain"])
                lease.append(got["leased"])
                diffs.append(got["leased"] - got["plain"])
            q = statistics.quantiles(diffs, n=10)
            print(f"{workload:<22}{statistics.median(plain):>9.2f}"
                  f"{statistics.median(lease):>9.2f}{statistics.median(diffs):>+10.2f}"
                  f"{q[0]:>+10.2f} to {q[-1]:+.2f}")


if __name__ == "__main__":
    main()
