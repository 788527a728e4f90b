"""Checkouts of a saver's own autocommitted PostgreSQL pool, kept between operations.

A pool checkout and return cost SQLAlchemy's pool about a tenth of a put's CPU on
PostgreSQL (its queue, its events, the connection's record and reset). ``from_conn_string``
gives the saver pools of its own for its autocommitted work (reads and puts; task writes),
which nothing else checks out, so a connection can stay out of its pool between two
operations and skip both. See :class:`KeptCheckouts` for the rules that keep this safe.
"""

from __future__ import annotations

import os
import time
from typing import Any

import sqlalchemy as sa

from relaygraph.checkpointers._direct import DirectWriter, LiteConnection


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
            if self._recycle < 0 or time.time() - _started(conn) <= self._recycle:
                return conn
            conn.close()  # too old: the pool reconnects it on its next checkout

    def release(self, conn: KeptCheckout) -> None:
        fairy: Any = conn.connection
        raw: Any = fairy.dbapi_connection
        if self.engine.pool is not self._pool:  # disposed: what it lent is not kept
            self.close()
            self._pool = self.engine.pool
        elif (conn._full is None and fairy.is_valid and raw is not None
                and raw.pgconn.status == _OK and raw.pgconn.transaction_status == _IDLE
                and len(self._idle) < self._keep and self._pid == os.getpid()
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


def _started(conn: KeptCheckout) -> float:
    rec: Any = conn.connection._connection_record  # type: ignore[attr-defined]
    return float(rec.starttime)


_IDLE, _ACTIVE = 0, 1  # psycopg.pq.TransactionStatus (libpq's, as ints: no enum built)
_OK = 0  # psycopg.pq.ConnStatus.OK
