"""Checkpointer benchmark: relaygraph vs the official LangGraph savers, one run, one table.

    python bench/bench_checkpointers.py            # every reachable database
    python bench/bench_checkpointers.py --quick    # fewer repeats
    python bench/bench_checkpointers.py --matrix   # 6/31/100/300-step threads, both
        # constructors, --durability sync,async,exit; fresh processes, interleaved rounds
    python bench/bench_checkpointers.py --startup  # import + setup() against the official savers
    python bench/bench_checkpointers.py --matrix --startup --quick   # smoke run
    python bench/bench_checkpointers.py --matrix --only sqlite --against ../base   # A/B
    python bench/bench_checkpointers.py --matrix --cpus 0   # each process on one core

(docs/performance.md explains --matrix and --startup and shows their results.)

Workload (bench/_workload.py): three agents in a loop, each step appends one or two
messages (~450 bytes of text each, tool calls included) and updates a dict channel.

Columns:
  short st/s   agent steps per second over many short threads (30 threads x 6 steps)
  long st/s    agent steps per second on one thread growing to 300 steps
  B/step       bytes the database grew by, per step, over the 300-step thread
               (SQLite: file size; PostgreSQL: pg_total_relation_size; MariaDB: data+index)
  B/step@50    marginal bytes per step from step 0-50, and @300 from step 250-300 (flatness)
  get_state    latency of graph.get_state on the 300-step thread (ms)
  list         latency of list(saver.list(config)) over the 300-step thread (ms)
  history      latency of list(graph.get_state_history(config)) (ms)
Medians over repeats. Every measurement runs round-robin across the savers (repeat 1 of
each saver, then repeat 2, ...; the read latencies at the end), so that every saver is
measured under the same machine load, and starts after a full garbage collection (see
``settle``). Ratios compare against
the official savers on the same database.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from langchain_core.messages import HumanMessage

sys.path.insert(0, str(Path(__file__).parent))
from _workload import build  # noqa: E402

PG = os.environ.get("RELAYGRAPH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432")
MY = os.environ.get("RELAYGRAPH_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306")
LONG = 300
CHUNK = 50
SHORT_THREADS = 30
SHORT_STEPS = 6
LATENCY_ROUNDS = 9
SHORT_REPEATS = 5  # short runs are cheap and noisy: more repeats


@dataclass
class Result:
    name: str
    db: str
    short: list[float] = field(default_factory=list)
    long: list[float] = field(default_factory=list)
    bytes_total: float = 0
    marginal: list[float] = field(default_factory=list)
    get_state: list[float] = field(default_factory=list)
    list_ms: list[float] = field(default_factory=list)
    history: list[float] = field(default_factory=list)


def _reachable(url: str) -> bool:
    try:
        eng = sa.create_engine(url, connect_args={"connect_timeout": 3},
                               poolclass=sa.pool.NullPool)
        with eng.connect():
            pass
        eng.dispose()
        return True
    except Exception:  # noqa: BLE001 - unreachable means "skip this database"
        return False


@contextlib.contextmanager
def fresh_db(kind: str, tmp: Path) -> Iterator[dict[str, str]]:
    name = f"rgbench_{uuid.uuid4().hex[:10]}"
    if kind == "sqlite":
        path = tmp / f"{name}.db"
        yield {"sa": f"sqlite:///{path}", "path": str(path)}
        for suffix in ("", "-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)
    elif kind == "postgres":
        admin = sa.create_engine(PG + "/postgres", isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            c.execute(sa.text(f'CREATE DATABASE "{name}"'))
        try:
            yield {"sa": f"{PG}/{name}", "libpq": f"postgresql://postgres@127.0.0.1:5432/{name}"}
        finally:
            with admin.connect() as c:
                c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()
    else:
        admin = sa.create_engine(MY + "/")
        with admin.begin() as c:
            c.execute(sa.text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
        try:
            yield {"sa": f"{MY}/{name}?charset=utf8mb4"}
        finally:
            with admin.begin() as c:
                c.execute(sa.text(f"DROP DATABASE IF EXISTS `{name}`"))
            admin.dispose()


def db_bytes(kind: str, db: dict[str, str]) -> int:
    if kind == "sqlite":
        import sqlite3

        con = sqlite3.connect(db["path"])
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        con.close()
        return Path(db["path"]).stat().st_size
    eng = sa.create_engine(db["sa"], poolclass=sa.pool.NullPool)
    with eng.connect() as c:
        if kind == "postgres":
            n = c.execute(sa.text(
                "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = 'public' AND c.relkind = 'r'")).scalar()
        else:
            for (t,) in c.execute(sa.text("SHOW TABLES")).all():
                c.execute(sa.text(f"ANALYZE TABLE `{t}`")).all()
            n = c.execute(sa.text(
                "SELECT COALESCE(SUM(data_length + index_length), 0) FROM "
                "information_schema.tables WHERE table_schema = DATABASE()")).scalar()
    eng.dispose()
    return int(n)


@contextlib.contextmanager
def make_saver(name: str, kind: str, db: dict[str, str]) -> Iterator[Any]:
    if name.startswith("relaygraph"):
        from relaygraph.checkpointers import SQLAlchemySaver

        with SQLAlchemySaver.from_conn_string(db["sa"]) as s:
            s.setup()
            yield s
    elif name.startswith("SqliteSaver"):
        from langgraph.checkpoint.sqlite import SqliteSaver

        with SqliteSaver.from_conn_string(db["path"]) as s:
            s.setup()
            yield s
    elif name.startswith("PostgresSaver"):
        from langgraph.checkpoint.postgres import PostgresSaver

        with PostgresSaver.from_conn_string(db["libpq"]) as s:
            s.setup()
            yield s
    elif name.startswith("InMemorySaver"):
        from langgraph.checkpoint.memory import InMemorySaver

        yield InMemorySaver()
    else:
        raise ValueError(name)


def settle() -> None:
    """A full collection before each measurement: the garbage an earlier run left (above
    all the previous saver's) then cannot trigger a full collection, ~50-100 ms here,
    inside this one. The collections a saver's own run triggers are still timed."""
    gc.collect()


def timed(fn: Callable[[], Any]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def short_once(res: Result, kind: str, delta: bool, tmp: Path) -> None:
    """Steps/s over many short threads, on a fresh database."""
    graph_b = build(delta=delta)
    with fresh_db(kind, tmp) as db, make_saver(res.name, kind, db) as saver:
        g = graph_b.compile(checkpointer=saver)

        def short() -> None:
            for i in range(SHORT_THREADS):
                g.invoke({"messages": [HumanMessage(f"case {i}", id=f"in-{i}")], "count": 0,
                          "target": SHORT_STEPS},
                         {"configurable": {"thread_id": f"short-{i}"}})

        settle()
        res.short.append(SHORT_THREADS * SHORT_STEPS / timed(short))


def grow(g: Any, cfg: Any, after_chunk: Callable[[], Any] | None = None) -> float:
    """Grow the thread to ``LONG`` steps, ``CHUNK`` per invoke, after a collection; the
    seconds the invokes took (``after_chunk`` runs untimed after each)."""
    elapsed = 0.0
    settle()
    for target in range(CHUNK, LONG + 1, CHUNK):
        inp: dict[str, Any] = {"target": target}
        if target == CHUNK:
            inp.update(messages=[HumanMessage("start", id="start")], count=0)
        elapsed += timed(lambda g=g, inp=inp, cfg=cfg: g.invoke(inp, cfg))
        if after_chunk is not None:
            after_chunk()
    return elapsed


def long_once(res: Result, kind: str, delta: bool, tmp: Path,
              keep: contextlib.ExitStack | None) -> Callable[[], None] | None:
    """Steps/s and bytes on one thread growing to 300 steps, on a fresh database.

    With ``keep`` the database stays open (in ``keep``) and a probe that measures the read
    latencies on it is returned, so that the latencies of all savers are measured
    round-robin at the end, under the same load.
    """
    stack = contextlib.ExitStack()
    db = stack.enter_context(fresh_db(kind, tmp))
    saver = stack.enter_context(make_saver(res.name, kind, db))
    g = build(delta=delta).compile(checkpointer=saver)
    cfg = {"configurable": {"thread_id": "long"}, "recursion_limit": 10_000}
    base = db_bytes(kind, db) if kind != "memory" else 0
    sizes = [base]
    elapsed = grow(g, cfg, after_chunk=None if kind == "memory"
                   else lambda: sizes.append(db_bytes(kind, db)))
    res.long.append(LONG / elapsed)
    if kind != "memory":
        res.bytes_total = (sizes[-1] - sizes[0]) / LONG
        res.marginal = [(sizes[1] - sizes[0]) / CHUNK, (sizes[-1] - sizes[-2]) / CHUNK]
    if keep is None:
        stack.close()
        return None
    keep.enter_context(stack)

    def probe(g: Any = g, saver: Any = saver, cfg: Any = cfg) -> None:
        settle()
        res.get_state.append(1000 * timed(lambda: g.get_state(cfg)))
        res.list_ms.append(1000 * timed(lambda: list(saver.list(cfg))))
        res.history.append(1000 * timed(lambda: list(g.get_state_history(cfg))))

    return probe


def med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


# -- thread lengths x constructors x durability, in fresh processes --------------------
#
# ``--matrix``: each round starts one fresh process per saver (in a shuffled order), on a
# fresh database; the process runs threads of every length in ``LENGTHS`` (``BUDGET``
# steps per length: 100 x 6, 20 x 31, 6 x 100, 2 x 300), then reads the last 300-step
# thread back (get_state, list, history) and reports the bytes the 300-step threads
# stored. Ratios are taken within a round (every saver of a round ran under the same
# machine load) and reported as the median over rounds with their range.

LENGTHS = (6, 31, 100, 300)
BUDGET = 620  # steps per length and process (20 threads x 31 steps, as issue 18's)
DURABILITIES = ("sync", "async", "exit")
#: (label, saver, constructor): relaygraph from a URL, relaygraph on the caller's engine
MATRIX = {
    "sqlite": [("InMemorySaver", "memory", ""), ("SqliteSaver", "official", ""),
               ("rg url", "relaygraph", "url"), ("rg engine", "relaygraph", "engine")],
    "postgres": [("PostgresSaver", "official", ""), ("rg url", "relaygraph", "url"),
                 ("rg engine", "relaygraph", "engine")],
}


@contextlib.contextmanager
def open_saver(saver: str, ctor: str, kind: str, db: dict[str, str]) -> Iterator[Any]:
    """A set-up saver, the way an application builds it."""
    if saver == "memory":
        from langgraph.checkpoint.memory import InMemorySaver

        yield InMemorySaver()
    elif saver == "official" and kind == "sqlite":
        from langgraph.checkpoint.sqlite import SqliteSaver

        with SqliteSaver.from_conn_string(db["path"]) as s:
            s.setup()
            yield s
    elif saver == "official":
        from langgraph.checkpoint.postgres import PostgresSaver

        with PostgresSaver.from_conn_string(db["libpq"]) as s:
            s.setup()
            yield s
    elif ctor == "url":
        from relaygraph.checkpointers import SQLAlchemySaver

        with SQLAlchemySaver.from_conn_string(db["sa"]) as s:
            s.setup()
            yield s
    else:
        from relaygraph.checkpointers import SQLAlchemySaver

        engine = sa.create_engine(db["sa"])  # what an application that owns one passes
        try:
            s = SQLAlchemySaver(engine)
            s.setup()
            yield s
        finally:
            engine.dispose()


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    """One saver in this (fresh) process: steps/s at each length, then the reads."""
    if spec.get("cpus"):
        # before any thread starts: LangGraph's executor threads inherit the mask
        os.sched_setaffinity(0, spec["cpus"])
    kind, db = spec["kind"], spec["db"]
    out: dict[str, Any] = {"steps": {}}
    graph = build()
    with open_saver(spec["saver"], spec["ctor"], kind, db) as saver:
        g = graph.compile(checkpointer=saver)

        def thread(tid: str, steps: int) -> None:
            g.invoke({"messages": [HumanMessage(f"case {tid}", id=f"in-{tid}")], "count": 0,
                      "target": steps},
                     {"configurable": {"thread_id": tid}, "recursion_limit": 4 * steps + 10},
                     durability=spec["durability"])

        thread("warm-up", 3)  # statements compiled, caches and pools filled
        for steps in spec["lengths"]:
            n = max(1, round(spec["budget"] / steps))
            before = db_bytes(kind, db) if kind != "memory" and steps == LONG else 0
            settle()
            t = time.perf_counter()
            for i in range(n):
                thread(f"len{steps}-{i}", steps)
            out["steps"][str(steps)] = n * steps / (time.perf_counter() - t)
            if steps == LONG and kind != "memory" and spec["saver"] != "memory":
                out["bytes_per_step"] = (db_bytes(kind, db) - before) / (n * steps)
        if spec.get("reads") and LONG in spec["lengths"]:
            cfg = {"configurable": {"thread_id": f"len{LONG}-0"}}
            reads: dict[str, list[float]] = {"get_state": [], "list": [], "history": []}
            for _ in range(3):
                settle()
                reads["get_state"].append(1000 * timed(lambda: g.get_state(cfg)))
                reads["list"].append(1000 * timed(lambda: list(saver.list(cfg))))
                reads["history"].append(1000 * timed(lambda: list(g.get_state_history(cfg))))
            out["reads"] = {k: min(v) for k, v in reads.items()}
    return out


def _in_fresh_process(spec: dict[str, Any], timeout: float,
                      src: str | None = None) -> dict[str, Any]:
    env = dict(os.environ)
    if src:  # relaygraph from another checkout (--against)
        env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)],
                          capture_output=True, text=True, timeout=timeout, check=False,
                          env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {spec['saver']}/{spec['ctor']} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _ratios(rs: list[dict[str, Any]], base: list[dict[str, Any]], n: int) -> list[float]:
    return [a["steps"][str(n)] / b["steps"][str(n)] for a, b in zip(rs, base, strict=True)]


def _spread(xs: list[float]) -> str:
    if not xs:
        return "–"
    if len(xs) == 1:
        return f"×{xs[0]:.2f}"
    return f"×{statistics.median(xs):.2f} ({min(xs):.2f}–{max(xs):.2f})"


def matrix(kinds: list[str], rounds: int, durabilities: tuple[str, ...],
           lengths: tuple[int, ...], budget: int, tmp: Path,
           against: str | None = None, cpus: list[int] | None = None) -> None:
    import random

    rng = random.Random(18)
    table = {k: list(v) + ([(f"{lb} (B)", sv, ct) for lb, sv, ct in v if sv == "relaygraph"]
                           if against else []) for k, v in MATRIX.items()}
    # (kind, durability, label) -> per round {"steps": {len: st/s}, ...}
    runs: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in range(rounds):
        for kind in kinds:
            for dur in durabilities:
                entries = list(table[kind])
                rng.shuffle(entries)
                for label, saver, ctor in entries:
                    print(f"round {r + 1}/{rounds}: {kind} durability={dur} {label} ...",
                          file=sys.stderr, flush=True)
                    with fresh_db(kind, tmp) as db:
                        spec = {"kind": "memory" if saver == "memory" else kind, "db": db,
                                "saver": saver, "ctor": ctor, "durability": dur,
                                "lengths": list(lengths), "budget": budget,
                                "reads": dur == "async", "cpus": cpus}
                        res = _in_fresh_process(
                            spec, timeout=900,
                            src=against if label.endswith(" (B)") else None)
                    runs.setdefault((kind, dur, label), []).append(res)
    print(f"\nsteps/s by thread length ({rounds} rounds in fresh processes, interleaved; "
          "median, and ratios as the median of per-round ratios with their range)"
          + (f"; each process on CPU {','.join(map(str, cpus))} only" if cpus else ""))
    for kind in kinds:
        official = "SqliteSaver" if kind == "sqlite" else "PostgresSaver"
        for dur in durabilities:
            print(f"\n{kind}, durability={dur!r}")
            hdr = f"{'saver':<14}" + "".join(f"{f'{n} steps':>34}" for n in lengths)
            print(hdr)
            for label, _, _ in table[kind]:
                rs = runs[(kind, dur, label)]
                cells = []
                for n in lengths:
                    mine = [x["steps"][str(n)] for x in rs]
                    cell = f"{statistics.median(mine):.0f}"
                    if label != official:
                        cell += f" {_spread(_ratios(rs, runs[(kind, dur, official)], n))}"
                    cells.append(f"{cell:>34}")
                print(f"{label:<14}" + "".join(cells))
            for label, sv, _ in MATRIX[kind]:
                if against and sv == "relaygraph":
                    rs, bs = runs[(kind, dur, label)], runs[(kind, dur, f"{label} (B)")]
                    line = "".join(f"{_spread(_ratios(rs, bs, n)):>34}" for n in lengths)
                    print(f"{label + ' / (B)':<14}{line}")
            if kind == "sqlite":
                mem = runs[(kind, dur, "InMemorySaver")]
                for label in ("rg url", "rg engine"):
                    rs = runs[(kind, dur, label)]
                    line = "".join(f"{_spread(_ratios(rs, mem, n)):>34}" for n in lengths)
                    print(f"{label + ' / mem':<14}{line}")
        if "async" in durabilities and LONG in lengths:
            print(f"\n{kind}: the {LONG}-step thread read back (ms, median over rounds of "
                  "the best of 3) and bytes stored per step")
            print(f"{'saver':<14}{'get_state':>12}{'list':>10}{'history':>10}{'B/step':>10}")
            for label, _, _ in table[kind]:
                rs = runs[(kind, "async", label)]
                if "reads" not in rs[0]:
                    continue
                rd = {k: statistics.median([x["reads"][k] for x in rs])
                      for k in ("get_state", "list", "history")}
                b = [x["bytes_per_step"] for x in rs if "bytes_per_step" in x]
                bs = f"{statistics.median(b):.0f}" if b else "–"
                print(f"{label:<14}{rd['get_state']:>12.2f}{rd['list']:>10.1f}"
                      f"{rd['history']:>10.1f}{bs:>10}")


# -- whole-process start-up ----------------------------------------------------------------

_STARTUP = {
    "SqliteSaver": ("sqlite", "from langgraph.checkpoint.sqlite import SqliteSaver\n"
                    "with SqliteSaver.from_conn_string({path!r}) as s:\n    s.setup()\n"),
    "rg url": ("sqlite", "from relaygraph.checkpointers import SQLAlchemySaver\n"
               "with SQLAlchemySaver.from_conn_string({sa!r}) as s:\n    s.setup()\n"),
    "rg engine": ("sqlite", "import sqlalchemy as sa\n"
                  "from relaygraph.checkpointers import SQLAlchemySaver\n"
                  "e = sa.create_engine({sa!r})\nSQLAlchemySaver(e).setup()\ne.dispose()\n"),
    "PostgresSaver": ("postgres", "from langgraph.checkpoint.postgres import PostgresSaver\n"
                      "with PostgresSaver.from_conn_string({libpq!r}) as s:\n    s.setup()\n"),
    "rg url (pg)": ("postgres", "from relaygraph.checkpointers import SQLAlchemySaver\n"
                    "with SQLAlchemySaver.from_conn_string({sa!r}) as s:\n    s.setup()\n"),
    "rg engine (pg)": ("postgres", "import sqlalchemy as sa\n"
                       "from relaygraph.checkpointers import SQLAlchemySaver\n"
                       "e = sa.create_engine({sa!r})\nSQLAlchemySaver(e).setup()\n"
                       "e.dispose()\n"),
}


def startup(kinds: list[str], rounds: int, tmp: Path) -> None:
    """Seconds from process start to a set-up saver (``import langgraph.graph``, the saver's
    import, ``setup()`` on a database that already has its tables, as on every start
    after the first), in fresh processes, interleaved."""
    import random

    rng = random.Random(18)
    names = [n for n, (k, _) in _STARTUP.items() if k in kinds]
    times: dict[str, list[float]] = {n: [] for n in names}
    with contextlib.ExitStack() as stack:
        dbs = {k: stack.enter_context(fresh_db(k, tmp)) for k in kinds}
        code = {n: "import langgraph.graph\n" + src.format(**dbs[k])
                for n, (k, src) in _STARTUP.items() if n in names}
        for n in names:  # the tables exist before the timed starts
            subprocess.run([sys.executable, "-c", code[n]], check=True)
        for r in range(rounds):
            order = names[:]
            rng.shuffle(order)
            print(f"start-up round {r + 1}/{rounds} ...", file=sys.stderr, flush=True)
            for n in order:
                t = time.perf_counter()
                subprocess.run([sys.executable, "-c", code[n]], check=True)
                times[n].append(time.perf_counter() - t)
    print(f"\nstart-up: python -c 'import langgraph.graph; <saver>; setup()' "
          f"({rounds} interleaved rounds; seconds, median; difference to the official saver "
          "as the median of per-round differences with their range)")
    for n in names:
        official = "SqliteSaver" if _STARTUP[n][0] == "sqlite" else "PostgresSaver"
        diffs = [a - b for a, b in zip(times[n], times[official], strict=True)]
        extra = "" if n == official else (
            f"   {statistics.median(diffs):+.3f} s ({min(diffs):+.3f} to {max(diffs):+.3f})")
        print(f"  {n:<16}{statistics.median(times[n]):.3f} s{extra}")


def _cpus(ap: argparse.ArgumentParser, value: str | None) -> list[int] | None:
    """``--cpus`` as CPU ids this machine lets the benchmark use."""
    if not value:
        return None
    try:
        cpus = sorted({int(c) for c in value.split(",") if c.strip()})
    except ValueError:
        ap.error(f"--cpus takes comma-separated CPU ids, got {value!r}")
    usable = os.sched_getaffinity(0)
    if not cpus or not set(cpus) <= usable:
        ap.error(f"--cpus {value!r}: this process may use CPUs {sorted(usable)}")
    return cpus


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="one repeat instead of three")
    ap.add_argument("--only", default="", help="comma-separated database kinds")
    ap.add_argument("--matrix", action="store_true",
                    help="steps/s at 6, 31, 100 and 300 steps, both constructors, in fresh "
                         "processes (with --durability, --rounds), instead of the table")
    ap.add_argument("--startup", action="store_true",
                    help="whole-process start-up (import + setup()), instead of the table")
    ap.add_argument("--rounds", type=int, default=0,
                    help="interleaved rounds of --matrix / --startup (default 7, --quick 2)")
    ap.add_argument("--durability", default="async",
                    help="comma-separated durability modes for --matrix (sync,async,exit)")
    ap.add_argument("--lengths", default=",".join(map(str, LENGTHS)),
                    help="comma-separated thread lengths for --matrix")
    ap.add_argument("--against", metavar="CHECKOUT",
                    help="--matrix also runs relaygraph from this checkout's src/, labelled "
                         "(B), and reports this tree's steps/s against it (an A/B)")
    ap.add_argument("--cpus", metavar="LIST",
                    help="--matrix runs each saver's process on these CPUs only (comma-"
                         "separated ids, e.g. 0), as a worker pinned to a core runs")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    repeats = 1 if args.quick else 3
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / "relaygraph-bench"
    tmp.mkdir(parents=True, exist_ok=True)

    kinds = ["sqlite"]
    if _reachable(PG + "/postgres"):
        kinds.append("postgres")
    else:
        print("PostgreSQL not reachable at 127.0.0.1:5432: skipped")
    if _reachable(MY + "/"):
        kinds.append("mysql")
    else:
        print("MariaDB/MySQL not reachable at 127.0.0.1:3306: skipped")
    if args.only:
        kinds = [k for k in kinds if k in args.only.split(",")]
    if args.matrix or args.startup:
        rounds = args.rounds or (2 if args.quick else 7)
        mkinds = [k for k in kinds if k in MATRIX]
        if args.startup:
            startup(mkinds, rounds * 2, tmp)
        if args.matrix:
            durs = tuple(d for d in args.durability.split(",") if d)
            bad = set(durs) - set(DURABILITIES)
            if bad:
                ap.error(f"--durability takes {', '.join(DURABILITIES)}, got {sorted(bad)}")
            lengths = tuple(int(n) for n in args.lengths.split(","))
            matrix(mkinds, rounds, durs, lengths, BUDGET // 3 if args.quick else BUDGET, tmp,
                   str(Path(args.against).resolve() / "src") if args.against else None,
                   _cpus(ap, args.cpus))
        return

    plan: list[tuple[str, str, bool]] = [("InMemorySaver", "memory", False)]
    for kind in kinds:
        plan.append(("relaygraph", kind, False))
        plan.append(("relaygraph+DeltaChannel", kind, True))
        if kind == "sqlite":
            plan += [("SqliteSaver", kind, False), ("SqliteSaver+DeltaChannel", kind, True)]
        if kind == "postgres":
            plan += [("PostgresSaver", kind, False), ("PostgresSaver+DeltaChannel", kind, True)]

    # Every measurement goes round-robin across the savers (repeat 1 of each, then
    # repeat 2, ...), so that a slow spell of the machine does not land on one saver.
    results = [Result(name, kind) for name, kind, _ in plan]
    probes: list[Callable[[], None]] = []
    with contextlib.ExitStack() as keep:
        for rep in range(1 if args.quick else SHORT_REPEATS):
            for res, (name, kind, delta) in zip(results, plan, strict=True):
                print(f"short threads, repeat {rep + 1}: {name} on {kind} ...",
                      file=sys.stderr, flush=True)
                short_once(res, kind, delta, tmp)
        for rep in range(repeats):
            last = rep == repeats - 1
            for res, (name, kind, delta) in zip(results, plan, strict=True):
                print(f"300-step thread, repeat {rep + 1}: {name} on {kind} ...",
                      file=sys.stderr, flush=True)
                probe = long_once(res, kind, delta, tmp, keep if last else None)
                if probe is not None:
                    probes.append(probe)
        print("measuring read latency round-robin ...", file=sys.stderr, flush=True)
        for i in range(LATENCY_ROUNDS):
            shift = i % len(probes)
            for probe in probes[shift:] + probes[:shift]:
                probe()

    hdr = (f"{'saver':<27}{'db':<9}{'short st/s':>11}{'long st/s':>10}{'B/step':>9}"
           f"{'@50':>8}{'@300':>8}{'get_state':>10}{'list':>9}{'history':>9}")
    print(hdr)
    print("-" * len(hdr))
    for r in results:
        m = r.marginal or [float("nan")] * 2
        print(f"{r.name:<27}{r.db:<9}{med(r.short):>11.0f}{med(r.long):>10.0f}"
              f"{r.bytes_total:>9.0f}{m[0]:>8.0f}{m[1]:>8.0f}{med(r.get_state):>10.2f}"
              f"{med(r.list_ms):>9.1f}{med(r.history):>9.1f}")

    print("\nratios, relaygraph / official on the same database (higher is better for st/s,"
          " lower is better for bytes and latency):")
    by = {(r.name, r.db): r for r in results}
    for kind, official in (("sqlite", "SqliteSaver"), ("postgres", "PostgresSaver")):
        ours = by.get(("relaygraph", kind))
        if ours is None:
            continue
        for other in (official, official + "+DeltaChannel"):
            o = by.get((other, kind))
            if o is None:
                continue
            print(f"  {kind:<9} vs {other:<27} short st/s x{med(ours.short) / med(o.short):.2f}"
                  f"  long st/s x{med(ours.long) / med(o.long):.2f}"
                  f"  bytes x{ours.bytes_total / o.bytes_total:.3f}"
                  f"  get_state x{med(ours.get_state) / med(o.get_state):.2f}"
                  f"  list x{med(ours.list_ms) / med(o.list_ms):.3f}"
                  f"  history x{med(ours.history) / med(o.history):.3f}")


if __name__ == "__main__":
    main()
