"""Checkouts of PostgreSQL pools, kept between the saver's operations.

A pool checkout and return cost SQLAlchemy's pool about a tenth of a put's CPU on
PostgreSQL (its queue, its events, the connection's record and reset). ``from_conn_string``
gives the saver pools of its own for its autocommitted work (reads and puts; task writes),
which nothing else checks out, so a connection can stay out of its pool between two
operations and skip both (:class:`KeptCheckouts`). From a caller's pool the saver keeps
one connection for a moment at a time (:class:`CallerCheckouts`). Each class gives the
rules that keep this safe.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, Protocol

import sqlalchemy as sa

from relaygraph.checkpointers._direct import AutocommitCheckout, DirectWriter, LiteConnection
from relaygraph.checkpointers._urls import acts_per_checkout


class Lender(Protocol):
    """Lends the saver's operations a connection and takes it back (what
    ``SQLAlchemySaver`` needs of :class:`KeptCheckouts` and :class:`CallerCheckouts`)."""

    def acquire(self) -> LiteConnection: ...

    def release(self, conn: Any) -> None: ...

    def close(self) -> None: ...


class KeptCheckout(LiteConnection):
    """One psycopg connection of an autocommitted pool, without SQLAlchemy's
    ``Connection``; :class:`KeptCheckouts` lends it out and takes it back."""

    __slots__ = ()

    def close(self) -> None:
        """Back to the pool (a ``Connection`` built over the checkout closes it). The
        pool resets nothing on return (it is autocommitted): a transaction the connection
        was left in is rolled back here, and one still running a statement is closed."""
        fairy: Any = self.connection
        raw: Any = fairy.dbapi_connection
        if self._full is None and fairy.is_valid and raw is not None and not raw.closed:
            status = raw.pgconn.transaction_status
            try:
                if status == _ACTIVE:
                    fairy.invalidate()
                elif status != _IDLE:
                    raw.rollback()
            except self.direct._error_base as exc:
                fairy.invalidate(exc)
        if self._full is not None:
            self._full.close()
        else:
            fairy.close()


class KeptCheckouts:
    """Idle checkouts of one autocommitted pool the saver owns, lent one per operation.

    An operation takes an idle checkout, or checks one out of the pool as before, and
    gives it back here afterwards. Kept are at most the pool's size less one, and only
    while the pool still has a connection to hand out: an operation that found none idle
    and waits on the pool is then served by the next one given back, so keeping never
    makes an operation wait longer than the pool alone would. Not kept, but returned to
    the pool: a connection that is broken, in a transaction, past the pool's
    ``pool_recycle`` age, or over which a ``Connection`` was built (the rare statements
    the cached path cannot run). A broken connection sends the idle ones back too (a
    server restart ends them all, and the pool replaces them on their next checkout).
    In a forked child the parent's checkouts are forgotten, not used or closed.
    """

    def __init__(self, engine: sa.Engine, direct: DirectWriter) -> None:
        self.engine = engine
        self.direct = direct
        self._idle: list[KeptCheckout] = []
        self._pid = os.getpid()
        pool: Any = engine.pool
        self._pool = pool
        self._size: int = pool.size()
        self._keep = self._size - 1
        self._recycle: float = pool._recycle

    @staticmethod
    def suits(engine: sa.Engine) -> bool:
        """A ``QueuePool`` of two connections or more, without overflow, on psycopg
        (``from_conn_string``'s own pools)."""
        pool: Any = engine.pool
        return (type(pool) is sa.pool.QueuePool and pool._max_overflow == 0
                and pool.size() >= 2 and engine.dialect.driver == "psycopg")

    def acquire(self) -> KeptCheckout:
        if self._pid != os.getpid():
            self._idle, self._pid = [], os.getpid()
        while True:
            try:
                conn = self._idle.pop()  # atomic: no lock
            except IndexError:
                return KeptCheckout(self.engine, self.direct)
            if _young(conn, self._recycle):
                return conn
            conn.close()  # too old: the pool reconnects it on its next checkout

    def release(self, conn: KeptCheckout) -> None:
        fairy: Any = conn.connection
        if self.engine.pool is not self._pool:  # disposed: what it lent is not kept
            self.close()
            self._pool = self.engine.pool
        elif (_reusable(conn) and len(self._idle) < self._keep and self._pid == os.getpid()
                and self.engine.pool.checkedout() < self._size):  # type: ignore[attr-defined]
            self._idle.append(conn)
            return
        broken = not fairy.is_valid
        conn.close()
        if broken:
            self.close()

    def close(self) -> None:
        """Give every idle checkout back to the pool."""
        idle, self._idle = self._idle, []
        if self._pid == os.getpid():
            for conn in idle:
                conn.close()


def _young(conn: LiteConnection, recycle: float) -> bool:
    """``conn`` is within the pool's ``pool_recycle`` age (-1: no limit)."""
    rec: Any = conn.connection._connection_record  # type: ignore[attr-defined]
    return recycle < 0 or time.time() - float(rec.starttime) <= recycle


def _reusable(conn: LiteConnection) -> bool:
    """``conn`` can serve another operation as it is (see :func:`reusable_checkout`)."""
    return reusable_checkout(conn.connection, conn._full)


def reusable_checkout(fairy: Any, built: object | None) -> bool:
    """A psycopg checkout (sync or async) can serve another operation as it is: valid,
    connected, idle (no transaction), and nothing (``built``) made over it."""
    raw: Any = fairy.driver_connection
    return (built is None and fairy.is_valid and raw is not None
            and raw.pgconn.status == _OK and raw.pgconn.transaction_status == _IDLE)


def close_if_orphaned(fairy: Any, pool: Any) -> None:
    """Close ``fairy``'s connection if it belongs to a pool other than ``pool`` (the
    engine's now: the other was disposed). A disposed pool closes what it holds when it
    is disposed, not what comes back to it later."""
    if fairy._pool is not pool and fairy.dbapi_connection is not None:
        fairy.invalidate()


def listen_for_closes(owner: Any, pool: Any, closed: Callable[[Any], None]) -> Any:
    """Call ``closed(owner)`` whenever ``pool`` closes a connection while ``owner``
    lives (held weakly); the listener, for :func:`stop_listening`. On the pool, not the
    engine: an engine listener switches on SQLAlchemy's event dispatch for every
    statement the application runs."""
    ref = weakref.ref(owner)

    def listener(_dbapi_connection: Any, _record: Any) -> None:
        this = ref()
        if this is not None:
            closed(this)

    sa.event.listen(pool, "close", listener)
    return listener


def stop_listening(pool: Any, listener: Any) -> None:
    with contextlib.suppress(Exception):  # (a pool replaced since, or shutdown)
        sa.event.remove(pool, "close", listener)


_IDLE, _ACTIVE = 0, 1  # psycopg.pq.TransactionStatus (libpq's, as ints: no enum built)
_OK = 0  # psycopg.pq.ConnStatus.OK


class CallerCheckouts:
    """Autocommitted checkouts of a caller's psycopg pool, each kept for a moment
    between the saver's operations.

    On a caller's engine an operation otherwise checks a connection out, switches it to
    autocommit (unless the engine's isolation level is ``AUTOCOMMIT``), runs, switches
    it back and returns it (``AutocommitCheckout``): about a tenth of a put's CPU. Here
    the connection an operation used stays out of the pool, still in autocommit and
    outside any transaction, for the next operation of the same kind, and goes back
    (autocommit off, as it was lent) after a moment without one (``watch`` is given
    this, and calls :meth:`reap`), when the saver is collected, at once after any
    failure, and whenever the pool closes a connection: ``engine.dispose()`` closes what
    is in the pool, and the kept one, given back then, is closed with the rest, so no
    server session of the saver's outlives the dispose (a ``DROP DATABASE`` right after
    works; a connection kept across a dispose that closed nothing, and so sent no event,
    has its session ended when it is next looked at, by an operation, the watcher or the
    saver's collection). The saver's one listener for this is on the pool's ``close``
    event, which acts on nothing else; a listener on the engine would switch on
    SQLAlchemy's event dispatch for every statement the application runs. At most one
    connection is kept, and only while the pool has one more to lend without overflow;
    none from a pool whose application asked for something at every checkout
    (``checkout``, ``checkin`` or ``reset`` listeners, ``pool_pre_ping``), nor one past
    the pool's ``pool_recycle`` age. In a forked child the parent's connection is
    forgotten, not used or closed.
    """

    __slots__ = ("_checked", "_conn", "_direct", "_engine", "_listening", "_lock", "_pid",
                 "_pool", "_watch", "last", "__weakref__")

    def __init__(self, engine: sa.Engine, direct: DirectWriter, watch: Any) -> None:
        self._engine = engine
        self._direct = direct
        self._watch = watch
        self._lock = threading.Lock()
        self._conn: AutocommitCheckout | None = None
        self._checked: Any = None  # the connection record asked about listeners last
        self._pool: Any = engine.pool
        self._pid = os.getpid()
        self._listening: Any = None
        self.last = 0.0

    @staticmethod
    def suits(engine: sa.Engine) -> bool:
        """A ``QueuePool`` of two connections or more on psycopg."""
        pool: Any = engine.pool
        return (type(pool) is sa.pool.QueuePool and pool.size() >= 2
                and engine.dialect.driver == "psycopg")

    def acquire(self) -> AutocommitCheckout:
        if self._pid != os.getpid():  # a forked child: the parent's connection is not ours
            self._conn, self._pid = None, os.getpid()
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            if self._engine.pool is self._pool and _young(conn, self._pool._recycle):
                return conn
            self._give_back(conn)  # too old, or of a disposed pool
        return AutocommitCheckout(self._engine, self._direct)

    def release(self, conn: AutocommitCheckout) -> None:
        """Keep ``conn`` for the next operation if it can be, else give it back."""
        pool: Any = self._engine.pool
        if pool is not self._pool:  # the engine was disposed while this was out
            self._pool = pool
            self._give_back(conn)
            return
        if (_reusable(conn) and self._pid == os.getpid() and pool.checkedout() < pool.size()
                and self._may_keep(conn.connection)):
            with self._lock:
                kept = self._conn is None
                if kept:
                    self._conn = conn
                    self.last = time.monotonic()
            if kept:
                self._listen(pool)
                self._watch(self)
                return
        conn.close()

    def _may_keep(self, fairy: Any) -> bool:
        record = fairy._connection_record
        if record is not self._checked:  # asked once per connection it keeps
            if acts_per_checkout(self._pool):
                return False
            self._checked = record
        return True

    def _listen(self, pool: Any) -> None:
        if self._listening is None:
            self._listening = listen_for_closes(self, pool, CallerCheckouts._pool_closed)

    def _pool_closed(self) -> None:
        if self._conn is not None:
            self.close(listening=True)

    def reap(self, idle: float) -> bool:
        """Give the kept connection back after ``idle`` seconds without an operation,
        or once its engine was disposed; whether one is still kept (for the watcher)."""
        with self._lock:
            conn = self._conn
            if conn is None:
                return False
            disposed = self._engine.pool is not self._pool
            if not disposed and time.monotonic() - self.last < idle:
                return True
            self._conn = None
        if self._pid == os.getpid():
            self._give_back(conn)
        return False

    def close(self, listening: bool = False) -> None:
        """Give the kept connection back, and stop listening to the pool unless
        ``listening`` (the pool closing a connection, which may happen again)."""
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None and self._pid == os.getpid():
            self._give_back(conn)
        if not listening and self._listening is not None:
            closed, self._listening = self._listening, None
            stop_listening(self._engine.pool, closed)

    def _give_back(self, conn: AutocommitCheckout) -> None:
        """Back to its pool; if that pool is no longer the engine's (disposed since),
        its server session is ended first: a disposed pool closes what it holds when it
        is disposed, not what comes back to it later."""
        close_if_orphaned(conn.connection, self._engine.pool)
        conn.close()
