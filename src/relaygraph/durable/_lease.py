"""Thread leases: one writer per thread, with a TTL and a fencing token.

A lease is a row in ``relaygraph_leases`` on the checkpoints' database:

- **acquire** is one conditional ``UPDATE`` (``… WHERE expires_at <= now``) that sets the
  holder and expiry and adds one to the thread's token. The row is never deleted, so the
  token only ever grows: each acquisition of a thread gets a larger token than every
  earlier one. Two acquirers of an expired lease race on the row lock; the database lets
  exactly one UPDATE match.
- **renew** extends the expiry only while the token is still the holder's; after a
  takeover it raises :class:`LeaseLostError`.
- **release** sets the expiry to 0, so the next acquirer need not wait for the TTL.
- **fencing**: the lease is a :class:`~relaygraph.checkpointers._fence.WriteFence`. Put in
  ``config["configurable"]`` (``LeasedGraph`` does it), the savers read the thread's token
  with a share lock in the transaction that writes a checkpoint, and refuse the write when
  it is no longer the lease's. A holder that was paused past its TTL and taken over
  cannot write afterwards.

Times come from the injected ``clock`` (epoch seconds). Every holder of a thread must use
clocks that agree to well within the TTL; the lease compares times written by different
processes. Fencing does not depend on clocks: it compares tokens.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from relaygraph._errors import ConfigurationError
from relaygraph._sql import MAX_KEY_CHARS, acreate_tables, create_tables, upsert
from relaygraph.checkpointers._urls import engine_views
from relaygraph.durable._errors import LeaseLostError, ThreadBusyError
from relaygraph.durable._ledger import missing_table
from relaygraph.durable._tables import leases_table

__all__ = ["Lease", "LeaseStore", "default_holder"]

T = TypeVar("T")
_t = leases_table
_DEADLOCK_RETRIES = 5


def default_holder() -> str:
    """``host:pid:random``: unique per call, readable in ``ThreadBusyError``."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class Lease:
    """A held lease. Pass it to ``renew`` and ``release``.

    It is also a checkpoint write fence (see ``relaygraph.checkpointers._fence``): a saver
    given it writes a checkpoint only while ``token`` is still the thread's.

    Attributes:
        thread_id: the leased thread.
        holder: who holds it.
        token: the fencing token, larger than that of every earlier lease on the thread.
        expires_at: when it runs out unless renewed (epoch seconds, the store's clock).
        cancel_requested: someone called ``request_cancel`` for this lease (as of the
            acquisition or renewal that returned this value).
    """

    thread_id: str
    holder: str
    token: int
    expires_at: float
    cancel_requested: bool = field(default=False, compare=False)

    # -- WriteFence ---------------------------------------------------------------------
    def fence_statement(self) -> tuple[Any, dict[str, Any]]:
        return _FENCE_STMT, {"k": self.thread_id}

    def fence_check(self, rows: Sequence[Any]) -> None:
        token = rows[0][0] if rows else None
        if token != self.token:
            raise LeaseLostError(
                self.thread_id, self.token,
                "a checkpoint write was refused" + (
                    f" (the thread's token is now {token})" if token is not None
                    else " (the thread has no lease row)"))


# -- statements (built once; every value is a bound parameter) -------------------------

_K: Any = sa.bindparam("k", type_=_t.c.thread_id.type)
_NOW: Any = sa.bindparam("now", type_=sa.Double())

_CLAIM = sa.update(_t).where(_t.c.thread_id == _K, _t.c.expires_at <= _NOW).values(
    holder=sa.bindparam("new_holder", type_=sa.String(255)),
    token=_t.c.token + 1,
    expires_at=sa.bindparam("new_expires", type_=sa.Double()),
    acquired_at=_NOW,
    cancel_token=0,
)
_READ = sa.select(_t.c.holder, _t.c.token, _t.c.expires_at, _t.c.cancel_token).where(
    _t.c.thread_id == _K)
# a locking read: on MySQL/MariaDB a plain read in a REPEATABLE READ transaction would see
# its snapshot, not the row another acquirer has just committed
_READ_LOCKED = _READ.with_for_update(read=True)
_LIVE = _READ.where(_t.c.expires_at > _NOW)
_RENEW = sa.update(_t).where(
    _t.c.thread_id == _K, _t.c.token == sa.bindparam("tok", type_=sa.BigInteger()),
    _t.c.expires_at > 0,
).values(expires_at=sa.bindparam("new_expires", type_=sa.Double()))
_RELEASE = sa.update(_t).where(
    _t.c.thread_id == _K, _t.c.token == sa.bindparam("tok", type_=sa.BigInteger()),
).values(expires_at=0.0)
_CANCEL = sa.update(_t).where(_t.c.thread_id == _K, _t.c.expires_at > _NOW).values(
    cancel_token=_t.c.token)
_FENCE_STMT = sa.select(_t.c.token).where(_t.c.thread_id == _K).with_for_update(read=True)


# -- dialect differences ---------------------------------------------------------------

@dataclass(frozen=True)
class _Dialect:
    """What differs between the databases, in one place.

    ``insert`` is the insert-if-absent of a thread's first row. ``insert_in_claim``: the
    row may be inserted inside the claiming transaction. Not on MySQL/MariaDB, where the
    claim's UPDATE of a missing row takes a gap lock under REPEATABLE READ and two
    acquirers inserting under each other's gap locks deadlock; there the row is inserted
    in its own short transaction first. Row locks (``FOR SHARE``/``LOCK IN SHARE MODE``)
    are rendered by SQLAlchemy per dialect, and omitted on SQLite, whose write
    transactions hold the database's write lock.
    """

    insert: Any
    insert_in_claim: bool
    mysql: bool

    @classmethod
    def of(cls, dialect: sa.Dialect) -> _Dialect:
        mysql = dialect.name in ("mysql", "mariadb")
        return cls(insert=upsert(dialect, _t, keys=["thread_id"]),
                   insert_in_claim=not mysql, mysql=mysql)

    def retryable(self, exc: sa.exc.DBAPIError) -> bool:
        """A deadlock or serialization failure: the transaction can simply run again."""
        code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
        args: tuple[Any, ...] = tuple(getattr(exc.orig, "args", ()))
        return (code in ("40001", "40P01")
                or (self.mysql and len(args) > 0 and args[0] in (1213, 1205))
                or "deadlock" in str(exc.orig).lower())


# -- the core: what runs on a connection, shared by the sync and async shells -----------

@dataclass(frozen=True)
class _Busy:
    holder: str
    expires_at: float


_ABSENT = object()  # the thread has no lease row yet (insert it, then claim again)


def _claim(conn: sa.Connection, d: _Dialect, thread_id: str, holder: str, now: float,
           ttl: float) -> Lease | _Busy | object:
    """One acquisition attempt, in the caller's transaction."""
    params = {"k": thread_id, "now": now, "new_holder": holder, "new_expires": now + ttl}
    if conn.execute(_CLAIM, params).rowcount != 1:
        row = conn.execute(_READ_LOCKED, {"k": thread_id}).first()
        if row is not None:
            return _Busy(row.holder, row.expires_at)
        if not d.insert_in_claim:
            return _ABSENT
        _insert(conn, d, thread_id)
        if conn.execute(_CLAIM, params).rowcount != 1:
            row = conn.execute(_READ_LOCKED, {"k": thread_id}).one()
            return _Busy(row.holder, row.expires_at)
    row = conn.execute(_READ_LOCKED, {"k": thread_id}).one()
    return Lease(thread_id, holder, int(row.token), float(row.expires_at))


def _insert(conn: sa.Connection, d: _Dialect, thread_id: str) -> None:
    conn.execute(d.insert, {"thread_id": thread_id, "holder": "", "token": 0,
                            "expires_at": 0.0, "acquired_at": 0.0, "cancel_token": 0})


def _renew(conn: sa.Connection, lease: Lease, expires: float) -> Lease:
    n = conn.execute(_RENEW, {"k": lease.thread_id, "tok": lease.token,
                              "new_expires": expires}).rowcount
    row = conn.execute(_READ_LOCKED, {"k": lease.thread_id}).first()
    if n != 1 or row is None or int(row.token) != lease.token:
        detail = ("it was released" if row is not None and int(row.token) == lease.token
                  else "renewal refused")
        raise LeaseLostError(lease.thread_id, lease.token, detail)
    return replace(lease, expires_at=expires,
                   cancel_requested=int(row.cancel_token) == lease.token)


def _release(conn: sa.Connection, lease: Lease) -> None:
    conn.execute(_RELEASE, {"k": lease.thread_id, "tok": lease.token})


def _current(conn: sa.Connection, thread_id: str, now: float) -> Lease | None:
    row = conn.execute(_LIVE, {"k": thread_id, "now": now}).first()
    if row is None:
        return None
    return Lease(thread_id, row.holder, int(row.token), float(row.expires_at),
                 cancel_requested=int(row.cancel_token) == int(row.token))


def _cancel(conn: sa.Connection, thread_id: str, now: float) -> bool:
    return bool(conn.execute(_CANCEL, {"k": thread_id, "now": now}).rowcount == 1)


def _check_thread(thread_id: Any) -> str:
    if not isinstance(thread_id, str) or not thread_id:
        raise ConfigurationError(f"thread_id must be a non-empty string, got {thread_id!r}")
    if len(thread_id) > MAX_KEY_CHARS:
        # MySQL/MariaDB outside strict mode would store it cut short: two threads whose
        # ids share their first 255 characters would then share one lease
        raise ConfigurationError(
            f"thread_id is {len(thread_id)} characters long; the limit is {MAX_KEY_CHARS}, "
            "as for the checkpointers. Use a shorter id (for example a hash of this one)")
    return thread_id


def _setup_hint(exc: sa.exc.DBAPIError, engine: sa.Engine | AsyncEngine) -> Exception:
    """``exc``, or a clear error when it says the lease table does not exist yet."""
    if missing_table(exc):
        return ConfigurationError(
            "the lease table relaygraph_leases does not exist in "
            f"{engine.url.render_as_string(hide_password=True)}; run store.setup() (or "
            "await store.asetup()) once")
    return exc


def _backoff(attempt: int, cap: float) -> float:
    # jittered exponential backoff: waiters that collided do not retry in step
    return min(cap, 0.01 * (2 ** min(attempt, 8))) * random.uniform(0.5, 1.0)


class LeaseStore:
    """Leases on threads, in SQL on the checkpoints' database.

    Args:
        engine: a caller-owned ``Engine`` (sync methods; the async ones run them on a
            worker thread) or ``AsyncEngine`` (async methods only).
        ttl: seconds a lease lives unless renewed. A holder that dies is taken over
            ``ttl`` seconds after its last renewal.
        clock: epoch seconds; tests pass a fake one to move time.

    Example:
        >>> store = LeaseStore.from_saver(saver, ttl=30)          # doctest: +SKIP
        >>> store.setup()                                        # doctest: +SKIP
        >>> lease = store.acquire("thread-1")                    # doctest: +SKIP
        >>> ...; store.release(lease)                            # doctest: +SKIP
    """

    table = leases_table

    def __init__(self, engine: sa.Engine | AsyncEngine, *, ttl: float = 30.0,
                 clock: Callable[[], float] = time.time) -> None:
        if not isinstance(engine, sa.Engine | AsyncEngine):
            raise ConfigurationError(
                "LeaseStore needs a SQLAlchemy Engine or AsyncEngine, got "
                f"{type(engine).__name__}; create one with sqlalchemy.create_engine(url)")
        if not ttl > 0:
            raise ConfigurationError(f"ttl must be > 0 seconds, got {ttl!r}")
        self.engine = engine
        self.ttl = float(ttl)
        self.clock = clock
        self._autocommit, self._tx = engine_views(engine)
        self._d = _Dialect.of(engine.dialect)
        # runs of this process watching for a cancel of their thread (see request_cancel)
        self._watchers: dict[str, dict[int, Callable[[], None]]] = {}
        self._watch_lock = threading.Lock()

    @classmethod
    def from_saver(cls, saver: Any, **kw: Any) -> LeaseStore:
        """A store on the same database (and engine) as a relaygraph saver."""
        engine = getattr(saver, "engine", None)
        if not isinstance(engine, sa.Engine | AsyncEngine):
            raise ConfigurationError(
                f"LeaseStore.from_saver needs a relaygraph SQL saver (with an .engine), got "
                f"{type(saver).__name__}; pass LeaseStore(engine) instead")
        return cls(engine, **kw)

    @property
    def is_async(self) -> bool:
        return isinstance(self.engine, AsyncEngine)

    # -- sync shell ---------------------------------------------------------------------

    def _sync(self, what: str) -> None:
        if isinstance(self.engine, AsyncEngine):
            raise ConfigurationError(
                f"LeaseStore.{what}() needs a sync Engine; this store has an AsyncEngine, "
                f"use await LeaseStore.a{what}()")

    def _in_tx(self, fn: Callable[..., T], *args: Any) -> T:
        engine = self._tx
        for attempt in range(_DEADLOCK_RETRIES):
            try:
                with engine.begin() as conn:
                    return fn(conn, *args)
            except sa.exc.DBAPIError as exc:
                if not self._d.retryable(exc) or attempt == _DEADLOCK_RETRIES - 1:
                    raise _setup_hint(exc, self.engine) from exc
                time.sleep(_backoff(attempt, 0.05))
        raise AssertionError("unreachable")  # pragma: no cover

    def _auto(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            with self._autocommit.connect() as conn:
                out = fn(conn, *args)
                conn.commit()
                return out
        except sa.exc.DBAPIError as exc:
            raise _setup_hint(exc, self.engine) from exc

    def setup(self) -> None:
        """Create the lease table if absent (idempotent, safe across processes)."""
        self._sync("setup")
        create_tables(self.engine, [leases_table])  # type: ignore[arg-type]

    def try_acquire(self, thread_id: str, *, holder: str | None = None) -> Lease:
        """One attempt: the lease, or :class:`ThreadBusyError` at once."""
        self._sync("try_acquire")
        thread_id = _check_thread(thread_id)
        holder = holder or default_holder()
        got = self._in_tx(_claim, self._d, thread_id, holder, self.clock(), self.ttl)
        if got is _ABSENT:
            self._in_tx(_insert, self._d, thread_id)
            got = self._in_tx(_claim, self._d, thread_id, holder, self.clock(), self.ttl)
        return self._result(thread_id, got)

    def acquire(self, thread_id: str, *, holder: str | None = None,
                wait: float = 0.0) -> Lease:
        """Acquire the thread's lease, waiting up to ``wait`` seconds for it.

        Raises:
            ThreadBusyError: another holder kept a live lease for the whole wait.
        """
        holder = holder or default_holder()
        deadline = time.monotonic() + wait
        attempt = 0
        while True:
            try:
                return self.try_acquire(thread_id, holder=holder)
            except ThreadBusyError:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise
                time.sleep(min(left, _backoff(attempt, 0.5)))
                attempt += 1

    def renew(self, lease: Lease) -> Lease:
        """Extend ``lease`` by the TTL from now.

        Raises:
            LeaseLostError: the lease was taken over or released.
        """
        self._sync("renew")
        return self._in_tx(_renew, lease, self.clock() + self.ttl)

    def release(self, lease: Lease) -> None:
        """Give the lease up; a no-op when it was taken over already."""
        self._sync("release")
        self._auto(_release, lease)

    def current(self, thread_id: str) -> Lease | None:
        """The thread's live lease, or ``None``."""
        self._sync("current")
        return self._auto(_current, _check_thread(thread_id), self.clock())

    def request_cancel(self, thread_id: str) -> bool:
        """Ask the thread's holder to stop at its next step boundary.

        A run of this process notices at once; one in another process at its next
        renewal (``LeasedGraph``'s ``heartbeat``). Returns whether there was a live lease
        to cancel.
        """
        self._sync("request_cancel")
        found = self._auto(_cancel, _check_thread(thread_id), self.clock())
        self._notify(thread_id)
        return found

    # -- async shell --------------------------------------------------------------------

    async def _ain_tx(self, fn: Callable[..., T], *args: Any) -> T:
        engine = self._tx
        for attempt in range(_DEADLOCK_RETRIES):
            try:
                async with engine.begin() as conn:
                    return await conn.run_sync(fn, *args)  # type: ignore[no-any-return]
            except sa.exc.DBAPIError as exc:
                if not self._d.retryable(exc) or attempt == _DEADLOCK_RETRIES - 1:
                    raise _setup_hint(exc, self.engine) from exc
                await asyncio.sleep(_backoff(attempt, 0.05))
        raise AssertionError("unreachable")  # pragma: no cover

    async def _aauto(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            async with self._autocommit.connect() as conn:
                out = await conn.run_sync(fn, *args)
                await conn.commit()
                return out  # type: ignore[no-any-return]
        except sa.exc.DBAPIError as exc:
            raise _setup_hint(exc, self.engine) from exc

    async def asetup(self) -> None:
        """Async twin of :meth:`setup`."""
        if not isinstance(self.engine, AsyncEngine):
            return await asyncio.to_thread(self.setup)
        await acreate_tables(self.engine, [leases_table])

    async def atry_acquire(self, thread_id: str, *, holder: str | None = None) -> Lease:
        """Async twin of :meth:`try_acquire`."""
        if not isinstance(self.engine, AsyncEngine):
            return await asyncio.to_thread(self.try_acquire, thread_id, holder=holder)
        thread_id = _check_thread(thread_id)
        holder = holder or default_holder()
        got = await self._ain_tx(_claim, self._d, thread_id, holder, self.clock(), self.ttl)
        if got is _ABSENT:
            await self._ain_tx(_insert, self._d, thread_id)
            got = await self._ain_tx(_claim, self._d, thread_id, holder, self.clock(),
                                     self.ttl)
        return self._result(thread_id, got)

    async def aacquire(self, thread_id: str, *, holder: str | None = None,
                       wait: float = 0.0) -> Lease:
        """Async twin of :meth:`acquire`."""
        holder = holder or default_holder()
        deadline = time.monotonic() + wait
        attempt = 0
        while True:
            try:
                return await self.atry_acquire(thread_id, holder=holder)
            except ThreadBusyError:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise
                await asyncio.sleep(min(left, _backoff(attempt, 0.5)))
                attempt += 1

    async def arenew(self, lease: Lease) -> Lease:
        """Async twin of :meth:`renew`."""
        if not isinstance(self.engine, AsyncEngine):
            return await asyncio.to_thread(self.renew, lease)
        return await self._ain_tx(_renew, lease, self.clock() + self.ttl)

    async def arelease(self, lease: Lease) -> None:
        """Async twin of :meth:`release`."""
        if not isinstance(self.engine, AsyncEngine):
            return await asyncio.to_thread(self.release, lease)
        await self._aauto(_release, lease)

    async def acurrent(self, thread_id: str) -> Lease | None:
        """Async twin of :meth:`current`."""
        if not isinstance(self.engine, AsyncEngine):
            return await asyncio.to_thread(self.current, thread_id)
        return await self._aauto(_current, _check_thread(thread_id), self.clock())

    async def arequest_cancel(self, thread_id: str) -> bool:
        """Async twin of :meth:`request_cancel`."""
        if not isinstance(self.engine, AsyncEngine):
            return await asyncio.to_thread(self.request_cancel, thread_id)
        found = await self._aauto(_cancel, _check_thread(thread_id), self.clock())
        self._notify(thread_id)
        return found

    # -- shared -------------------------------------------------------------------------

    def _result(self, thread_id: str, got: Any) -> Lease:
        if isinstance(got, Lease):
            return got
        if isinstance(got, _Busy):
            raise ThreadBusyError(thread_id, got.holder, got.expires_at)
        # only when another process deleted the row between our insert and claim
        raise ThreadBusyError(thread_id, "", self.clock())

    def _watch(self, thread_id: str, on_cancel: Callable[[], None]) -> Callable[[], None]:
        """Call ``on_cancel`` when this process requests a cancel of ``thread_id``;
        returns the function that stops watching."""
        key = id(on_cancel)
        with self._watch_lock:
            self._watchers.setdefault(thread_id, {})[key] = on_cancel

        def unwatch() -> None:
            with self._watch_lock:
                watchers = self._watchers.get(thread_id)
                if watchers is not None:
                    watchers.pop(key, None)
                    if not watchers:
                        del self._watchers[thread_id]
        return unwatch

    def _notify(self, thread_id: str) -> None:
        with self._watch_lock:
            watchers = list(self._watchers.get(thread_id, {}).values())
        for fn in watchers:
            fn()
