"""Runs and thread metadata in SQL, so that every server process on one database sees them.

``relaygraph_runs`` holds one row per run of LangGraph's client protocol (its status is what
``runs.get`` / ``runs.join`` read, whichever process executes the run).
``relaygraph_thread_meta`` keeps the metadata clients attach to threads, and
``relaygraph_thread_meta_kv`` one row per top-level metadata key so that
``threads.search(metadata=...)`` filters in SQL by exact value. The tables live in the same
database as the saver and the thread index (``relaygraph_serve_threads``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import sqlalchemy as sa

from relaygraph._sql import (
    Key,
    LargeText,
    acreate_tables,
    create_tables,
    metadata,
    run_in_tx,
    upsert,
)

RunStatus = Literal["pending", "running", "error", "success", "timeout", "interrupted"]
TERMINAL: frozenset[str] = frozenset({"error", "success", "timeout", "interrupted"})

runs_table = sa.Table(
    "relaygraph_runs",
    metadata,
    sa.Column("run_id", Key(64), primary_key=True),
    sa.Column("thread_id", Key(255), nullable=False),
    sa.Column("tenant", Key(64), nullable=False),
    sa.Column("assistant_id", sa.String(64), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("multitask_strategy", sa.String(16), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("error", LargeText, nullable=True),
    sa.Column("metadata", LargeText, nullable=False),
    sa.Index("ix_relaygraph_runs_thread", "thread_id", "created_at"),
)

thread_meta_table = sa.Table(
    "relaygraph_thread_meta",
    metadata,
    sa.Column("thread_id", Key(255), primary_key=True),
    sa.Column("tenant", Key(64), nullable=False),
    sa.Column("graph_id", sa.String(64), nullable=True),
    sa.Column("metadata", LargeText, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Index("ix_relaygraph_thread_meta_tenant", "tenant", "updated_at", "thread_id"),
)

thread_meta_kv_table = sa.Table(
    "relaygraph_thread_meta_kv",
    metadata,
    sa.Column("thread_id", Key(255), primary_key=True),
    sa.Column("key", Key(128), primary_key=True),
    # sha256 of the value's canonical JSON: exact-match filters use an index of fixed width
    sa.Column("value_hash", sa.String(64), nullable=False),
    sa.Index("ix_relaygraph_thread_meta_kv_match", "key", "value_hash", "thread_id"),
)

TABLES = [runs_table, thread_meta_table, thread_meta_kv_table]


def iso(ts: float) -> str:
    """Epoch seconds as an ISO-8601 UTC string."""
    return datetime.fromtimestamp(ts, UTC).isoformat()


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def value_hash(value: Any) -> str:
    """The hash a metadata value is matched by."""
    return hashlib.sha256(_canonical(value).encode("utf-8")).hexdigest()


def _loads(raw: str | None) -> dict[str, Any]:
    try:
        value = json.loads(raw or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


@dataclass(frozen=True)
class RunRecord:
    """One run as stored (``thread_id`` is the internal, tenant-namespaced id)."""

    run_id: str
    thread_id: str
    tenant: str
    assistant_id: str
    status: str
    multitask_strategy: str
    created_at: float
    updated_at: float
    error: str | None
    metadata: dict[str, Any]

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


@dataclass(frozen=True)
class ThreadMeta:
    """A thread's client-visible metadata (``thread_id`` internal)."""

    thread_id: str
    tenant: str
    graph_id: str | None
    metadata: dict[str, Any]
    created_at: float
    updated_at: float


def _run(r: Any) -> RunRecord:
    return RunRecord(r.run_id, r.thread_id, r.tenant, r.assistant_id, r.status,
                     r.multitask_strategy, r.created_at, r.updated_at, r.error,
                     _loads(r.metadata))


def _meta(r: Any) -> ThreadMeta:
    return ThreadMeta(r.thread_id, r.tenant, r.graph_id, _loads(r.metadata), r.created_at,
                      r.updated_at)


class RunStore:
    """The protocol's runs and thread metadata on a sync or async SQLAlchemy engine.

    Args:
        engine: ``sa.Engine`` or ``AsyncEngine`` (the saver's, or the thread index's).
        clock: seconds since the epoch.
    """

    def __init__(self, engine: Any, *, clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self.clock = clock
        self._async = hasattr(engine, "sync_engine")

    async def _tx(self, fn: Callable[[sa.Connection], Any]) -> Any:
        return await run_in_tx(self.engine, fn)

    async def asetup(self) -> None:
        """Create the tables (idempotent, safe from several processes at once)."""
        if self._async:
            await acreate_tables(self.engine, TABLES)
        else:
            await asyncio.to_thread(create_tables, self.engine, TABLES)

    # -- runs

    async def acreate_run(self, *, run_id: str, thread_id: str, tenant: str,
                          assistant_id: str, multitask_strategy: str,
                          metadata: Mapping[str, Any] | None = None) -> RunRecord:
        now = self.clock()
        row = {"run_id": run_id, "thread_id": thread_id, "tenant": tenant,
               "assistant_id": assistant_id, "status": "pending",
               "multitask_strategy": multitask_strategy, "created_at": now,
               "updated_at": now, "error": None,
               "metadata": _canonical(dict(metadata or {}))}
        await self._tx(lambda c: c.execute(runs_table.insert().values(**row)))
        return _run(_Obj(row))

    async def aset_status(self, run_id: str, status: str, *, error: str | None = None,
                          only_if: Sequence[str] | None = None) -> bool:
        """Set a run's status; with ``only_if``, only from one of those statuses.

        Returns:
            Whether a row changed.
        """
        t = runs_table
        q = t.update().where(t.c.run_id == run_id)
        if only_if is not None:
            q = q.where(t.c.status.in_(list(only_if)))
        values: dict[str, Any] = {"status": status, "updated_at": self.clock()}
        if error is not None:
            values["error"] = error[:4000]
        q = q.values(**values)
        return bool(await self._tx(lambda c: c.execute(q).rowcount))

    async def aget_run(self, run_id: str) -> RunRecord | None:
        t = runs_table
        r = await self._tx(lambda c: c.execute(sa.select(t).where(t.c.run_id == run_id)).first())
        return None if r is None else _run(r)

    async def alist_runs(self, thread_id: str, *, limit: int = 10, offset: int = 0,
                         status: str | None = None) -> list[RunRecord]:
        t = runs_table
        q = sa.select(t).where(t.c.thread_id == thread_id)
        if status is not None:
            q = q.where(t.c.status == status)
        q = q.order_by(t.c.created_at.desc(), t.c.run_id.desc()).limit(limit).offset(offset)
        return [_run(r) for r in await self._tx(lambda c: list(c.execute(q)))]

    async def aactive_runs(self, thread_id: str) -> list[RunRecord]:
        """Runs on the thread that are pending or running, oldest first."""
        t = runs_table
        q = (sa.select(t).where(t.c.thread_id == thread_id,
                                t.c.status.in_(["pending", "running"]))
             .order_by(t.c.created_at))
        return [_run(r) for r in await self._tx(lambda c: list(c.execute(q)))]

    async def adelete_run(self, run_id: str) -> None:
        t = runs_table
        await self._tx(lambda c: c.execute(t.delete().where(t.c.run_id == run_id)))

    # -- thread metadata

    async def aput_thread(self, thread_id: str, tenant: str, graph_id: str | None,
                          meta: Mapping[str, Any], *, merge: bool = True) -> ThreadMeta:
        """Create or update a thread's metadata (merged into what is there by default)."""
        now = self.clock()

        def go(c: sa.Connection) -> ThreadMeta:
            t, kv = thread_meta_table, thread_meta_kv_table
            old = c.execute(sa.select(t).where(t.c.thread_id == thread_id)).first()
            merged = {**(_loads(old.metadata) if old is not None and merge else {}), **meta}
            gid = graph_id if graph_id is not None else (old.graph_id if old else None)
            row = {"thread_id": thread_id, "tenant": tenant, "graph_id": gid,
                   "metadata": _canonical(merged),
                   "created_at": old.created_at if old is not None else now,
                   "updated_at": now}
            c.execute(upsert(c.dialect, t, row, keys=["thread_id"],
                             update=["graph_id", "metadata", "updated_at"]))
            c.execute(kv.delete().where(kv.c.thread_id == thread_id))
            rows = [{"thread_id": thread_id, "key": k, "value_hash": value_hash(v)}
                    for k, v in merged.items() if isinstance(k, str) and len(k) <= 128]
            if rows:
                c.execute(kv.insert(), rows)
            return _meta(_Obj(row))

        return await self._tx(go)  # type: ignore[no-any-return]

    async def atouch_thread(self, thread_id: str) -> None:
        """Mark a thread updated now (a run started on it)."""
        t = thread_meta_table
        q = t.update().where(t.c.thread_id == thread_id).values(updated_at=self.clock())
        await self._tx(lambda c: c.execute(q))

    async def aget_thread(self, thread_id: str) -> ThreadMeta | None:
        t = thread_meta_table
        r = await self._tx(lambda c: c.execute(
            sa.select(t).where(t.c.thread_id == thread_id)).first())
        return None if r is None else _meta(r)

    async def adelete_thread(self, thread_id: str) -> None:
        """Forget a thread's metadata and runs."""

        def go(c: sa.Connection) -> None:
            for table in TABLES:
                c.execute(table.delete().where(table.c.thread_id == thread_id))

        await self._tx(go)

    async def asearch_threads(self, tenant: str, *, meta: Mapping[str, Any] | None = None,
                              ids: Sequence[str] | None = None,
                              statuses: Sequence[str] | None = None,
                              limit: int = 10, offset: int = 0,
                              order: Literal["asc", "desc"] = "desc",
                              sort_by: str | None = None, count: bool = False) -> Any:
        """A tenant's threads, newest update first, filtered by exact metadata values.

        Threads with protocol metadata come from ``relaygraph_thread_meta``; without a
        metadata filter, threads only the listing index knows (run through LangServe or
        decided in the inbox) are included too, with empty metadata. ``statuses`` filters
        on the index's status column (``relaygraph_serve_threads``), which every run
        updates. ``sort_by`` is ``updated_at`` (default, also for ``state_updated_at``),
        ``created_at``, ``thread_id`` or ``status`` (the SDK's: ``busy``, ``error``,
        ``idle``, ``interrupted``, alphabetically). With ``count=True`` returns the number
        of matches.
        """
        from relaygraph.serve._index import threads_table

        t, kv, ix = thread_meta_table, thread_meta_kv_table, threads_table
        status = sa.select(ix.c.status).where(ix.c.thread_id == t.c.thread_id)
        q = sa.select(t.c.thread_id, t.c.tenant, t.c.graph_id, t.c.metadata, t.c.created_at,
                      t.c.updated_at, status.scalar_subquery().label("status")
                      ).where(t.c.tenant == tenant)
        for key, value in (meta or {}).items():
            q = q.where(sa.exists().where(kv.c.thread_id == t.c.thread_id, kv.c.key == key,
                                          kv.c.value_hash == value_hash(value)))
        if ids is not None:
            q = q.where(t.c.thread_id.in_(list(ids)))
        if statuses is not None:
            q = q.where(sa.exists().where(ix.c.thread_id == t.c.thread_id,
                                          ix.c.status.in_(list(statuses))))
        both: Any = q
        if not meta:
            q2 = sa.select(ix.c.thread_id, ix.c.tenant, ix.c.graph_id,
                           sa.literal("{}", LargeText).label("metadata"), ix.c.created_at,
                           ix.c.updated_at, ix.c.status).where(
                ix.c.tenant == tenant,
                ~sa.exists().where(t.c.thread_id == ix.c.thread_id))
            if ids is not None:
                q2 = q2.where(ix.c.thread_id.in_(list(ids)))
            if statuses is not None:
                q2 = q2.where(ix.c.status.in_(list(statuses)))
            both = sa.union_all(q, q2)
        rows = both.subquery()
        if count:
            cq = sa.select(sa.func.count()).select_from(rows)
            return await self._tx(lambda c: int(c.execute(cq).scalar_one()))
        column = {"created_at": rows.c.created_at, "thread_id": rows.c.thread_id,
                  "status": _sdk_status_order(rows.c.status)}.get(sort_by or "",
                                                                  rows.c.updated_at)
        by = [column, rows.c.thread_id] if column is not rows.c.thread_id else [column]
        page = (sa.select(rows)
                .order_by(*(c.desc() if order == "desc" else c.asc() for c in by))
                .limit(limit).offset(offset))
        return [_meta(r) for r in await self._tx(lambda c: list(c.execute(page)))]


def _sdk_status_order(status: Any) -> Any:
    """The SDK's thread status of the index's (``SDK_TO_RELAYGRAPH``), as a sort key."""
    from relaygraph.serve._protocol import SDK_TO_RELAYGRAPH

    return sa.case(*((status.in_(ours), sdk) for sdk, ours in SDK_TO_RELAYGRAPH.items()),
                   else_="idle")


class _Obj:
    """Attribute access over a dict (a row we wrote ourselves)."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self.__dict__.update(values)
