"""Two server processes on one PostgreSQL database: one writer per thread across them."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _serve_live import KEY_ACME, KEY_ACME_BOB, Live, live_server
from test_server import invoke, refund_input

pytestmark = pytest.mark.postgres

SPECS = ["refund=relaygraph.graphs.examples.refund:build_refund_graph",
         "gate=_serve_graphs:gate_graph"]


@pytest.fixture
def pair(pg_backend: Any, tmp_path: Path) -> Iterator[tuple[Live, Live, Path]]:
    gate = tmp_path / "gate"
    env = {"RELAYGRAPH_TEST_GATE": str(gate)}
    with live_server(tmp_path, database_url=pg_backend.url, specs=SPECS, env=env) as a, \
            live_server(tmp_path, database_url=pg_backend.url, specs=SPECS, env=env) as b:
        yield a, b, gate


def test_run_on_one_server_review_decided_on_the_other(pair: tuple[Live, Live, Path]) -> None:
    a, b, _ = pair
    with a.client() as ca, b.client() as cb:
        r = invoke(ca, "refund", "cross-1", refund_input())
        assert r.status_code == 200, r.text
        pending = cb.get("/reviews").json()["reviews"]
        assert [p["thread_id"] for p in pending] == ["cross-1"]
        ok = cb.post("/reviews/cross-1", json={"action": "approve"})
        assert ok.status_code == 200, ok.text
        assert ok.json()["values"]["reviews"][-1]["reviewer"] == "ana"
        again = ca.post("/reviews/cross-1", json={"action": "approve"})
        assert again.status_code == 409
        assert ca.get("/reviews").json()["reviews"] == []
        row = ca.get("/threads").json()["threads"][0]
        assert row["thread_id"] == "cross-1" and row["status"] == "finished"


def test_concurrent_decisions_on_two_servers_one_200_one_409(
        pair: tuple[Live, Live, Path]) -> None:
    a, b, _ = pair
    bodies = [{"action": "approve"}, {"action": "reject", "reason": "duplicate"}]
    with a.client() as ca:
        for i in range(4):
            thread = f"race-{i}"
            assert invoke(ca, "refund", thread, refund_input()).status_code == 200

            def decide(n: int, thread: str = thread) -> httpx.Response:
                server, key = (a, KEY_ACME) if n == 0 else (b, KEY_ACME_BOB)
                with server.client(key) as c:
                    return c.post(f"/reviews/{thread}", json=bodies[n])

            with concurrent.futures.ThreadPoolExecutor(2) as pool:
                results = list(pool.map(decide, range(2)))
            assert sorted(r.status_code for r in results) == [200, 409], \
                [r.text for r in results]
            state = ca.get(f"/threads/{thread}/state").json()["values"]
            assert len(state["reviews"]) == 1  # one decision, never two


def test_a_thread_running_on_one_server_is_busy_on_the_other(
        pair: tuple[Live, Live, Path]) -> None:
    a, b, gate = pair

    def run() -> httpx.Response:
        with a.client() as c:
            return invoke(c, "gate", "busy-x", {"n": 0})

    with concurrent.futures.ThreadPoolExecutor(1) as pool, b.client() as cb:
        running = pool.submit(run)
        for _ in range(600):
            rows = cb.get("/threads").json()["threads"]
            if rows and rows[0]["status"] == "running":
                break
            concurrent.futures.wait([running], timeout=0.05)
        else:
            pytest.fail("the run never showed as running")
        r = invoke(cb, "gate", "busy-x", {"n": 7})
        assert r.status_code == 409 and "busy" in r.text, r.text
        gate.touch()
        assert running.result(timeout=60).status_code == 200


def _fill_index(url: str, n: int, *, tenant: str = "acme") -> None:
    """``n`` thread rows in the index (a third waiting on a review), as runs would leave."""
    import json

    import sqlalchemy as sa

    from relaygraph.serve._index import metadata, threads_table

    engine = sa.create_engine(url)
    metadata.create_all(engine, tables=[threads_table])
    summary = json.dumps({"next": ["review"], "interrupts": [
        {"id": "i", "node": "review", "value": {"kind": "human_review"}, "review": True}]})
    rows = [{"thread_id": f"{tenant}/bulk-{i:05d}", "tenant": tenant, "graph_id": "refund",
             "status": "waiting" if i % 3 == 0 else "finished", "review": int(i % 3 == 0),
             "created_at": 1e9 + i, "updated_at": 1e9 + i, "summary": summary}
            for i in range(n)]
    with engine.begin() as conn:
        conn.execute(threads_table.insert(), rows)
        conn.execute(sa.text("ANALYZE relaygraph_serve_threads"))
    engine.dispose()


def test_listing_pages_use_the_index_at_10000_threads(pg_backend: Any) -> None:
    import sqlalchemy as sa

    from relaygraph.serve._index import threads_table as t

    _fill_index(pg_backend.url, 10_000)
    engine = sa.create_engine(pg_backend.url)
    pages = {
        "reviews": sa.select(t).where(t.c.tenant == "acme", t.c.review == 1),
        "threads": sa.select(t).where(t.c.tenant == "acme"),
        "threads, later page": sa.select(t).where(
            t.c.tenant == "acme", sa.or_(t.c.updated_at < 1e9 + 5000, sa.and_(
                t.c.updated_at == 1e9 + 5000, t.c.thread_id < "acme/bulk-05000"))),
    }
    with engine.connect() as conn:
        for name, q in pages.items():
            q = q.order_by(t.c.updated_at.desc(), t.c.thread_id.desc()).limit(51)
            sql = str(q.compile(engine, compile_kwargs={"literal_binds": True}))
            plan = "\n".join(r[0] for r in conn.execute(sa.text("EXPLAIN " + sql)))
            # an index walk that stops after the page: no scan and sort of every row
            assert "Index Scan" in plan and "Seq Scan" not in plan, (name, plan)
            assert "Sort" not in plan, (name, plan)
    engine.dispose()


def test_relaygraph_serve_with_two_workers(pg_backend: Any, tmp_path: Path) -> None:
    """``relaygraph serve NAME=module:attr --db URL --workers 2``, as a user starts it."""
    with live_server(tmp_path, database_url=pg_backend.url, specs=SPECS[:1], workers=2,
                     cli=True) as server, server.client() as c:
        threads = [f"cli-{i}" for i in range(6)]
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            codes = list(pool.map(lambda t: _invoke_closed(server, t), threads))
        assert codes == [200] * 6
        pending = {r["thread_id"] for r in c.get("/reviews", params={"limit": 50}).json()[
            "reviews"]}
        assert pending == set(threads)
        for t in threads:
            assert c.post(f"/reviews/{t}", json={"action": "approve"}).status_code == 200
        assert c.get("/reviews").json()["reviews"] == []


def _invoke_closed(server: Live, thread: str) -> int:
    with server.client() as c:
        return invoke(c, "refund", thread, refund_input()).status_code
