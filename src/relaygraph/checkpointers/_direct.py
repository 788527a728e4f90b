"""Statements straight on a psycopg connection: compiled once, several per round trip.

SQLAlchemy's execution layer costs about 0.1-0.2 ms of CPU per statement, and a put is
two or three statements. On PostgreSQL the savers therefore run their cached statements
(``Q``, ``P`` and ``R`` messages) on the psycopg connection under the SQLAlchemy one; the
writes of a put go out in one psycopg pipeline: one round trip. The SQL is SQLAlchemy's
own compilation of the statement, and values pass through the column types' bind and
result processors, so rows are stored and read as through ``Connection.execute``.
Driver errors are raised as SQLAlchemy ``DBAPIError`` (the connection invalidated when
it broke), so callers see one error type whichever path ran.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

from relaygraph.checkpointers._protocol import Q

# SQL text, bind processors by name, values bound in the statement itself (LIMIT 1)
Compiled = tuple[str, dict[str, Callable[[Any], Any]], dict[str, Any]]
Reader = tuple[Compiled, Any, list[Callable[[Any], Any] | None]]


def supports(dialect: Dialect) -> bool:
    return dialect.name == "postgresql" and dialect.driver == "psycopg"


class DirectWriter:
    """Compiles cached statements once and runs them on the raw psycopg connection."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self._compiled: dict[Any, Compiled | None] = {}
        self._readers: dict[Any, Reader | None] = {}

    def compiled(self, stmt: Any) -> Compiled | None:
        try:
            return self._compiled[stmt]
        except KeyError:
            pass
        comp = stmt.compile(dialect=self.dialect)
        out: Compiled | None = None
        if not comp.positional and not getattr(comp, "post_compile_params", None):
            procs, fixed = {}, {}
            for name, bind in comp.binds.items():
                proc = bind.type.bind_processor(self.dialect)
                if proc is not None:
                    procs[name] = proc
                if not bind.required and not bind.callable:
                    fixed[name] = bind.value
            out = (comp.string, procs, fixed)
        self._compiled[stmt] = out
        return out

    def _rows(self, compiled: Compiled, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        _, procs, fixed = compiled
        if fixed:
            rows = [{**fixed, **r} for r in rows]
        if not procs:
            return list(rows)
        return [{k: (procs[k](v) if k in procs and v is not None else v) for k, v in r.items()}
                for r in rows]

    def reader(self, stmt: Any) -> Reader | None:
        try:
            return self._readers[stmt]
        except KeyError:
            pass
        compiled = self.compiled(stmt)
        out: Reader | None = None
        if compiled is not None:
            cols = list(stmt.selected_columns)
            keys = list(stmt.selected_columns.keys())
            if len(set(keys)) == len(keys):
                row_type = namedtuple("Row", keys, rename=True)  # type: ignore[misc]
                if list(row_type._fields) == keys:
                    procs = [c.type.result_processor(self.dialect, None) for c in cols]
                    out = (compiled, row_type, procs)
        self._readers[stmt] = out
        return out

    def read(self, conn: sa.Connection, stmt: Any, params: dict[str, Any]) -> list[Any] | None:
        """Rows of a cached SELECT as named tuples; None when it can't run here."""
        reader = self.reader(stmt)
        if reader is None:
            return None
        compiled, row_type, procs = reader
        sql = compiled[0]
        (args,) = self._rows(compiled, [params])
        raw: Any = conn.connection.dbapi_connection
        import psycopg

        try:
            with raw.cursor() as cur:
                cur.execute(sql, args, prepare=True)
                rows = cur.fetchall()
        except psycopg.Error as exc:
            raise self._error(conn, raw, sql, exc) from exc
        if any(procs):
            return [row_type(*[p(v) if p is not None else v for p, v in zip(procs, r, strict=True)])
                    for r in rows]
        return [row_type(*r) for r in rows]

    def _error(self, conn: sa.Connection, raw: Any, sql: str, exc: Exception) -> Exception:
        import psycopg

        broken = bool(raw.closed or raw.broken
                      or self.dialect.is_disconnect(exc, raw, None))  # type: ignore[arg-type]
        if broken:
            # as SQLAlchemy does on a disconnect: every pooled connection made before
            # now is suspect (a server restart drops them all), so the retry gets a new one
            invalidate_pool = getattr(conn.engine.pool, "_invalidate", None)
            if invalidate_pool is not None:
                invalidate_pool(conn.connection, exc)
            conn.invalidate(exc)
        return sa.exc.DBAPIError.instance(sql, None, exc, psycopg.Error,
                                          connection_invalidated=broken, dialect=self.dialect)

    def run(self, conn: sa.Connection, writes: Sequence[Q]) -> list[int] | None:
        """Rowcounts of ``writes``, run in one pipeline; None when a statement can't be."""
        plan = []
        for q in writes:
            compiled = self.compiled(q.stmt)
            if compiled is None:
                return None
            plan.append((compiled[0], self._rows(compiled, q.params)))
        raw: Any = conn.connection.dbapi_connection
        if raw is None:  # pragma: no cover - a closed connection
            return None
        import psycopg

        sql = plan[0][0]
        try:
            cursors = []
            with raw.pipeline():
                for sql, rows in plan:
                    cur = raw.cursor()
                    if len(rows) == 1:
                        cur.execute(sql, rows[0], prepare=True)
                    else:
                        cur.executemany(sql, rows)
                    cursors.append(cur)
            counts = [cur.rowcount for cur in cursors]
            for cur in cursors:
                cur.close()
            return counts
        except psycopg.Error as exc:
            raise self._error(conn, raw, sql, exc) from exc
