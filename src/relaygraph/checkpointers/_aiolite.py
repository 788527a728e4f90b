"""A caller's aiosqlite engine: each operation in one trip to its connection's thread.

aiosqlite runs every statement on a thread of its own and hands the result back to the
event loop, and SQLAlchemy's ``AsyncConnection`` adds its execution layer around each
(~0.1 ms of CPU per statement). A put is four such trips (``BEGIN``, two statements,
``COMMIT``), and the saver's statements are ones :class:`DirectWriter` runs on sqlite3
directly. So on a caller's ``AsyncEngine`` over a SQLite file, an operation checks out a
connection of the caller's pool (its ``connect`` events have run on it) and runs whole, as
the sync saver does (``_sync.run_lite``), on that connection's aiosqlite thread, which
owns the sqlite3 connection: one trip instead of one per statement, and the saver's
commits relaxed to ``synchronous=NORMAL`` in WAL mode, the caller's level restored before
the connection goes back (see ``LiteConnection.begin_write``).

The rare statement :class:`DirectWriter` cannot run (built per call, such as an expanding
``IN``) needs SQLAlchemy, which cannot run on aiosqlite's thread: the operation then
continues from that statement through the ``AsyncConnection`` over the same checkout, in
the same SQLite transaction.

aiosqlite's thread is reached through ``Connection._execute``, the method its own
statements go through; an aiosqlite without it (or without ``_conn``) is used the usual
way, statement by statement.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa

from relaygraph.checkpointers._aiokept import KeptForLoop, lend
from relaygraph.checkpointers._direct import DirectWriter, LiteConnection
from relaygraph.checkpointers._protocol import After
from relaygraph.checkpointers._sync import Escalate, _drive, _exec
from relaygraph.checkpointers._urls import is_sqlite_file

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

    from relaygraph.checkpointers._base import Op


T = TypeVar("T")


class _Checkout:
    """The part of a pool checkout ``LiteConnection`` uses, over the sqlite3 connection
    that aiosqlite's thread owns. The checkout itself is returned by the event loop."""

    __slots__ = ("dbapi_connection", "info", "invalidated")

    def __init__(self, raw: Any, info: dict[Any, Any]) -> None:
        self.dbapi_connection = raw
        self.info = info
        self.invalidated: BaseException | None = None

    @property
    def is_valid(self) -> bool:
        return self.invalidated is None

    def invalidate(self, exception: BaseException | None = None) -> None:
        self.invalidated = exception or Exception("invalidated")

    def close(self) -> None:
        """Nothing here: the event loop returns the checkout (see ``AiosqliteLane``)."""


class _TripConnection(LiteConnection):
    """``LiteConnection`` on aiosqlite's thread: a statement that needs SQLAlchemy's
    ``Connection`` is handed back to the event loop instead (see :class:`Escalate`)."""

    __slots__ = ()

    def _sa(self) -> sa.Connection:
        raise Escalate


class AiosqliteLane:
    """Runs the saver's operations on a caller's aiosqlite engine (see the module)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.sync_engine = engine.sync_engine
        self.direct = DirectWriter(engine.dialect)
        # the saver's writers, on whichever connections' threads they run, one at a time
        self.write_lock = threading.Lock()
        # up to two checkouts kept between operations (see ``KeptForLoop``)
        self.kept = _LaneCheckouts(engine)

    @staticmethod
    def suits(engine: AsyncEngine) -> bool:
        d = engine.dialect
        if (d.name, d.driver) != ("sqlite", "aiosqlite") or not is_sqlite_file(
                engine.sync_engine.url):
            return False
        # each checkout its own connection: a pool that shares one (StaticPool) could
        # run another operation's trip inside an operation handed over to SQLAlchemy
        if not isinstance(engine.sync_engine.pool, sa.pool.QueuePool | sa.pool.NullPool):
            return False
        import aiosqlite

        return (callable(getattr(aiosqlite.Connection, "_execute", None))
                and isinstance(getattr(aiosqlite.Connection, "_conn", None), property))

    async def run(self, op: Op, afters: list[After], write: bool) -> Any:
        """``op`` whole: a write in one ``BEGIN IMMEDIATE`` transaction."""
        from relaygraph.checkpointers._aio import _drive as adrive

        async def work(held: tuple[AsyncConnection, Any]) -> Any:
            conn, aio, checkout = self._parts(held)
            done, value, restore = await self._call(conn, checkout, aio, self._trip, op,
                                                    afters, write)
            if done:
                return value
            # a statement for SQLAlchemy: on from it, on the same connection and
            # transaction, which is then committed (rolled back on the way out)
            ok = False
            try:
                result = await adrive(conn, op, afters, None, value)
                ok = True
            finally:
                if conn.in_transaction():  # SQLAlchemy's bookkeeping of the same
                    await (conn.commit() if ok else conn.rollback())
                await self._call(conn, checkout, aio, self._finish, ok, restore)
            return result

        return await lend(self.kept, work)

    async def execute(self, msg: Any) -> Any:
        """One statement of a streaming read."""
        from relaygraph.checkpointers._aio import _exec as aexec

        async def work(held: tuple[AsyncConnection, Any]) -> Any:
            conn, aio, checkout = self._parts(held)
            done, value = await self._call(conn, checkout, aio, self._statement, msg)
            return value if done else await aexec(conn, msg, None)

        return await lend(self.kept, work)

    @staticmethod
    def _parts(held: tuple[AsyncConnection, Any]) -> tuple[AsyncConnection, Any, _Checkout]:
        conn, fairy = held
        return conn, fairy.driver_connection, _Checkout(None, fairy.info)

    @staticmethod
    async def _call(conn: AsyncConnection, checkout: _Checkout, aio: Any,
                    fn: Callable[..., T], *args: Any) -> T:
        """``fn(aio, checkout, *args)`` on aiosqlite's thread; a connection it found
        broken is invalidated here, where SQLAlchemy can close it."""
        try:
            return await aio._execute(fn, aio, checkout, *args)  # type: ignore[no-any-return]
        finally:
            if checkout.invalidated is not None:
                await conn.invalidate(checkout.invalidated)

    # -- on aiosqlite's thread ------------------------------------------------------------

    def _connection(self, aio: Any, checkout: _Checkout) -> _TripConnection:
        checkout.dbapi_connection = aio._conn
        return _TripConnection(self.sync_engine, self.direct, connection=checkout)  # type: ignore[arg-type]

    def _finish(self, aio: Any, checkout: _Checkout, commit: bool,
                restore: str | None) -> None:
        """After a hand-over: the transaction the trip began committed (or rolled back)
        and the caller's ``synchronous`` level put back, as ``LiteConnection`` does."""
        conn = self._connection(aio, checkout)
        conn.take_back(restore)
        try:
            if commit:
                conn.commit()
        finally:
            conn.close()  # rolls back what did not commit, restores the level

    def _statement(self, aio: Any, checkout: _Checkout, msg: Any) -> tuple[bool, Any]:
        conn = self._connection(aio, checkout)
        try:
            return True, _exec(conn, msg, self.direct)
        except Escalate:
            return False, None

    def _trip(self, aio: Any, checkout: _Checkout, op: Op, afters: list[After],
              write: bool) -> tuple[bool, Any, str | None]:
        """``(True, result, None)``, or ``(False, message, restore)`` when the message
        needs SQLAlchemy: the transaction is then left open for the loop to finish, and
        ``restore`` is the ``synchronous`` level to put back after it."""
        conn = self._connection(aio, checkout)
        if not write:
            try:
                return True, _drive(conn, op, afters, self.direct), None
            except Escalate as esc:
                return False, esc.msg, None
            finally:
                conn.close()  # (nothing to roll back: reads open no transaction)
        # up to its first statement (a put's rows encoded) before the locks, as run_lite
        try:
            first = next(op)
        except StopIteration as stop:
            return True, stop.value, None
        with self.write_lock:
            try:
                conn.begin_write()
                result = _drive(conn, op, afters, self.direct, first)
                conn.commit()
            except Escalate as esc:
                return False, esc.msg, conn.handed_over()
            except BaseException:
                conn.close()  # rolls back, restores the caller's level
                raise
        conn.close()
        return True, result, None


class _LaneCheckouts(KeptForLoop["tuple[AsyncConnection, Any]"]):
    """The lane's checkouts: an ``AsyncConnection`` of the caller's engine and its pool
    checkout (whose driver connection is the aiosqlite one)."""

    async def open(self) -> tuple[AsyncConnection, Any]:
        conn = await self.engine.connect()
        try:
            return conn, await conn.get_raw_connection()
        except BaseException:
            await conn.close()
            raise

    def fairy(self, held: tuple[AsyncConnection, Any]) -> Any:
        return held[1]

    def fit(self, held: tuple[AsyncConnection, Any]) -> bool:
        conn = held[0]
        return not conn.invalidated and not conn.in_transaction()

    async def give_back(self, held: tuple[AsyncConnection, Any], *,
                        invalidate: bool = False) -> None:
        if invalidate:
            await held[0].invalidate()
        await held[0].close()
