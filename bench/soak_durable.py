"""Crash-resume soak: hundreds of SIGKILLed runs per database, resumed until they finish.

Each trial drives one thread of the refund or the research workflow (alternately, with
the sync saver and ``invoke`` or the async saver and ``ainvoke``, ten trials each) in a
forked worker that SIGKILLs itself at a seeded point: inside a checkpoint write, inside an
effect, between an effect and its ledger record, after the record, or at a random moment.
New processes resume it (and are killed again, a quarter of the time) until it finishes;
its final state is compared with an uninterrupted run's (tests/reliability/_workers.py).

    python bench/soak_durable.py                       # 200 trials on each database
    python bench/soak_durable.py --trials 20 --db sqlite

Prints, per database: trials, kills, resumes, lost, duplicated (and diverged and errors,
which must be 0 too). Exits 1 if any trial lost, duplicated or diverged.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "reliability"))
import _workers as W  # noqa: E402

PG = os.environ.get("RELAYGRAPH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432")
MYSQL = os.environ.get("RELAYGRAPH_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306")


@contextmanager
def fresh_database(kind: str, workdir: str) -> Iterator[str]:
    """A new, empty database of ``kind``; dropped afterwards."""
    if kind == "sqlite":
        yield f"sqlite:///{workdir}/soak-{uuid.uuid4().hex[:8]}.db"
        return
    name = f"rg_soak_{uuid.uuid4().hex[:10]}"
    if kind == "postgres":
        admin = sa.create_engine(PG + "/postgres", isolation_level="AUTOCOMMIT",
                                 poolclass=sa.pool.NullPool)
        with admin.connect() as c:
            c.execute(sa.text(f'CREATE DATABASE "{name}"'))
        try:
            yield f"{PG}/{name}"
        finally:
            with admin.connect() as c:
                c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()
    else:
        admin = sa.create_engine(MYSQL + "/", poolclass=sa.pool.NullPool)
        with admin.begin() as c:
            c.execute(sa.text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
        try:
            yield f"{MYSQL}/{name}?charset=utf8mb4"
        finally:
            with admin.begin() as c:
                c.execute(sa.text(f"DROP DATABASE IF EXISTS `{name}`"))
            admin.dispose()


def soak(zygote: W.Zygote, kind: str, url: str, trials: int, seed: int,
         verbose: bool) -> Counter[str]:
    rng = random.Random(f"{seed}-{kind}")
    refs = {(wf, mode): W.reference_run(zygote, url, wf, f"{wf}-{mode}-clean", mode)
            for wf in W.WORKFLOWS for mode in W.MODES}
    total: Counter[str] = Counter()
    points: Counter[str] = Counter()
    for i in range(trials):
        wf = W.WORKFLOWS[i % len(W.WORKFLOWS)]
        point = W.KILL_POINTS[(i // len(W.WORKFLOWS)) % len(W.KILL_POINTS)]
        mode = W.MODES[(i // (len(W.WORKFLOWS) * len(W.KILL_POINTS))) % len(W.MODES)]
        t = W.trial(zygote, url, wf, f"{wf}-{i}", point, rng, refs[(wf, mode)], mode=mode)
        total["trials"] += 1
        total["kills"] += t["kills"]
        total["resumes"] += t["resumes"]
        points[point] += t["kills"] > 0
        for kind_ in ("lost", "duplicated", "diverged"):
            total[kind_] += bool(t[kind_])
        total["errors"] += t["error"] is not None
        bad = t["error"] or t["lost"] or t["duplicated"] or t["diverged"]
        if bad and verbose:
            print(f"  {kind} trial {i} ({wf}, {point}, {mode}): {t}", file=sys.stderr)
    total["killed_trials"] = sum(points.values())
    return total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=200, help="trials per database (200)")
    ap.add_argument("--db", default="sqlite,postgres,mysql",
                    help="comma-separated: sqlite, postgres, mysql")
    ap.add_argument("--seed", type=int, default=20261206)
    ap.add_argument("--verbose", action="store_true", help="print every failed trial")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        zygote = W.Zygote(workdir)
        try:
            for kind in args.db.split(","):
                start = time.monotonic()
                with fresh_database(kind, workdir) as url:
                    total = soak(zygote, kind, url, args.trials, args.seed, args.verbose)
                rows.append((kind, total, time.monotonic() - start))
                print(f"{kind}: done in {rows[-1][2]:.0f} s", file=sys.stderr, flush=True)
        finally:
            zygote.close()
    cols = ("trials", "kills", "resumes", "lost", "duplicated", "diverged", "errors")
    print(f"{'database':<10}" + "".join(f"{c:>12}" for c in cols) + f"{'seconds':>10}")
    for kind, total, secs in rows:
        print(f"{kind:<10}" + "".join(f"{total[c]:>12}" for c in cols) + f"{secs:>10.0f}")
    print(f"(seed {args.seed}; kills: processes SIGKILLed, resumes: processes that "
          "resumed a killed run; lost/duplicated/diverged/errors: trials)")
    bad = any(total[c] for _, total, _ in rows for c in ("lost", "duplicated", "diverged",
                                                          "errors"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
