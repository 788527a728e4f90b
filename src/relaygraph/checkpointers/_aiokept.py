"""Checkouts of a caller's async pool, kept by the saver between its operations.

A checkout and return of SQLAlchemy's async pool cost greenlet hops, the pool's queue and
the connection's reset on return: on aiosqlite ~0.26 ms (the reset is one more trip to
the connection's thread), on psycopg about the saver's own CPU for a short operation.
On a caller's engine the async saver therefore keeps a couple of the checkouts it takes
for its next operations, under the rules of :class:`KeptForLoop`: on aiosqlite
(``_aiolite.AiosqliteLane``) and on psycopg (``_aio.CallerAutocommit``).

A server session kept on a caller's PostgreSQL engine must not outlive what the
application expects of its engine: ``engine.dispose()`` closes only the connections in
the pool (a ``DROP DATABASE`` right after would fail), and one still kept when the event
loop ends would be left to the garbage collector, which SQLAlchemy reports as an error.
So there the kept checkouts also go back when the pool closes a connection (as the
dispose does) and when the loop shuts down its async generators (``asyncio.run`` and
``asyncio.Runner`` do, last thing before closing it). A SQLite connection is a file
handle and a thread, which aiosqlite's adapter ends cleanly when collected, and may
serve a later loop.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import sqlalchemy as sa

from relaygraph.checkpointers._urls import acts_per_checkout

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

H = TypeVar("H")
T = TypeVar("T")

#: seconds kept checkouts stay out of the pool after the saver's last operation
HOLD_IDLE = 1.0


class KeptForLoop(Generic[H]):
    """Up to ``keep`` checkouts of a caller's pool, kept between operations.

    Kept only while the pool can spare them and the application would not notice:
    - at most two, and one fewer than the pool holds; none from a ``NullPool`` or a
      single shared connection;
    - none while the pool has no other connection to lend (an operation waiting on the
      pool is served by the one given back);
    - none from a pool with ``checkout``, ``checkin`` or ``reset`` listeners or
      ``pool_pre_ping``: the application asked for something to happen at every
      checkout or return, so every operation takes its own;
    - only in the state the pool would have handed them out in (see ``fit``), and no
      older than the pool's ``pool_recycle``.
    They go back to the pool after ``HOLD_IDLE`` seconds without an operation (a timer on
    the loop that kept them) and on ``close()``; one an operation failed on with a
    database error, or was cancelled on, is closed instead. Only the
    loop that kept them uses them; a later loop takes them over once that one has ended
    (``asyncio.run`` once more), and a forked child forgets its parent's unused. After
    the application disposed of its engine, those of the old pool are closed.

    A kind whose connections must not outlive their loop sets ``UNTIL_LOOP_ENDS``: they
    then also go back when the loop shuts down its async generators (a watcher is one),
    and a later loop closes any a loop left without doing so instead of using them.
    """

    #: give the kept checkouts back when their loop shuts down (see the class)
    UNTIL_LOOP_ENDS = False

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.sync_engine = engine.sync_engine
        self._idle: list[H] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._closing: set[asyncio.Task[None]] = set()
        self._pid = os.getpid()
        # left by a loop that ended without shutting down its async generators
        self._stale: list[H] = []
        self._watcher: tuple[asyncio.AbstractEventLoop, AsyncGenerator[None, None]] | None = None
        pool: Any = engine.sync_engine.pool
        size = getattr(pool, "size", None)
        overflow = getattr(pool, "_max_overflow", None)
        if not callable(size) or overflow is None:
            self.keep, self._capacity = 0, None
        elif overflow < 0:
            self.keep, self._capacity = 2, None
        else:
            self._capacity = size() + overflow
            self.keep = max(0, min(2, self._capacity - 1))

    # -- what a kind of checkout supplies ---------------------------------------------------

    async def open(self) -> H:
        """A new checkout of the pool."""
        raise NotImplementedError

    def fairy(self, held: H) -> Any:
        """The pool's ``_ConnectionFairy`` of ``held``."""
        raise NotImplementedError

    def fit(self, held: H) -> bool:
        """Whether ``held`` is as the pool would lend it (no transaction, nothing built
        over it that must be closed)."""
        raise NotImplementedError

    async def give_back(self, held: H, *, invalidate: bool = False) -> None:
        """Return ``held`` to its pool (closing its connection when ``invalidate``)."""
        raise NotImplementedError

    # -- lending --------------------------------------------------------------------------

    async def acquire(self) -> H:
        loop = self._owner()
        while self._stale:
            await self.give_back(self._stale.pop(), invalidate=True)
        while self._idle and self._loop is loop:
            held = self._idle.pop()
            fairy = self.fairy(held)
            if fairy._pool is self.sync_engine.pool and not self._too_old(fairy):
                return held
            await self._back(held)
        return await self.open()

    async def release(self, held: H, reusable: bool) -> None:
        loop = self._owner()
        if (reusable and len(self._idle) < self.keep and self._loop in (None, loop)
                and self.fit(held) and self._spare()):
            self._idle.append(held)
            self._loop, self._last = loop, loop.time()
            if self._timer is None:
                self._timer = loop.call_later(HOLD_IDLE, self._reap)
            await self.kept(loop)
            return
        if not reusable:
            # a database error or a cancellation mid-operation (the trip may still be
            # running, a transaction left open, the caller's level not put back): the
            # connection is closed rather than handed to the application as it is
            await self.give_back(held, invalidate=True)
            return
        await self._back(held)

    async def kept(self, loop: asyncio.AbstractEventLoop) -> None:
        """Called when a checkout was kept on ``loop``."""
        if self.UNTIL_LOOP_ENDS and (self._watcher is None or self._watcher[0] is not loop):
            watcher = self._until_loop_ends()
            await watcher.asend(None)  # started: the loop now knows of it
            self._watcher = (loop, watcher)

    async def _until_loop_ends(self) -> AsyncGenerator[None, None]:
        """Suspended until its loop shuts down its async generators (``aclose()``)."""
        try:
            yield
        finally:
            await self.close()

    async def close(self) -> None:
        """Give the kept checkouts back to the pool now (from their loop)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._idle:
            held = self._idle.pop()
            try:
                await self._back(held)
            except asyncio.CancelledError:
                if self.fairy(held).dbapi_connection is not None:  # not back yet
                    self._idle.append(held)  # still ours: the next close gives it back
                raise

    async def _back(self, held: H) -> None:
        # after the application disposed of its engine, the pool this came from is
        # closed: so is the connection
        await self.give_back(held, invalidate=self.fairy(held)._pool is not (
            self.sync_engine.pool))

    def _owner(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if self._pid != os.getpid():  # a forked child: the parent's are not ours to use
            self._idle, self._loop, self._timer, self._pid = [], None, None, os.getpid()
        elif self._loop is not None and self._loop is not loop and self._loop.is_closed():
            self._loop, self._timer = loop, None
            if self.UNTIL_LOOP_ENDS:  # not to be used by another loop: closed instead
                self._stale.extend(self._idle)
                self._idle = []
        return loop

    def _spare(self) -> bool:
        pool: Any = self.sync_engine.pool
        if acts_per_checkout(pool):
            return False
        return self._capacity is None or pool.checkedout() < self._capacity

    @staticmethod
    def _too_old(fairy: Any) -> bool:
        recycle = fairy._pool._recycle
        return bool(recycle >= 0 and time.time() - fairy._connection_record.starttime
                    > recycle)

    def _reap(self) -> None:
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


class Lender(Protocol[H]):
    """Connections lent to one operation at a time (``KeptForLoop``,
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
