"""Statements straight on the driver's connection: compiled once, run without overhead.

SQLAlchemy's execution layer costs about 0.1-0.2 ms of CPU per statement, and a step
costs three to five statements. With psycopg (PostgreSQL) and sqlite3 the savers therefore
run their cached statements (``Q``, ``P`` and ``R`` messages) on the DBAPI connection
under the SQLAlchemy one; with psycopg the writes of a put go out in one pipeline, one
round trip. The SQL is SQLAlchemy's own compilation of the statement, and values pass
through the column types' bind and result processors, so rows are stored and read as
through ``Connection.execute``. Driver errors are raised as SQLAlchemy ``DBAPIError``
(the pool invalidated on a disconnect, as SQLAlchemy does), so callers see one error
type whichever path ran. Statements this cannot run (expanding ``IN`` lists) go through
SQLAlchemy.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

from relaygraph.checkpointers._protocol import Q

if TYPE_CHECKING:  # the sync saver's start-up does without sqlalchemy.ext.asyncio
    from sqlalchemy.ext.asyncio import AsyncConnection

Proc = Callable[[Any], Any]
#: what the sync methods run on: SQLAlchemy's Connection, or a bare pooled checkout
SyncConn: TypeAlias = "sa.Connection | LiteConnection"
# The savers run a fixed set of cached statements; a statement built per call would
# still run, compiled afresh each time, instead of growing the caches without bound.
CACHE_MAX = 256


@dataclass(frozen=True, slots=True)
class Compiled:
    sql: str
    procs: dict[str, Proc]  # bind processors by parameter name
    fixed: dict[str, Any]  # values bound in the statement itself (LIMIT 1)
    order: tuple[str, ...] | None  # parameter order for positional drivers (sqlite3)
    encode: Callable[[dict[str, Any]], Any]  # one row's parameters as the driver takes them


_UNSET = object()


def _encoder(procs: dict[str, Proc], fixed: dict[str, Any],
             order: tuple[str, ...] | None) -> Callable[[dict[str, Any]], Any]:
    """One pass over a row: values bound in the statement filled in, bind processors
    applied (never to None), in the driver's order (a tuple) or by name (a dict)."""
    if order is not None:
        steps = tuple((k, procs.get(k), fixed.get(k, _UNSET)) for k in order)

        def positional(row: dict[str, Any]) -> tuple[Any, ...]:
            out = []
            for k, proc, default in steps:
                v = row[k] if default is _UNSET else row.get(k, default)
                out.append(v if proc is None or v is None else proc(v))
            return tuple(out)

        return positional
    items = tuple(procs.items())

    def named(row: dict[str, Any]) -> dict[str, Any]:
        out = {**fixed, **row} if fixed else dict(row)
        for k, proc in items:
            v = out.get(k)
            if v is not None:
                out[k] = proc(v)
        return out

    return named


@dataclass(frozen=True, slots=True)
class Reader:
    compiled: Compiled
    row_type: Any
    procs: list[Proc | None]  # result processors by column


def supports(dialect: Dialect) -> bool:
    """psycopg (sync or async) and sqlite3 (sync) run cached statements directly."""
    if dialect.name == "postgresql":
        return dialect.driver in ("psycopg", "psycopg_async")
    return not dialect.is_async and (dialect.name, dialect.driver) == ("sqlite", "pysqlite")


class DirectWriter:
    """Compiles cached statements once and runs them on the DBAPI connection."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self.pipelined = dialect.name == "postgresql"
        self._compiled: dict[Any, Compiled | None] = {}
        self._readers: dict[Any, Reader | None] = {}
        if self.pipelined:
            import psycopg

            self._error_base: type[Exception] = psycopg.Error
        else:
            import sqlite3

            self._error_base = sqlite3.Error
            plain_sqlite_binds()

    def compiled(self, stmt: Any) -> Compiled | None:
        try:
            return self._compiled[stmt]
        except KeyError:
            pass
        comp = stmt.compile(dialect=self.dialect)
        out: Compiled | None = None
        if not getattr(comp, "post_compile_params", None) and not getattr(
                comp, "literal_execute_params", None):
            procs, fixed = {}, {}
            for name, bind in comp.binds.items():
                proc = bind.type.bind_processor(self.dialect)
                if proc is not None:
                    procs[name] = proc
                if not bind.required and not bind.callable:
                    fixed[name] = bind.value
            order = tuple(comp.positiontup or ()) if comp.positional else None
            out = Compiled(comp.string, procs, fixed, order, _encoder(procs, fixed, order))
        if len(self._compiled) < CACHE_MAX:
            self._compiled[stmt] = out
        return out

    @staticmethod
    def _args(c: Compiled, rows: Sequence[dict[str, Any]]) -> list[Any]:
        encode = c.encode
        return [encode(r) for r in rows]

    def _plan(self, writes: Sequence[Q]) -> list[tuple[str, list[Any]]] | None:
        plan = []
        for q in writes:
            c = self.compiled(q.stmt)
            if c is None:
                return None
            plan.append((c.sql, self._args(c, q.params)))
        return plan

    def reader(self, stmt: Any) -> Reader | None:
        try:
            return self._readers[stmt]
        except KeyError:
            pass
        compiled = self.compiled(stmt)
        out: Reader | None = None
        if compiled is not None:
            # a SELECT's columns, or what an INSERT ... RETURNING returns
            columns = getattr(stmt, "selected_columns", None)
            if columns is None:
                columns = stmt.exported_columns
            keys = list(columns.keys())
            row_type = namedtuple("Row", keys, rename=True)  # type: ignore[misc]
            if list(row_type._fields) == keys:  # names a tuple can carry
                procs = [c.type.result_processor(self.dialect, None) for c in columns]
                out = Reader(compiled, row_type, procs)
        if len(self._readers) < CACHE_MAX:
            self._readers[stmt] = out
        return out

    def read(self, conn: SyncConn, stmt: Any, params: dict[str, Any]) -> list[Any] | None:
        """Rows of a cached SELECT as named tuples; None when it can't run here."""
        reader = self.reader(stmt)
        if reader is None:
            return None
        c = reader.compiled
        (args,) = self._args(c, [params])
        raw: Any = conn.connection.dbapi_connection
        try:
            # server-side prepares follow the connection's own setting (psycopg's
            # prepare_threshold; None for PgBouncer in transaction mode)
            cur = raw.cursor()
            try:
                cur.execute(c.sql, args)
                rows = cur.fetchall()
            finally:
                cur.close()
        except self._error_base as exc:
            raise self._error(conn, raw, c.sql, exc) from exc
        return _named(reader, rows)

    def execute(self, conn: SyncConn, sql: str) -> None:
        """A parameterless statement (``BEGIN IMMEDIATE``) on the DBAPI connection."""
        raw: Any = conn.connection.dbapi_connection
        try:
            raw.cursor().execute(sql).close()
        except self._error_base as exc:
            raise self._error(conn, raw, sql, exc) from exc

    def run(self, conn: SyncConn, writes: Sequence[Q]) -> list[int] | None:
        """Rowcounts of ``writes``, in order (one pipeline on psycopg); None if it can't."""
        plan = self._plan(writes)
        if plan is None:
            return None
        raw: Any = conn.connection.dbapi_connection
        sql = plan[0][0]
        try:
            if self.pipelined and (len(plan) > 1 or len(plan[0][1]) > 1):
                # several statements or rows: one round trip (one statement and row goes
                # out plainly, which costs psycopg less)
                cursors = []
                with raw.pipeline():
                    for sql, rows in plan:
                        cur = raw.cursor()
                        if len(rows) == 1:
                            cur.execute(sql, rows[0])
                        else:
                            cur.executemany(sql, rows)
                        cursors.append(cur)
                counts = [cur.rowcount for cur in cursors]
                for cur in cursors:
                    cur.close()
                return counts
            counts = []
            cur = raw.cursor()
            try:
                for sql, rows in plan:
                    if len(rows) == 1:
                        cur.execute(sql, rows[0])
                    else:
                        cur.executemany(sql, rows)
                    counts.append(cur.rowcount)
            finally:
                cur.close()
            return counts
        except self._error_base as exc:
            raise self._error(conn, raw, sql, exc) from exc

    def _error(self, conn: SyncConn, raw: Any, sql: str, exc: Exception) -> Exception:
        broken = self._broken(raw, exc)
        if broken:
            # as SQLAlchemy does on a disconnect: every pooled connection made before
            # now is suspect (a server restart drops them all), so the retry gets a new one
            invalidate_pool = getattr(conn.engine.pool, "_invalidate", None)
            if invalidate_pool is not None:
                invalidate_pool(conn.connection, exc)
            conn.invalidate(exc)
        return self._wrap(sql, exc, broken)

    def _broken(self, raw: Any, exc: Exception) -> bool:
        return bool(getattr(raw, "closed", False) or getattr(raw, "broken", False)
                    or self.dialect.is_disconnect(exc, raw, None))  # type: ignore[arg-type]

    def _wrap(self, sql: str, exc: Exception, broken: bool) -> Exception:
        return sa.exc.DBAPIError.instance(sql, None, exc, self._error_base,
                                          connection_invalidated=broken, dialect=self.dialect)

    # -- asyncio (psycopg's AsyncConnection) ----------------------------------------------

    async def _araw(self, conn: AsyncConnection) -> Any:
        fairy = await conn.get_raw_connection()
        return fairy.driver_connection

    async def _aerror(self, conn: AsyncConnection, raw: Any, sql: str,
                      exc: Exception) -> Exception:
        broken = self._broken(raw, exc)
        if broken:
            fairy = await conn.get_raw_connection()
            invalidate_pool = getattr(conn.sync_engine.pool, "_invalidate", None)
            if invalidate_pool is not None:
                # only the pool's timestamp: closing the connection needs the await below
                invalidate_pool(fairy, exc, _checkin=False)
            await conn.invalidate(exc)
        return self._wrap(sql, exc, broken)

    async def aread(self, conn: AsyncConnection, stmt: Any,
                    params: dict[str, Any]) -> list[Any] | None:
        """:meth:`read` on an ``AsyncConnection``."""
        reader = self.reader(stmt)
        if reader is None:
            return None
        c = reader.compiled
        (args,) = self._args(c, [params])
        raw = await self._araw(conn)
        try:
            async with raw.cursor() as cur:
                await cur.execute(c.sql, args)
                rows = await cur.fetchall()
        except self._error_base as exc:
            raise await self._aerror(conn, raw, c.sql, exc) from exc
        return _named(reader, rows)

    async def arun(self, conn: AsyncConnection, writes: Sequence[Q]) -> list[int] | None:
        """:meth:`run` on an ``AsyncConnection`` (several statements: one pipeline)."""
        plan = self._plan(writes)
        if plan is None:
            return None
        raw = await self._araw(conn)
        sql = plan[0][0]
        try:
            if len(plan) == 1 and len(plan[0][1]) == 1:  # one statement and row: plainly
                async with raw.cursor() as cur:
                    await cur.execute(sql, plan[0][1][0])
                    return [cur.rowcount]
            cursors = []
            async with raw.pipeline():
                for sql, rows in plan:
                    cur = raw.cursor()
                    if len(rows) == 1:
                        await cur.execute(sql, rows[0])
                    else:
                        await cur.executemany(sql, rows)
                    cursors.append(cur)
            counts = [cur.rowcount for cur in cursors]
            for cur in cursors:
                await cur.close()
            return counts
        except self._error_base as exc:
            raise await self._aerror(conn, raw, sql, exc) from exc


def _null(value: None) -> None:
    return value


def plain_sqlite_binds() -> None:
    """Let sqlite3 bind ``bytes``, ``memoryview`` and ``None`` without looking for an
    adapter each time.

    Python 3.11's sqlite3 binds ``int``, ``float``, ``str`` and ``bytearray`` as they
    are. Any other value, ``bytes`` and ``None`` included, first goes through its adapter
    protocol, which, with no adapter registered for the type, asks the protocol class for
    an ``__adapt__`` attribute it does not have: an ``AttributeError`` is built, message
    formatted, and thrown away, about 7,000 instructions per parameter (~4% of a put on
    SQLite, where ids, blobs and empty columns are ``bytes``, ``memoryview`` and ``None``).
    Registered adapters are found in a dict first. These return the value itself
    (``bytes(b)`` is ``b``; ``memoryview(m)`` views the same buffer), so what any sqlite3
    connection of the process stores is unchanged; an adapter already registered for one
    of the types is left in place.
    """
    import sqlite3

    adapters: tuple[tuple[type, Any], ...] = (
        (bytes, bytes), (memoryview, memoryview), (type(None), _null))
    for kind, adapter in adapters:
        if (kind, sqlite3.PrepareProtocol) not in sqlite3.adapters:
            sqlite3.register_adapter(kind, adapter)


class LiteConnection:
    """One pooled sqlite3 connection, used without SQLAlchemy's Connection on the way.

    On SQLite a step's statements cost less than SQLAlchemy's ``Connection`` and
    ``Transaction`` around them (~25 us of CPU per operation), and :class:`DirectWriter`
    runs them on the driver connection anyway. This holds the pool's checkout and gives
    ``DirectWriter`` what it uses (``connection``, ``engine``, ``invalidate``); a
    ``Connection`` over the same checkout is built only when a statement needs one (the
    rare statements built per call). Driver errors are raised as SQLAlchemy's
    ``DBAPIError``, as on every other path.
    """

    __slots__ = ("_full", "_restore", "connection", "direct", "engine")

    def __init__(self, engine: sa.Engine, direct: DirectWriter,
                 connection: sa.PoolProxiedConnection | None = None) -> None:
        self.engine = engine
        self.direct = direct
        self._full: sa.Connection | None = None
        self._restore: str | None = None
        if connection is not None:  # a checkout already held (see ``_kept``)
            self.connection = connection
            return
        try:
            self.connection = engine.raw_connection()
        except direct._error_base as exc:
            raise direct._wrap("connect", exc, False) from exc

    def begin_write(self) -> None:
        """``BEGIN IMMEDIATE``, the saver's commit relaxed to ``synchronous=NORMAL`` in WAL.

        In WAL mode a commit with SQLite's default ``synchronous=FULL`` waits for an fsync
        of the log; with ``NORMAL`` it does not, and a crash of the application still
        loses nothing (a power loss may lose the last commits, never corrupt the file).
        ``from_conn_string`` opens its connections with ``NORMAL``. A caller's connection
        left at the default (``FULL``) is switched for the saver's own transaction only
        and switched back before it returns to the pool (see ``close``); any other level
        the caller chose is kept.
        """
        raw: Any = self.connection.dbapi_connection
        info = self.connection.info
        try:
            level = info.get(_SYNC_KEY)
            if level is None:
                cur = raw.cursor()
                try:
                    # looked at once per connection, once its database is in WAL mode
                    # (``setup()`` switches a file to it)
                    if str(cur.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal":
                        (sync,) = cur.execute("PRAGMA synchronous").fetchone()
                        level = info[_SYNC_KEY] = "FULL" if sync == 2 else ""
                finally:
                    cur.close()
            if level and not self._restore:  # (a kept writer switched it before)
                raw.execute("PRAGMA synchronous=NORMAL").close()
                self._restore = level
        except self.direct._error_base as exc:
            raise self.direct._error(self, raw, "PRAGMA synchronous", exc) from exc
        self.direct.execute(self, "BEGIN IMMEDIATE")

    def handed_over(self) -> str | None:
        """The transaction goes on elsewhere (see ``_aiolite``): this no longer restores
        the caller's ``synchronous`` level on close, and returns it for the other side."""
        restore, self._restore = self._restore, None
        return restore

    def take_back(self, restore: str | None) -> None:
        """The inverse of :meth:`handed_over`, on the connection that ends the
        transaction: ``close`` restores ``restore``."""
        self._restore = restore

    def has_connection(self) -> bool:
        """Whether a ``Connection`` was built over the checkout (see ``execute``)."""
        return self._full is not None

    def _sa(self) -> sa.Connection:
        if self._full is None:
            self._full = sa.Connection(self.engine, connection=self.connection)
        return self._full

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        return self._sa().execute(*args, **kwargs)

    def invalidate(self, exc: BaseException | None = None) -> None:
        if self._full is not None:
            self._full.invalidate(exc)
        elif self.connection.dbapi_connection is not None:
            # (not when the pool's invalidation has already closed and checked it in)
            self.connection.invalidate(exc)

    def commit(self) -> None:
        if self._full is not None:
            self._full.commit()
            return
        raw = self.connection.dbapi_connection
        try:
            raw.commit()  # type: ignore[union-attr]
        except self.direct._error_base as exc:
            raise self.direct._error(self, raw, "COMMIT", exc) from exc

    def close(self) -> None:
        """Give the connection back as it came: a transaction still open is rolled back,
        the caller's ``synchronous`` level restored."""
        fairy = self.connection
        raw: Any = fairy.dbapi_connection
        if fairy.is_valid and raw is not None and (
                self._restore or self._full is None and raw.in_transaction):
            try:
                if raw.in_transaction:
                    raw.rollback()
                if self._restore:
                    raw.execute(f"PRAGMA synchronous={self._restore}").close()
            except self.direct._error_base as exc:
                fairy.invalidate(exc)  # not fit to go back into the pool
        if self._full is not None:
            self._full.close()
        else:
            fairy.close()


#: the ``ConnectionRecord.info`` key of a connection's ``synchronous`` level to restore
#: after the saver's write ("FULL"), or "" when the saver leaves it alone
_SYNC_KEY = "relaygraph.sqlite_synchronous"


class AutocommitCheckout(LiteConnection):
    """A psycopg connection of a caller's transactional pool, in autocommit for one
    operation of the saver and handed back as it was lent.

    Switching through SQLAlchemy (``execution_options(isolation_level="AUTOCOMMIT")``)
    resets the connection's characteristics on every checkout and return, which costs
    more than the saver's statements take to send; psycopg's own ``autocommit`` flag is
    set and cleared here instead, on an idle connection (no round trip). A ``Connection``
    over the same checkout is still built for the rare statements the cached path cannot
    run (see :class:`LiteConnection`).
    """

    __slots__ = ("_was",)

    def __init__(self, engine: sa.Engine, direct: DirectWriter) -> None:
        super().__init__(engine, direct)
        raw: Any = self.connection.dbapi_connection
        self._was = bool(raw.autocommit)
        if not self._was:
            try:
                raw.autocommit = True
            except direct._error_base as exc:
                err = direct._error(self, raw, "SET autocommit", exc)
                self.connection.close()
                raise err from exc

    def close(self) -> None:
        fairy = self.connection
        raw: Any = fairy.dbapi_connection
        if not self._was and fairy.is_valid and raw is not None:
            try:
                raw.autocommit = False
            except self.direct._error_base as exc:
                fairy.invalidate(exc)  # not fit to go back into the pool
        if self._full is not None:
            self._full.close()
        else:
            fairy.close()


def _named(reader: Reader, rows: Sequence[Any]) -> list[Any]:
    """Driver rows as the reader's named tuples, through the result processors."""
    row_type, procs = reader.row_type, reader.procs
    if any(procs):
        return [row_type(*[p(v) if p is not None else v for p, v in zip(procs, r, strict=True)])
                for r in rows]
    return [row_type(*r) for r in rows]
