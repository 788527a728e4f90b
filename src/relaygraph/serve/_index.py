"""The thread index: one small row per thread, so listings never decode state.

Listings (``GET /threads``, ``GET /reviews``, the inbox) read this table with keyset
pagination on ``(tenant, updated_at, thread_id)``; the page costs the same at 100 threads as
at 100,000. A row is written whenever the server starts, finishes or resumes a run on a
thread (`ThreadIndex.arefresh` reads the state once, through the graph). A thread whose
state cannot be read is recorded as an ``error`` row with the reason instead of breaking
the listing.

The table lives in the saver's database (``relaygraph_serve_threads``); savers without a
database (``InMemorySaver``) get an in-memory SQLite index.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from relaygraph._sql import (
    Key,
    LargeText,
    acreate_tables,
    create_tables,
    memory_engine,
    metadata,
    run_in_tx,
    upsert,
)

threads_table = sa.Table(
    "relaygraph_serve_threads",
    metadata,
    sa.Column("thread_id", Key(255), primary_key=True),
    sa.Column("tenant", Key(64), nullable=False),
    sa.Column("graph_id", sa.String(64), nullable=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("review", sa.SmallInteger, nullable=False, default=0),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("summary", LargeText, nullable=False),
    sa.Index("ix_relaygraph_serve_threads_page", "tenant", "updated_at", "thread_id"),
    sa.Index("ix_relaygraph_serve_threads_review", "tenant", "review", "updated_at",
             "thread_id"),
    sa.Index("ix_relaygraph_serve_threads_graph", "graph_id", "updated_at"),
)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


@dataclass(frozen=True)
class IndexRow:
    """One thread in a listing (internal thread id; the routes map it to the client's)."""

    thread_id: str
    tenant: str
    graph_id: str | None
    status: str
    created_at: float
    updated_at: float
    review: bool
    summary: dict[str, Any] = field(default_factory=dict)

    def as_dict(self, thread_id: str) -> dict[str, Any]:
        return {
            "thread_id": thread_id, "graph_id": self.graph_id, "status": self.status,
            "created_at": _iso(self.created_at), "updated_at": _iso(self.updated_at),
            "next": self.summary.get("next", []),
            "interrupts": self.summary.get("interrupts", []),
            "error": self.summary.get("error"),
        }


@dataclass(frozen=True)
class Page:
    rows: list[IndexRow]
    next_cursor: str | None


def encode_cursor(updated_at: float, thread_id: str) -> str:
    raw = json.dumps([updated_at, thread_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    """Raises ValueError on anything that is not a cursor this server made."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        ts, tid = json.loads(raw)
    except Exception as exc:  # noqa: BLE001 - any garbage is the client's mistake
        raise ValueError(f"invalid cursor {cursor[:40]!r}") from exc
    if not isinstance(ts, int | float) or not isinstance(tid, str):
        raise ValueError(f"invalid cursor {cursor[:40]!r}")
    return float(ts), tid


def _row(r: Any) -> IndexRow:
    try:
        summary = json.loads(r.summary)
    except ValueError:
        summary = {"error": "unreadable index row"}
    return IndexRow(r.thread_id, r.tenant, r.graph_id, r.status, r.created_at, r.updated_at,
                    bool(r.review), summary if isinstance(summary, dict) else {})


class ThreadIndex:
    """Thread summaries in SQL (sync or async engine), for paginated listings.

    Args:
        engine: the saver's engine (``sa.Engine`` or ``AsyncEngine``), or None for an
            in-memory SQLite index (one process only).
        clock: seconds since the epoch (injected in tests).
    """

    def __init__(self, engine: Any = None, *, clock: Callable[[], float] = time.time) -> None:
        if engine is None:
            engine = memory_engine()
        self.engine = engine
        self.clock = clock
        self._async = hasattr(engine, "sync_engine")
        self._ready = False

    async def _run(self, fn: Callable[[sa.Connection], Any]) -> Any:
        if not self._ready:  # apps mounted without a lifespan still get the table
            await self.asetup()
        return await run_in_tx(self.engine, fn)

    async def asetup(self) -> None:
        """Create the table and its indexes (idempotent)."""
        if self._async:
            await acreate_tables(self.engine, [threads_table])
        else:
            await asyncio.to_thread(create_tables, self.engine, [threads_table])
        self._ready = True

    async def aput(self, thread_id: str, tenant: str, graph_id: str | None, status: str,
                   summary: dict[str, Any], *, review: bool = False) -> None:
        """Insert or update a thread's row (``updated_at`` = now)."""
        now = self.clock()
        values = {"thread_id": thread_id, "tenant": tenant, "graph_id": graph_id,
                  "status": status, "review": 1 if review else 0, "created_at": now,
                  "updated_at": now, "summary": json.dumps(summary, default=str)}

        def go(conn: sa.Connection) -> None:
            conn.execute(upsert(conn.dialect, threads_table, values, keys=["thread_id"],
                                update=["graph_id", "status", "review", "updated_at",
                                        "summary"]))

        await self._run(go)

    async def amark_running(self, thread_id: str, tenant: str, graph_id: str | None) -> None:
        """Show a thread as running (a run took its lease); its summary is kept."""
        now = self.clock()
        t = threads_table

        def go(conn: sa.Connection) -> None:
            done = conn.execute(t.update().where(t.c.thread_id == thread_id).values(
                status="running", updated_at=now)).rowcount
            if not done:
                conn.execute(upsert(conn.dialect, t, {
                    "thread_id": thread_id, "tenant": tenant, "graph_id": graph_id,
                    "status": "running", "review": 0, "created_at": now, "updated_at": now,
                    "summary": json.dumps({"next": [], "interrupts": []})},
                    keys=["thread_id"], update=["status", "updated_at"]))

        await self._run(go)

    async def aget(self, thread_id: str) -> IndexRow | None:
        def go(conn: sa.Connection) -> Any:
            return conn.execute(sa.select(threads_table).where(
                threads_table.c.thread_id == thread_id)).first()

        r = await self._run(go)
        return None if r is None else _row(r)

    async def adelete(self, thread_id: str) -> None:
        def go(conn: sa.Connection) -> None:
            conn.execute(threads_table.delete().where(threads_table.c.thread_id == thread_id))

        await self._run(go)

    async def apage(self, tenant: str, *, limit: int, cursor: str | None = None,
                    graph_id: str | None = None, status: str | None = None,
                    review_only: bool = False) -> Page:
        """One page of a tenant's threads, most recently updated first.

        Raises:
            ValueError: a cursor this server did not make.
        """
        t = threads_table
        q = sa.select(t).where(t.c.tenant == tenant)
        if review_only:
            q = q.where(t.c.review == 1)
        if graph_id is not None:
            q = q.where(t.c.graph_id == graph_id)
        if status is not None:
            q = q.where(t.c.status == status)
        if cursor:
            ts, tid = decode_cursor(cursor)
            q = q.where(sa.or_(t.c.updated_at < ts,
                               sa.and_(t.c.updated_at == ts, t.c.thread_id < tid)))
        q = q.order_by(t.c.updated_at.desc(), t.c.thread_id.desc()).limit(limit + 1)

        def go(conn: sa.Connection) -> list[Any]:
            return list(conn.execute(q))

        rows = [_row(r) for r in await self._run(go)]
        more = len(rows) > limit
        rows = rows[:limit]
        nxt = encode_cursor(rows[-1].updated_at, rows[-1].thread_id) if more else None
        return Page(rows, nxt)

    async def aexpired(self, graph_id: str, older_than: float, *, limit: int = 500
                       ) -> list[str]:
        """Internal ids of ``graph_id`` threads not updated since ``older_than``."""
        t = threads_table

        def go(conn: sa.Connection) -> list[str]:
            return [r[0] for r in conn.execute(
                sa.select(t.c.thread_id).where(t.c.graph_id == graph_id,
                                               t.c.updated_at < older_than,
                                               t.c.status != "running")
                .order_by(t.c.updated_at).limit(limit))]

        return await self._run(go)  # type: ignore[no-any-return]

    async def acount(self, tenant: str | None = None) -> int:
        t = threads_table
        q = sa.select(sa.func.count()).select_from(t)
        if tenant is not None:
            q = q.where(t.c.tenant == tenant)

        def go(conn: sa.Connection) -> int:
            return int(conn.execute(q).scalar_one())

        return await self._run(go)  # type: ignore[no-any-return]

    async def aping(self) -> None:
        """Raise if the database cannot be reached."""
        def go(conn: sa.Connection) -> None:
            conn.execute(sa.text("SELECT 1"))

        await self._run(go)


def summarize(snapshot: Any, *, running: bool = False) -> tuple[str, dict[str, Any], bool]:
    """``(status, summary, waiting_for_review)`` from a state snapshot."""
    from relaygraph.serve._reviews import is_review_request

    interrupts = []
    review = False
    for task in getattr(snapshot, "tasks", ()) or ():
        for intr in task.interrupts:
            value = _jsonable(intr.value)
            is_review = is_review_request(intr.value)
            review = review or is_review
            interrupts.append({"id": intr.id, "node": task.name, "value": value,
                               "review": is_review})
    error = None
    for task in getattr(snapshot, "tasks", ()) or ():
        if getattr(task, "error", None) is not None:
            error = f"{task.name}: {task.error}"[:500]
    status = _status(snapshot, running=running, error=error, interrupts=bool(interrupts))
    summary = {"next": list(snapshot.next), "interrupts": interrupts, "error": error,
               "step": (snapshot.metadata or {}).get("step")}
    return status, summary, review


def _status(snapshot: Any, *, running: bool, error: str | None, interrupts: bool) -> str:
    status_of: Any = None
    try:
        from relaygraph.observe import thread_status as status_of
    except ImportError:
        pass
    if status_of is not None:
        try:
            return str(status_of(snapshot, running=running).status)
        except Exception:  # noqa: BLE001 - fall back to the local rule below
            pass
    if running:
        return "running"
    if error:
        return "failed"
    if interrupts:
        return "waiting"
    if snapshot.next:
        return "interrupted"
    return "finished"


def _jsonable(value: Any) -> Any:
    from relaygraph.serve._json import to_json

    try:
        return to_json(value)
    except Exception:  # noqa: BLE001 - a listing shows what it can
        return repr(value)[:1000]


__all__: Sequence[str] = ["IndexRow", "Page", "ThreadIndex", "summarize", "threads_table"]
