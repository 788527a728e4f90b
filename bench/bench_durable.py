"""What the effect ledger costs per effect call, on SQLite.

A one-node graph makes ``--calls`` calls per run; the same graph runs with the calls
wrapped in ``effect`` and with the bare function, in alternating rounds on one SQLite
file (WAL, the savers' settings). The overhead per call is (with - without) / calls for
each pair of rounds; the table shows the median and the spread over the rounds.

    python bench/bench_durable.py            # 15 rounds of 10 runs x 20 calls

Two kinds of effect: a plain one (the function acts elsewhere: the ledger records a start
and a result) and a transactional one (the function writes one row in the ledger's
transaction; the bare version writes the same row in a transaction of its own).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from typing import Any, TypedDict

import sqlalchemy as sa
from langgraph.graph import END, START, StateGraph

from relaygraph.checkpointers import SQLAlchemySaver
from relaygraph.durable import EffectLedger, effect


class S(TypedDict, total=False):
    out: Any


def _graph(saver: Any, node: Any) -> Any:
    b = StateGraph(S)
    b.add_node("n", node)
    b.add_edge(START, "n")
    b.add_edge("n", END)
    return b.compile(checkpointer=saver)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--runs", type=int, default=10, help="graph runs per round")
    ap.add_argument("--calls", type=int, default=20, help="effect calls per run")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp()
    rows_md = sa.MetaData()
    sink = sa.Table("bench_sink", rows_md, sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("k", sa.String(64)), sa.Column("v", sa.Integer))
    with SQLAlchemySaver.from_conn_string(f"sqlite:///{tmp}/bench.db") as saver:
        saver.setup()
        ledger = EffectLedger.from_saver(saver)
        ledger.setup()
        rows_md.create_all(saver.engine)
        engine = saver.engine

        def act(i: int, *, key: str) -> int:
            return i

        def write(i: int, *, key: str, conn: Any) -> int:
            conn.execute(sink.insert().values(k=key, v=i))
            return i

        def write_alone(i: int, *, key: str) -> int:
            with engine.begin() as conn:
                return write(i, key=key, conn=conn)

        eff = effect(act, ledger=ledger, name="act")
        teff = effect(write, ledger=ledger, name="write", transactional=True)
        n = args.calls
        graphs = {
            ("plain", "with"): _graph(saver, lambda s: {"out": [eff(i) for i in range(n)]}),
            ("plain", "without"): _graph(saver, lambda s: {
                "out": [act(i, key="k") for i in range(n)]}),
            ("transactional", "with"): _graph(saver, lambda s: {
                "out": [teff(i) for i in range(n)]}),
            ("transactional", "without"): _graph(saver, lambda s: {
                "out": [write_alone(i, key="k") for i in range(n)]}),
        }

        def timed(graph: Any) -> float:
            start = time.perf_counter()
            for _ in range(args.runs):
                graph.invoke({}, {"configurable": {"thread_id": uuid.uuid4().hex}})
            return time.perf_counter() - start

        for g in graphs.values():  # warm up: statement caches, first connections
            timed(g)
        per_call: dict[str, list[float]] = {"plain": [], "transactional": []}
        for r in range(args.rounds):
            for kind in per_call:
                order = ("with", "without") if r % 2 == 0 else ("without", "with")
                t = {side: timed(graphs[(kind, side)]) for side in order}
                per_call[kind].append((t["with"] - t["without"]) / (args.runs * n))
    print(f"effect ledger overhead per call on SQLite ({args.rounds} rounds of "
          f"{args.runs} runs x {args.calls} calls, alternating with and without)")
    print(f"{'effect':<15}{'median':>10}{'min':>10}{'max':>10}   target")
    for kind, xs in per_call.items():
        ms = [x * 1000 for x in xs]
        print(f"{kind:<15}{statistics.median(ms):>8.3f}ms{min(ms):>8.3f}ms{max(ms):>8.3f}ms"
              f"   <= 1 ms: {'yes' if statistics.median(ms) <= 1.0 else 'NO'}")


if __name__ == "__main__":
    main()
