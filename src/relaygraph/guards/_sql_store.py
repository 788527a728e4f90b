"""Breaker state in SQL, so every worker process that shares the database sees one breaker.

Each transition is one short transaction on the caller's engine:

1. PostgreSQL, MySQL/MariaDB: ``SELECT … FOR UPDATE`` the breaker's row, which holds
   every other worker's transition on that breaker until commit. When the row does not
   exist yet, insert a placeholder (``INSERT … ON CONFLICT DO NOTHING``) and lock it.
2. SQLite (no row locks): insert-if-absent first; that write takes the database's write
   lock, so the transaction is a write transaction before it reads, and no other writer
   can interleave (they wait on the busy timeout).
3. Compute the next record with the pure transition and ``UPDATE`` it when it changed.

A deadlock (MySQL's first insert of a new row under gap locks) is retried a few times.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from relaygraph._errors import ConfigurationError, RelaygraphError
from relaygraph._sql import KeyStr, acreate_tables, create_tables, metadata, upsert
from relaygraph.guards._record import BreakerRecord, CorruptRecordError
from relaygraph.guards._stores import Step

logger = logging.getLogger("relaygraph.guards")

breakers_table = sa.Table(
    "relaygraph_breakers",
    metadata,
    sa.Column("name", KeyStr, primary_key=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("outcomes", sa.Text(), nullable=False),
    sa.Column("changed_at", sa.Double(), nullable=False),
    sa.Column("probes", sa.Integer(), nullable=False),
    sa.Column("successes", sa.Integer(), nullable=False),
    sa.Column("probe_at", sa.Double(), nullable=True),
    sa.Column("updated_at", sa.Double(), nullable=False),
)
"""One row per breaker name (part of ``relaygraph._sql.metadata`` for Alembic)."""

# A row inserted only so that it can be locked; reads as "no record yet".
_PLACEHOLDER_UPDATED_AT = -1.0
_PLACEHOLDER = {**BreakerRecord(updated_at=_PLACEHOLDER_UPDATED_AT).to_row()}
_DEADLOCK_RETRIES = 5


def _decode(name: str, row: Any) -> BreakerRecord | None:
    if row is None or row.updated_at == _PLACEHOLDER_UPDATED_AT:
        return None
    try:
        return BreakerRecord.from_row(row)
    except CorruptRecordError as exc:
        logger.warning("breaker %r: stored row is corrupt (%s); resetting it to closed", name, exc)
        return None


def _load(conn: sa.Connection, name: str) -> BreakerRecord | None:
    row = conn.execute(sa.select(breakers_table).where(breakers_table.c.name == name)).first()
    return _decode(name, row)


def _locks_rows(dialect: sa.Dialect) -> bool:
    """Whether ``SELECT … FOR UPDATE`` locks a row (SQLite has no row locks)."""
    return dialect.name != "sqlite"


def _update(
    conn: sa.Connection, name: str, step: Step
) -> tuple[BreakerRecord | None, BreakerRecord]:
    t = breakers_table
    locked = sa.select(t).where(t.c.name == name).with_for_update()
    row = conn.execute(locked).first() if _locks_rows(conn.dialect) else None
    if row is None:
        # First use of this breaker (or SQLite, where this write is what takes the
        # database's write lock before the read below).
        conn.execute(upsert(conn.dialect, t, {"name": name, **_PLACEHOLDER}, keys=["name"]))
        row = conn.execute(locked).first()
    before = _decode(name, row)
    after = step(before)
    if after != before or row is None or row.updated_at == _PLACEHOLDER_UPDATED_AT:
        conn.execute(sa.update(t).where(t.c.name == name).values(**after.to_row()))
    return before, after


def _backoff(attempt: int) -> float:
    # Two workers that deadlocked would likely collide again if they retried in step.
    return random.uniform(0, 0.005 * (attempt + 1))


def _is_deadlock(exc: sa.exc.DBAPIError) -> bool:
    text = str(exc.orig).lower()
    code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    args: tuple[Any, ...] = tuple(getattr(exc.orig, "args", ()))
    return (
        code in ("40001", "40P01")  # serialization failure / deadlock (PostgreSQL)
        or (len(args) > 0 and args[0] == 1213)  # deadlock (MySQL/MariaDB)
        or "deadlock" in text
    )


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not name:
        raise ConfigurationError(f"breaker name must be a non-empty string, got {name!r}")


class SQLBreakerStore:
    """Breaker state in a SQL table on a caller-owned SQLAlchemy engine.

    Put it on the same database as the checkpointer so that every worker process sees one
    breaker. Transitions are atomic under concurrent workers (row lock on PostgreSQL and
    MySQL/MariaDB, a write transaction on SQLite). A row that cannot be decoded is reset to
    a closed breaker with a logged warning.

    Args:
        engine: an ``Engine`` (sync and async methods; the async ones run the sync calls in
            a worker thread) or an ``AsyncEngine`` (async methods only).

    Example:
        >>> store = SQLBreakerStore(sa.create_engine("sqlite:///relaygraph.db"))
        >>> store.setup()                                    # doctest: +SKIP
    """

    table = breakers_table

    def __init__(self, engine: sa.Engine | AsyncEngine) -> None:
        if not isinstance(engine, sa.Engine | AsyncEngine):
            raise ConfigurationError(
                "SQLBreakerStore needs a SQLAlchemy Engine or AsyncEngine, "
                f"got {type(engine).__name__}; create one with sqlalchemy.create_engine(url)"
            )
        self.engine = engine

    # -- setup ---------------------------------------------------------------------------
    def setup(self) -> None:
        """Create the breaker table if it does not exist (idempotent, safe concurrently)."""
        create_tables(self._sync_engine("setup"), [breakers_table])

    async def asetup(self) -> None:
        """Async twin of `setup`."""
        if isinstance(self.engine, AsyncEngine):
            await acreate_tables(self.engine, [breakers_table])
        else:
            await asyncio.to_thread(self.setup)

    # -- sync ----------------------------------------------------------------------------
    def load(self, name: str) -> BreakerRecord | None:
        """The stored record of breaker ``name``, or None."""
        _check_name(name)
        with self._sync_engine("load").connect() as conn:
            return _load(conn, name)

    def update(self, name: str, step: Step) -> tuple[BreakerRecord | None, BreakerRecord]:
        """Apply ``step`` to the record in one locked transaction; returns (before, after)."""
        _check_name(name)
        engine = self._sync_engine("update")
        for attempt in range(_DEADLOCK_RETRIES):
            try:
                with engine.begin() as conn:
                    return _update(conn, name, step)
            except sa.exc.DBAPIError as exc:
                if not _is_deadlock(exc) or attempt == _DEADLOCK_RETRIES - 1:
                    raise RelaygraphError(
                        f"could not update breaker {name!r}: {exc.orig!r}"
                    ) from exc
                time.sleep(_backoff(attempt))
        raise AssertionError("unreachable")  # pragma: no cover

    # -- async ---------------------------------------------------------------------------
    async def aload(self, name: str) -> BreakerRecord | None:
        """Async twin of `load`."""
        _check_name(name)
        if not isinstance(self.engine, AsyncEngine):
            return await asyncio.to_thread(self.load, name)
        async with self.engine.connect() as conn:
            return await conn.run_sync(_load, name)

    async def aupdate(self, name: str, step: Step) -> tuple[BreakerRecord | None, BreakerRecord]:
        """Async twin of `update`."""
        _check_name(name)
        if not isinstance(self.engine, AsyncEngine):
            return await asyncio.to_thread(self.update, name, step)
        for attempt in range(_DEADLOCK_RETRIES):
            try:
                async with self.engine.begin() as conn:
                    return await conn.run_sync(_update, name, step)
            except sa.exc.DBAPIError as exc:
                if not _is_deadlock(exc) or attempt == _DEADLOCK_RETRIES - 1:
                    raise RelaygraphError(
                        f"could not update breaker {name!r}: {exc.orig!r}"
                    ) from exc
                await asyncio.sleep(_backoff(attempt))
        raise AssertionError("unreachable")  # pragma: no cover

    def _sync_engine(self, op: str) -> sa.Engine:
        if isinstance(self.engine, AsyncEngine):
            raise RelaygraphError(
                f"SQLBreakerStore.{op}() was called on a store built from an AsyncEngine; "
                f"use the async API (a{op}(), or run the graph with ainvoke/astream), "
                "or build the store from a sync Engine"
            )
        return self.engine

    def __repr__(self) -> str:
        return f"SQLBreakerStore({self.engine.url.render_as_string(hide_password=True)!r})"
