"""How fast the review inbox's first page renders with many threads in PostgreSQL.

Workload: the refund example on a fresh PostgreSQL database. A few threads run for real
(one left waiting for its review, one approved to the end); the rest are copies of those
two (``copy_thread``: real checkpoints), split between two tenants, one in five waiting
for a review. Every thread is indexed the way the server indexes it after a run. Then a
signed-in reviewer loads pages in-process (no network), after a few warm-up loads.

Reported per page: median and p90 milliseconds over ``--loads`` loads.

    python bench/bench_inbox.py                      # 10,000 threads, 20 loads
    python bench/bench_inbox.py --threads 2000 --loads 50
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import sqlalchemy as sa
from fastapi.testclient import TestClient

from relaygraph.checkpointers import SQLAlchemySaver
from relaygraph.graphs import examples
from relaygraph.graphs.examples import EXAMPLES
from relaygraph.serve import create_app
from relaygraph.serve._auth import Principal
from relaygraph.serve._runner import refresh, thread_config

PG = "postgresql+psycopg://postgres@127.0.0.1:5432"
KEY = "bench-key-0123456789"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=10_000)
    ap.add_argument("--loads", type=int, default=20)
    ap.add_argument("--waiting-every", type=int, default=5,
                    help="one thread in this many waits for a review")
    args = ap.parse_args()

    name = f"rg_inbox_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG + "/postgres", isolation_level="AUTOCOMMIT",
                             poolclass=sa.pool.NullPool)
    with admin.connect() as c:
        c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        run(f"{PG}/{name}", args)
    finally:
        with admin.connect() as c:
            c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def run(url: str, args: argparse.Namespace) -> None:
    with SQLAlchemySaver.from_conn_string(url, serde=examples.serde()) as saver:
        saver.setup()
        graph = EXAMPLES["refund"].build().compile(checkpointer=saver)
        app = create_app({"refund": graph}, checkpointer=saver, langserve_routes=False,
                         auth={KEY: Principal("acme", "ana")})
        ctx = app.state.relaygraph
        with TestClient(app) as client:
            started = time.perf_counter()

            async def seed() -> None:
                for tid in ("acme/seed-waiting", "acme/seed-done"):
                    await graph.ainvoke(EXAMPLES["refund"].make_input(),
                                        thread_config(tid, "refund"))
                from relaygraph.serve._reviews import adecide
                await adecide(ctx, "refund", "acme/seed-done", {"action": "approve"},
                              reviewer="ana")

            client.portal.call(seed)  # type: ignore[union-attr]
            targets = []
            for i in range(args.threads - 2):
                tenant = "acme" if i % 2 == 0 else "globex"
                src = "acme/seed-waiting" if i % args.waiting_every == 0 else "acme/seed-done"
                targets.append((src, f"{tenant}/t-{i:05d}"))
            with ThreadPoolExecutor(4) as pool:
                list(pool.map(lambda st: saver.copy_thread(*st), targets))
            copied = time.perf_counter()

            async def index_all() -> None:
                sem = asyncio.Semaphore(8)

                async def one(internal: str) -> None:
                    async with sem:
                        await refresh(ctx, internal, "refund")

                await asyncio.gather(*(one(t) for _, t in targets),
                                     one("acme/seed-waiting"), one("acme/seed-done"))

            client.portal.call(index_all)  # type: ignore[union-attr]
            indexed = time.perf_counter()

            page = client.get("/inbox/signin").text
            token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
            client.post("/inbox/signin", data={"csrf_token": token, "api_key": KEY})
            waiting = client.get("/inbox/count").json()["waiting"]
            rows = []
            for label, path in (("inbox, first page", "/inbox"),
                                ("inbox, oldest first, page 5", "/inbox?order=oldest&page=5"),
                                ("inbox, filtered by reason", "/inbox?reason=full_review"),
                                ("live count", "/inbox/count")):
                for _ in range(3):
                    assert client.get(path).status_code == 200
                times = []
                for _ in range(args.loads):
                    t0 = time.perf_counter()
                    resp = client.get(path)
                    times.append((time.perf_counter() - t0) * 1000)
                    assert resp.status_code == 200
                times.sort()
                rows.append((label, statistics.median(times),
                             times[min(len(times) - 1, int(len(times) * 0.9))]))

    print(f"threads: {args.threads} (PostgreSQL, two tenants); the signed-in tenant has "
          f"{waiting} waiting for review")
    print(f"setup: copies {copied - started:.0f} s, indexing {indexed - copied:.0f} s")
    print(f"{'page':<32}{'median ms':>10}{'p90 ms':>10}   ({args.loads} loads)")
    for label, med, p90 in rows:
        print(f"{label:<32}{med:>10.1f}{p90:>10.1f}")


if __name__ == "__main__":
    main()
