"""A bounded load test of the server on loopback: the refund graph, 1 and 2 workers.

Every request starts the refund example on a new thread and runs it to its human review
(four agent steps and a handoff, checkpointed on the database). Targets, started one after
the other on the same fresh database, each as a uvicorn subprocess:

* ``relaygraph``: ``relaygraph.serve`` (API key, tenant, lease, limits, thread index),
  LangServe's ``/graphs/refund/invoke``;
* ``relaygraph-protocol``: the same server through LangGraph's protocol,
  ``POST /threads/{id}/runs/wait`` (what ``langgraph_sdk`` and ``RemoteGraph`` send);
* ``langserve``: LangServe's own ``add_routes`` on the same graph and saver, nothing else
  (``bench/_serve_plain.py``);
* ``langgraph-dev``: LangChain's in-memory Agent Server (``langgraph dev``), if a virtualenv
  with ``langgraph-cli[inmem]`` is given with ``--langgraph-dev-venv``.

Reported: requests/s and p50/p95 latency at ``--concurrency`` clients for ``--requests``
requests (after a warm-up), and ``GET /reviews`` page latency with 100 and with 10,000
threads in the caller's tenant.

    python bench/bench_serve.py                                  # PostgreSQL on loopback
    python bench/bench_serve.py --db sqlite --requests 100
    python bench/bench_serve.py --langgraph-dev-venv /tmp/lgdev
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
KEY = "bench-key-0123456789abcdef"
BULK_KEY = "bulk-key-0123456789abcdef"
PG_SERVER = os.environ.get("RELAYGRAPH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432")


def refund_input() -> dict[str, Any]:
    from relaygraph.graphs.examples import EXAMPLES

    inp = EXAMPLES["refund"].make_input()
    inp["messages"] = [{"type": m.type, "content": m.content} for m in inp["messages"]]
    return inp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def database(kind: str, tmp: Path) -> Any:
    if kind == "sqlite":
        yield f"sqlite:///{tmp / 'bench.db'}"
        return
    name = f"rg_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(PG_SERVER + "/postgres", isolation_level="AUTOCOMMIT",
                             poolclass=sa.pool.NullPool)
    with admin.connect() as c:
        c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{PG_SERVER}/{name}"
    finally:
        with admin.connect() as c:
            c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def server(cmd: list[str], env: dict[str, str], port: int, log: Path, cwd: Path) -> Any:
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=str(cwd),
                                env={**os.environ, **env})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{cmd[:4]} exited:\n{log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/ok" if "langgraph" in cmd[0] else f"{url}/ready",
                             timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{cmd[:4]} did not start:\n{log.read_text()[-2000:]}")
            time.sleep(0.2)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def uvicorn_cmd(factory: str, port: int, workers: int) -> list[str]:
    return [sys.executable, "-m", "uvicorn", "--factory", factory, "--host", "127.0.0.1",
            "--port", str(port), "--workers", str(workers), "--log-level", "warning",
            "--no-access-log"]


# --------------------------------------------------------------------------- load


def request_for(style: str, thread: str) -> tuple[str, dict[str, Any]]:
    if style == "langserve":
        return "/graphs/refund/invoke", {
            "input": refund_input(), "config": {"configurable": {"thread_id": thread}}}
    # LangGraph's protocol: a run on a thread, created if it does not exist
    return f"/threads/{thread}/runs/wait", {
        "assistant_id": "refund", "input": refund_input(), "if_not_exists": "create"}


async def load(url: str, style: str, *, requests: int, concurrency: int,
               headers: dict[str, str], warm: bool = False) -> tuple[float, list[float], int]:
    """``requests`` runs by ``concurrency`` clients: (elapsed s, latencies s, errors)."""
    latencies: list[float] = []
    errors = 0
    todo = iter(range(requests))

    async def client_loop(c: httpx.AsyncClient) -> None:
        nonlocal errors
        for _ in todo:
            path, body = request_for(style, str(uuid.uuid4()))
            started = time.perf_counter()
            r = await c.post(path, json=body)
            latencies.append(time.perf_counter() - started)
            if r.status_code != 200:
                errors += 1
                if errors <= 3:
                    print(f"  ! {r.status_code} {r.text[:200]}", file=sys.stderr)

    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=120,
                                 limits=httpx.Limits(max_connections=concurrency)) as c:
        if warm:  # imports, connection pools, prepared statements
            reqs = [request_for(style, str(uuid.uuid4())) for _ in range(concurrency)]
            await asyncio.gather(*(c.post(path, json=body) for path, body in reqs))
        started = time.perf_counter()
        await asyncio.gather(*(client_loop(c) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return elapsed, latencies, errors


def summary(elapsed: float, latencies: list[float], errors: int) -> dict[str, float]:
    latencies = sorted(latencies)
    return {"rps": len(latencies) / elapsed, "p50": 1000 * statistics.median(latencies),
            "p95": 1000 * latencies[int(0.95 * (len(latencies) - 1))], "errors": errors}


def fill_index(url: str, n: int, tenant: str) -> None:
    """``n`` threads in the tenant's listing, each waiting on a review (full pages)."""
    from relaygraph.serve._index import metadata, threads_table

    engine = sa.create_engine(url)
    metadata.create_all(engine, tables=[threads_table])
    summary = json.dumps({"next": ["review"], "interrupts": [
        {"id": "i", "node": "review", "value": {"kind": "human_review", "order_id": "A-1"},
         "review": True}]})
    with engine.begin() as conn:
        have = conn.execute(sa.select(sa.func.count()).select_from(threads_table).where(
            threads_table.c.tenant == tenant)).scalar_one()
        rows = [{"thread_id": f"{tenant}/bulk-{i:06d}", "tenant": tenant, "graph_id": "refund",
                 "status": "waiting", "review": 1, "created_at": 1e9 + i,
                 "updated_at": 1e9 + i, "summary": summary}
                for i in range(have, n)]
        if rows:
            conn.execute(threads_table.insert(), rows)
        if engine.dialect.name == "postgresql":
            conn.execute(sa.text("ANALYZE relaygraph_serve_threads"))
    engine.dispose()


def page_latencies(urls: dict[int, str], *, samples: int) -> dict[int, dict[str, float]]:
    """``GET /reviews?limit=50`` on each server, taking turns request by request."""
    times: dict[int, list[float]] = {n: [] for n in urls}
    clients = {n: httpx.Client(base_url=u, headers={"x-api-key": BULK_KEY}, timeout=60)
               for n, u in urls.items()}
    try:
        for c in clients.values():
            c.get("/reviews", params={"limit": 50})
        for _ in range(samples):
            for n, c in clients.items():
                started = time.perf_counter()
                r = c.get("/reviews", params={"limit": 50})
                times[n].append(time.perf_counter() - started)
                assert r.status_code == 200 and len(r.json()["reviews"]) == 50, r.text[:200]
    finally:
        for c in clients.values():
            c.close()
    out = {}
    for n, ts in times.items():
        ts.sort()
        out[n] = {"p50": 1000 * statistics.median(ts),
                  "p95": 1000 * ts[int(0.95 * (len(ts) - 1))]}
    return out


# --------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--db", choices=["postgres", "sqlite"], default="postgres")
    ap.add_argument("--requests", type=int, default=200, help="per target")
    ap.add_argument("--rounds", type=int, default=5,
                    help="targets take turns, requests/rounds at a time (noise hits all alike)")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--page-samples", type=int, default=50)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--langgraph-dev-venv", type=Path, default=None)
    args = ap.parse_args()
    workers = [int(w) for w in args.workers.split(",")]
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        db = stack.enter_context(database(args.db, tmp))
        env = {"RELAYGRAPH_DATABASE_URL": db,
               "RELAYGRAPH_API_KEYS": f"bench:{KEY},bulk:{BULK_KEY}",
               "RELAYGRAPH_SERVE_GRAPHS": json.dumps(
                   ["refund=relaygraph.graphs.examples.refund:build_refund_graph"]),
               "PYTHONPATH": os.pathsep.join([str(ROOT / "bench"), str(ROOT / "src")])}
        targets: list[tuple[str, int, str, str]] = []  # name, workers, url, request style
        for w in workers:
            for name, factory in (("relaygraph", "relaygraph.serve._server:app_factory"),
                                  ("langserve", "_serve_plain:app_factory")):
                port = free_port()
                url = stack.enter_context(server(uvicorn_cmd(factory, port, w), env, port,
                                                 tmp / f"{name}-{w}.log", tmp))
                targets.append((name, w, url, "langserve"))
                if name == "relaygraph":
                    targets.append(("relaygraph-protocol", w, url, "protocol"))
        if args.langgraph_dev_venv is not None:
            url = stack.enter_context(langgraph_dev(args.langgraph_dev_venv, tmp))
            targets.append(("langgraph dev (inmem)", 1, url, "protocol"))
        results: dict[int, list[Any]] = {i: [0.0, [], 0] for i in range(len(targets))}
        for _, _, url, style in targets:
            asyncio.run(load(url, style, requests=0, concurrency=args.concurrency,
                             headers={"x-api-key": KEY}, warm=True))
        chunk = max(1, args.requests // args.rounds)
        for rnd in range(args.rounds):
            print(f"round {rnd + 1}/{args.rounds}", file=sys.stderr)
            order = list(range(len(targets)))
            random.Random(rnd).shuffle(order)
            for i in order:
                name, w, url, style = targets[i]
                elapsed, lats, errs = asyncio.run(load(
                    url, style, requests=chunk, concurrency=args.concurrency,
                    headers={"x-api-key": KEY}))
                results[i][0] += elapsed
                results[i][1] += lats
                results[i][2] += errs
        rows = [(t[0], t[1], summary(*results[i])) for i, t in enumerate(targets)]

        # listing pages: one database with 100 threads, one with 10,000, servers side by side
        page_urls = {}
        for n in (100, 10_000):
            (tmp / f"pages-{n}").mkdir()
            page_db = stack.enter_context(database(args.db, tmp / f"pages-{n}"))
            fill_index(page_db, n, "bulk")
            port = free_port()
            page_urls[n] = stack.enter_context(server(
                uvicorn_cmd("relaygraph.serve._server:app_factory", port, 1),
                {**env, "RELAYGRAPH_DATABASE_URL": page_db}, port, tmp / f"pages-{n}.log", tmp))
        pages = page_latencies(page_urls, samples=args.page_samples)

    print(f"\nrefund graph to its review on {args.db}: {chunk * args.rounds} requests per "
          f"target over {args.rounds} alternating rounds, {args.concurrency} clients, loopback\n")
    print(f"{'server':<24}{'workers':>8}{'req/s':>9}{'p50 ms':>9}{'p95 ms':>9}{'errors':>8}")
    for name, w, r in rows:
        print(f"{name:<24}{w:>8}{r['rps']:>9.1f}{r['p50']:>9.1f}{r['p95']:>9.1f}"
              f"{int(r['errors']):>8}")
    base = {w: r["rps"] for name, w, r in rows if name == "langserve"}
    for name, w, r in rows:
        if name != "langserve" and w in base:
            print(f"  {name} / langserve, {w} worker(s): {r['rps'] / base[w]:.2f}x req/s")
    print(f"\nGET /reviews?limit=50, {args.page_samples} requests each, taking turns")
    for n, r in pages.items():
        print(f"  {n:>6} threads in the tenant: p50 {r['p50']:.1f} ms, p95 {r['p95']:.1f} ms")
    print(f"  10,000 / 100 p50 ratio: {pages[10_000]['p50'] / pages[100]['p50']:.2f}")


@contextmanager
def langgraph_dev(venv: Path, tmp: Path) -> Any:
    """``langgraph dev`` (in-memory Agent Server, one process) on the same graph."""
    proj = tmp / "lgdev"
    proj.mkdir()
    (proj / "graph.py").write_text(
        "from relaygraph.graphs.examples import EXAMPLES\n"
        "graph = EXAMPLES['refund'].build().compile()\n")
    (proj / "langgraph.json").write_text(json.dumps(
        {"dependencies": ["."], "graphs": {"refund": "./graph.py:graph"}}))
    port = free_port()
    cmd = [str(venv / "bin" / "langgraph"), "dev", "--no-browser", "--no-reload", "--port",
           str(port), "--host", "127.0.0.1"]
    with server(cmd, {"LANGSMITH_TRACING": "false", "LANGGRAPH_NO_VERSION_CHECK": "1"},
                port, tmp / "lgdev.log", proj) as url:
        yield url


if __name__ == "__main__":
    main()
