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

import asyncio
import os
import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import sqlalchemy as sa

from relaygraph.checkpointers._direct import DirectWriter, LiteConnection
from relaygraph.checkpointers._protocol import After
from relaygraph.checkpointers._sync import Escalate, _drive, _exec
from relaygraph.checkpointers._urls import is_sqlite_file

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

    from relaygraph.checkpointers._base import Op


T = TypeVar("T")
H = TypeVar("H")


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
        # Checkouts kept between operations: a checkout and return of the caller's pool
        # cost ~0.26 ms (greenlet hops, and the rollback of its reset on return, one more
        # trip to aiosqlite's thread). Two, for a put and a task's writes under way at
        # once. Only the loop that took them uses them; they go back to the pool after
        # HOLD_IDLE seconds without an operation.
        self._idle: list[tuple[AsyncConnection, Any]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._closing: set[asyncio.Task[None]] = set()
        self._pid = os.getpid()
        self.keep = _keep(engine)
        pool: Any = engine.sync_engine.pool
        overflow = getattr(pool, "_max_overflow", -1)
        self._capacity = pool.size() + overflow if self.keep and overflow >= 0 else None

    @staticmethod
    def suits(engine: AsyncEngine) -> bool:
        d = engine.dialect
        if (d.name, d.driver) != ("sqlite", "aiosqlite") or not is_sqlite_file(
                engine.sync_engine.url):
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
                await aio._execute(self._finish, aio, ok, restore)
            return result

        return await lend(self, work)

    async def execute(self, msg: Any) -> Any:
        """One statement of a streaming read."""
        from relaygraph.checkpointers._aio import _exec as aexec

        async def work(held: tuple[AsyncConnection, Any]) -> Any:
            conn, aio, checkout = self._parts(held)
            done, value = await self._call(conn, checkout, aio, self._statement, msg)
            return value if done else await aexec(conn, msg, None)

        return await lend(self, work)

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

    # -- the kept checkout ----------------------------------------------------------------

    async def acquire(self) -> tuple[AsyncConnection, Any]:
        loop = self._owner()
        while self._idle and self._loop is loop:
            idle = self._idle.pop()
            if idle[1]._pool is self.sync_engine.pool:
                return idle
            await self._give_back(*idle)  # from before the engine was disposed
        conn = await self.engine.connect()
        try:
            return conn, await conn.get_raw_connection()
        except BaseException:
            await conn.close()
            raise

    async def release(self, held: tuple[AsyncConnection, Any], reusable: bool) -> None:
        conn, fairy = held
        loop = self._owner()
        if (reusable and len(self._idle) < self.keep and not conn.invalidated
                and not conn.in_transaction() and self._loop in (None, loop)
                and self._spare()):
            self._idle.append((conn, fairy))
            self._loop, self._last = loop, loop.time()
            if self._timer is None:
                self._timer = loop.call_later(HOLD_IDLE, self._reap)
            return
        await conn.close()

    def _owner(self) -> asyncio.AbstractEventLoop:
        """The running loop, which takes the kept checkouts over when the loop that kept
        them has ended (``asyncio.run`` once more: aiosqlite's thread serves any loop).
        In a forked child the parent's are forgotten, unused: their threads are not in
        this process."""
        loop = asyncio.get_running_loop()
        if self._pid != os.getpid():
            self._idle, self._loop, self._timer, self._pid = [], None, None, os.getpid()
        elif self._loop is not None and self._loop is not loop and self._loop.is_closed():
            self._loop, self._timer = loop, None
        return loop

    def _spare(self) -> bool:
        """Whether the pool has another connection to lend: none is kept while an
        operation may be waiting for one (it gets the one given back)."""
        pool: Any = self.sync_engine.pool
        return self._capacity is None or pool.checkedout() < self._capacity

    def _reap(self) -> None:
        """Give the kept checkouts back once they sat HOLD_IDLE seconds unused."""
        self._timer = None
        loop = self._loop
        if not self._idle or loop is None:
            return
        wait = self._last + HOLD_IDLE - loop.time()
        if wait > 0:
            self._timer = loop.call_later(wait, self._reap)
            return
        task = loop.create_task(self.close())
        self._closing.add(task)  # (a task with no reference may be collected unfinished)
        task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        """Give the kept checkouts back to the pool now (from their loop)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        idle, self._idle = self._idle, []
        for held in idle:
            await self._give_back(*held)

    async def _give_back(self, conn: AsyncConnection, fairy: Any) -> None:
        if fairy._pool is not self.sync_engine.pool:
            # the application disposed of its engine meanwhile: the pool this came from
            # is closed, so is the connection
            await conn.invalidate()
        await conn.close()

    # -- on aiosqlite's thread ------------------------------------------------------------

    def _connection(self, aio: Any, checkout: _Checkout) -> _TripConnection:
        checkout.dbapi_connection = aio._conn
        return _TripConnection(self.sync_engine, self.direct, connection=checkout)  # type: ignore[arg-type]

    def _finish(self, aio: Any, commit: bool, restore: str | None) -> None:
        """After a hand-over: the transaction the trip began ended, the caller's
        ``synchronous`` level put back."""
        raw = aio._conn
        try:
            if raw.in_transaction:
                if commit:
                    raw.commit()
                else:
                    raw.rollback()
            if restore:
                raw.execute(f"PRAGMA synchronous={restore}").close()
        except self.direct._error_base as exc:
            raise self.direct._wrap("COMMIT" if commit else "ROLLBACK", exc, False) from exc

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


class Lender(Protocol[H]):
    """Connections lent to one operation at a time (``AiosqliteLane``,
    ``_aio.HeldConnections``)."""

    async def acquire(self) -> H: ...

    async def release(self, held: H, reusable: bool) -> None: ...


async def lend(pool: Lender[H], work: Callable[[H], Awaitable[T]]) -> T:
    """``work`` on a connection of ``pool``, which gets it back reusable unless a
    database error (or a cancellation) may have left it in another state; the operation's
    own errors (a corrupt row, a refused id) leave it as it was."""
    held = await pool.acquire()
    reusable = False
    try:
        result = await work(held)
        reusable = True
        return result
    except Exception as exc:
        reusable = not isinstance(exc, sa.exc.DBAPIError)
        raise
    finally:
        await pool.release(held, reusable)


#: seconds the lane's checkouts stay out of the pool after its last operation
HOLD_IDLE = 1.0


def _keep(engine: AsyncEngine) -> int:
    """How many checkouts the pool can spare between operations: two at most, and one
    fewer than the pool holds (as ``_kept.KeptCheckouts``); none from a ``NullPool`` (the
    application wants none kept) or a single shared connection."""
    pool = engine.sync_engine.pool
    size = getattr(pool, "size", None)
    if not callable(size) or not hasattr(pool, "_max_overflow"):
        return 0
    overflow = pool._max_overflow  # -1: no limit
    if overflow < 0:
        return 2
    return max(0, min(2, size() + overflow - 1))


