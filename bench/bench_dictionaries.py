"""Thread dictionaries on and off: bytes per step and speed on the benchmark workload.

    python bench/bench_dictionaries.py                      # SQLite, 5 rounds
    python bench/bench_dictionaries.py --db postgres --rounds 3 --text prose

Each round runs, on a fresh database each, the 300-step thread and the short threads of
``bench_checkpointers.py`` with ``thread_dictionaries=True`` and ``False`` (in alternating
order from round to round). Printed: medians, and the median of the per-round ratios.
``--text prose`` draws the messages from real English prose instead of the ~110-word
vocabulary, which a dictionary learns more easily.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from langchain_core.messages import HumanMessage

sys.path.insert(0, str(Path(__file__).parent))
from _workload import build  # noqa: E402
from bench_checkpointers import (  # noqa: E402
    LONG,
    SHORT_STEPS,
    SHORT_THREADS,
    db_bytes,
    fresh_db,
    grow,
    settle,
)

from relaygraph.checkpointers import SQLAlchemySaver  # noqa: E402


def long_run(kind: str, tmp: Path, on: bool, text: str) -> tuple[float, float]:
    """(steps/s, bytes per step) of one 300-step thread."""
    with fresh_db(kind, tmp) as db, SQLAlchemySaver.from_conn_string(
            db["sa"], thread_dictionaries=on) as saver:
        saver.setup()
        g = build(text=text).compile(checkpointer=saver)
        cfg: Any = {"configurable": {"thread_id": "long"}, "recursion_limit": 10_000}
        base = db_bytes(kind, db)
        elapsed = grow(g, cfg)
        return LONG / elapsed, (db_bytes(kind, db) - base) / LONG


def short_run(kind: str, tmp: Path, on: bool, text: str) -> float:
    with fresh_db(kind, tmp) as db, SQLAlchemySaver.from_conn_string(
            db["sa"], thread_dictionaries=on) as saver:
        saver.setup()
        g = build(text=text).compile(checkpointer=saver)
        settle()
        t = time.perf_counter()
        for i in range(SHORT_THREADS):
            g.invoke({"messages": [HumanMessage(f"case {i}", id=f"in-{i}")], "count": 0,
                      "target": SHORT_STEPS}, {"configurable": {"thread_id": f"short-{i}"}})
        return SHORT_THREADS * SHORT_STEPS / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--db", choices=["sqlite", "postgres", "mysql"], default="sqlite")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--text", choices=["vocab", "prose"], default="vocab")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    longs: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    shorts: dict[bool, list[float]] = {True: [], False: []}
    for r in range(args.rounds):
        for on in ((True, False) if r % 2 == 0 else (False, True)):
            longs[on].append(long_run(args.db, tmp, on, args.text))
            shorts[on].append(short_run(args.db, tmp, on, args.text))
    med = statistics.median
    print(f"{args.db}, {args.text} text, {args.rounds} rounds")
    for on in (True, False):
        print(f"  dictionaries {'on ' if on else 'off'}: "
              f"300-step {med(x[0] for x in longs[on]):5.0f} st/s, "
              f"{med(x[1] for x in longs[on]):6.0f} B/step; "
              f"short {med(shorts[on]):5.0f} st/s")
    pairs = list(zip(longs[True], longs[False], strict=True))
    ratio_b = med(a[1] / b[1] for a, b in pairs)
    ratio_l = med(a[0] / b[0] for a, b in pairs)
    ratio_s = med(a / b for a, b in zip(shorts[True], shorts[False], strict=True))
    print(f"  on/off: bytes x{ratio_b:.3f}, 300-step st/s x{ratio_l:.3f}, "
          f"short st/s x{ratio_s:.3f}")

if __name__ == "__main__":
    main()
