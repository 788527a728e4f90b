"""`AsyncSQLAlchemySaver`: the asyncio shell around the shared core."""

from __future__ import annotations

import asyncio
import builtins
import functools
import itertools
import weakref
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import sqlalchemy as sa
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    DeltaChannelHistory,
)
from langgraph.checkpoint.serde.base import SerializerProtocol
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.util import greenlet_spawn
from sqlalchemy.util.concurrency import await_only, in_greenlet

from relaygraph.checkpointers import _schema as S
from relaygraph.checkpointers._aiokept import KeptForLoop, lend
from relaygraph.checkpointers._aiolite import AiosqliteLane
from relaygraph.checkpointers._base import (
    CONFLICT,
    After,
    BaseSQLAlchemySaver,
    Emit,
    Op,
    P,
    Q,
    R,
    ThreadInfo,
)
from relaygraph.checkpointers._direct import DirectWriter, supports
from relaygraph.checkpointers._errors import CheckpointerError
from relaygraph.checkpointers._kept import (
    close_if_orphaned,
    listen_for_closes,
    reusable_checkout,
    stop_listening,
)
from relaygraph.checkpointers._protocol import answer, writes_of
from relaygraph.checkpointers._retry import (
    DEFAULT_LOCK_TIMEOUT,
    DEFAULT_STATEMENT_TIMEOUT,
    RetryPolicy,
    is_transient,
    set_timeouts,
)
from relaygraph.checkpointers._stop import note_failed_save, trouble_ends
from relaygraph.checkpointers._sync import SqliteWorker, _first_retry, db_error
from relaygraph.checkpointers._urls import (
    DEFAULT_MAX_CONNECTIONS,
    acts_per_checkout,
    autocommit_kwargs,
    engine_kwargs,
    engine_views,
    is_sqlite_file,
    persist_wal,
    pool_sizes,
    resolve_url,
    sqlite_pragmas,
    sqlite_read_only,
)

T = TypeVar("T")


class _Held:
    """An autocommitted connection kept checked out between operations, with its driver
    connection looked up once. Offers what ``_drive`` and ``DirectWriter`` use."""

    __slots__ = ("conn", "fairy")

    def __init__(self, conn: AsyncConnection, fairy: Any) -> None:
        self.conn = conn
        self.fairy = fairy

    async def get_raw_connection(self) -> Any:
        return self.fairy

    @property
    def sync_engine(self) -> sa.Engine:
        return self.conn.sync_engine

    async def invalidate(self, exception: BaseException | None = None) -> None:
        await self.conn.invalidate(exception)

    async def execute(self, *args: Any, **kwargs: Any) -> Any:
        return await self.conn.execute(*args, **kwargs)


class AutocommitCheckout:
    """A psycopg connection of a caller's transactional async pool, in autocommit for one
    operation of the saver and handed back as it was lent (the async twin of
    ``_direct.AutocommitCheckout``).

    Through SQLAlchemy (``execution_options(isolation_level="AUTOCOMMIT")``) every
    checkout and return switches the connection's characteristics and builds an
    ``AsyncConnection`` around it; here it is a bare checkout of the caller's pool (its
    events run as usual) with psycopg's own ``autocommit`` flag set and cleared, on an
    idle connection (no round trip). An ``AsyncConnection`` over the same checkout is
    built only for the rare statement the cached path cannot run. Offers what ``_drive``
    and ``DirectWriter`` use.
    """

    __slots__ = ("_full", "_was", "engine", "fairy")

    def __init__(self, engine: AsyncEngine, fairy: Any, was: bool) -> None:
        self.engine = engine
        self.fairy = fairy
        self._was = was
        self._full: AsyncConnection | None = None

    @classmethod
    async def open(cls, engine: AsyncEngine, direct: DirectWriter) -> AutocommitCheckout:
        fairy = await engine.raw_connection()
        raw: Any = fairy.driver_connection
        was = bool(raw.autocommit)
        if not was:
            try:
                await raw.set_autocommit(True)
            except direct._error_base as exc:
                await greenlet_spawn(fairy.invalidate, exc)
                await greenlet_spawn(fairy.close)
                raise direct._wrap("SET autocommit", exc, direct._broken(raw, exc)) from exc
        return cls(engine, fairy, was)

    @classmethod
    @asynccontextmanager
    async def lent(cls, engine: AsyncEngine,
                   direct: DirectWriter) -> AsyncIterator[AutocommitCheckout]:
        """A checkout for one operation, handed back after it."""
        checkout = await cls.open(engine, direct)
        try:
            yield checkout
        finally:
            await checkout.close()

    async def get_raw_connection(self) -> Any:
        return self.fairy

    @property
    def sync_engine(self) -> sa.Engine:
        return self.engine.sync_engine

    async def invalidate(self, exception: BaseException | None = None) -> None:
        if self._full is not None:
            await self._full.invalidate(exception)
        elif self.fairy.dbapi_connection is not None:
            await greenlet_spawn(self.fairy.invalidate, exception)

    async def execute(self, *args: Any, **kwargs: Any) -> Any:
        if self._full is None:
            self._full = AsyncConnection(
                self.engine, sa.Connection(self.engine.sync_engine, connection=self.fairy))
        return await self._full.execute(*args, **kwargs)

    async def close(self) -> None:
        fairy = self.fairy
        raw = fairy.driver_connection
        if not self._was and fairy.is_valid and raw is not None:
            try:
                await raw.set_autocommit(False)
            except Exception as exc:  # psycopg's: not fit to go back into the pool
                await greenlet_spawn(fairy.invalidate, exc)
        if self._full is not None:
            await self._full.close()
        else:
            await greenlet_spawn(self._checkin)

    def _checkin(self) -> None:
        """Back to the pool it came from; if the engine no longer uses that pool (it was
        disposed, perhaps while this was on its way back), closed first: a disposed pool
        closes what it holds when it is disposed, not what comes back to it later."""
        close_if_orphaned(self.fairy, self.engine.sync_engine.pool)
        self.fairy.close()

    def close_in_greenlet(self) -> None:
        """:meth:`close` from inside SQLAlchemy's greenlet (a pool event): only for a
        checkout over which no ``AsyncConnection`` was built."""
        fairy = self.fairy
        raw = fairy.driver_connection
        if (not self._was and fairy.is_valid and raw is not None
                and fairy._pool is self.engine.sync_engine.pool):
            try:
                await_only(raw.set_autocommit(False))
            except Exception as exc:
                fairy.invalidate(exc)
        self._checkin()


class CallerAutocommit(KeptForLoop[AutocommitCheckout]):
    """Autocommitted checkouts of a caller's psycopg pool, kept between the saver's
    operations (the async twin of ``_kept.CallerCheckouts``).

    Without them every operation checks a connection out, switches psycopg's
    ``autocommit`` on, runs, switches it off and gives it back (:class:`AutocommitCheckout`),
    about a tenth of the process's instructions per step. Up to two (one fewer than the
    pool's size) stay out of the pool between operations, in autocommit and outside any
    transaction, under :class:`KeptForLoop`'s rules, and only while the pool has another
    connection to lend without overflow. They go back as they were lent (autocommit off):
    after ``HOLD_IDLE`` seconds without an operation, at once after a failure, when the
    pool closes a connection (``engine.dispose()`` closes what is in the pool, and the
    kept ones, given back then, are closed with the rest: no server session of the
    saver's outlives the dispose; a pool that held nothing else sends no event, and the
    next operation, the timer or the loop's end closes them then, never handing one back
    open to the disposed pool), and when their event loop shuts down its async
    generators (``asyncio.run`` and ``asyncio.Runner`` do before closing it). The one
    listener this needs is on the pool's ``close`` event; a listener on the engine would
    switch on SQLAlchemy's event dispatch for every statement the application runs.
    """

    UNTIL_LOOP_ENDS = True

    def __init__(self, engine: AsyncEngine, direct: DirectWriter) -> None:
        super().__init__(engine)
        self.direct = direct
        pool: Any = engine.sync_engine.pool
        self.keep = max(0, min(2, pool.size() - 1))
        self._listening: tuple[Any, Callable[..., None]] | None = None

    @staticmethod
    def suits(engine: AsyncEngine, direct: DirectWriter | None) -> bool:
        """A ``QueuePool`` of two connections or more on psycopg."""
        pool: Any = engine.sync_engine.pool
        return (direct is not None and direct.pipelined
                and isinstance(pool, sa.pool.QueuePool) and pool.size() >= 2
                and engine.dialect.driver == "psycopg")

    async def open(self) -> AutocommitCheckout:
        return await AutocommitCheckout.open(self.engine, self.direct)

    def fairy(self, held: AutocommitCheckout) -> Any:
        return held.fairy

    def fit(self, held: AutocommitCheckout) -> bool:
        return reusable_checkout(held.fairy, held._full)

    async def give_back(self, held: AutocommitCheckout, *, invalidate: bool = False) -> None:
        if invalidate:
            await held.invalidate()
        await held.close()

    def _spare(self) -> bool:
        pool: Any = self.sync_engine.pool
        return not acts_per_checkout(pool) and pool.checkedout() < pool.size()

    async def kept(self, loop: asyncio.AbstractEventLoop) -> None:
        await super().kept(loop)
        pool: Any = self.sync_engine.pool
        if self._listening is None or self._listening[0] is not pool:
            closed = listen_for_closes(self, pool, CallerAutocommit._pool_closed)
            if self._listening is not None:
                stop_listening(*self._listening)
            self._listening = (pool, closed)
            weakref.finalize(self, stop_listening, pool, closed)

    def _pool_closed(self) -> None:
        """The pool closed a connection (``engine.dispose()`` closes them all): the kept
        ones go back now, from the greenlet the pool runs in on their loop, and the
        dispose closes them with the rest."""
        if not self._idle or not in_greenlet():
            return  # (the collector finalizing a connection) the timer or loop's end will
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if loop is not self._loop:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        idle, self._idle = self._idle, []
        for held in idle:
            held.close_in_greenlet()


class HeldConnections:
    """The autocommitted connections of an engine the async saver owns, kept between
    operations.

    Checking out a SQLAlchemy ``AsyncConnection`` costs ~100 us (greenlet hops through the
    pool and the connection's set-up), about a loopback round trip: an operation of one
    statement paid it twice over. Up to ``keep`` idle connections (by default the pool's
    size, so no more stay open than the pool would keep) wait here instead of in the
    pool. A connection that saw a database error, or an operation that was cancelled
    mid-statement, is closed rather than kept; a dropped connection is replaced by the
    saver's retry. Only the event loop that opened them uses them.
    """

    def __init__(self, engine: AsyncEngine, keep: int | None = None) -> None:
        self.engine = engine
        size = getattr(engine.sync_engine.pool, "size", None)
        self.keep = keep if keep is not None else (size() if callable(size) else 5)
        self._idle: list[_Held] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        # No more held at once than the pool can open: a pool without overflow would
        # otherwise make an operation wait for a connection that sits in ``_idle``.
        overflow = getattr(engine.sync_engine.pool, "_max_overflow", -1)
        self.limit = (size() + overflow if callable(size) and overflow >= 0 else None)
        self._slots: asyncio.Semaphore | None = None

    def usable(self) -> bool:
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        return loop is self._loop

    async def acquire(self) -> _Held:
        if self.limit is not None:
            if self._slots is None:
                self._slots = asyncio.Semaphore(self.limit)
            await self._slots.acquire()
        try:
            if self._idle:
                return self._idle.pop()
            conn = await self.engine.connect()
            try:
                fairy = await conn.get_raw_connection()
            except BaseException:
                await conn.close()
                raise
            return _Held(conn, fairy)
        except BaseException:
            if self._slots is not None:
                self._slots.release()
            raise

    async def release(self, held: _Held, reusable: bool) -> None:
        try:
            await self._release(held, reusable)
        finally:
            if self._slots is not None:
                self._slots.release()

    async def _release(self, held: _Held, reusable: bool) -> None:
        conn = held.conn
        if reusable and not conn.invalidated:
            if conn.in_transaction():  # SQLAlchemy's own bookkeeping: autocommitted
                await conn.commit()
            # checked after the await: releases running beside this one may have filled
            # the list meanwhile
            if len(self._idle) < self.keep and not conn.invalidated:
                self._idle.append(held)
                return
        if conn.invalidated:
            # a dropped connection: as SQLAlchemy's pool does, treat every connection
            # opened before it as dropped too (a server restart ends them all)
            idle, self._idle = self._idle, []
            for other in idle:
                await other.conn.close()
        await conn.close()

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for held in idle:
            await held.conn.close()


class AsyncSQLAlchemySaver(BaseSQLAlchemySaver):
    """A LangGraph checkpointer on any SQLAlchemy ``AsyncEngine``.

    Drivers: aiosqlite, psycopg 3 (async), asyncmy or aiomysql. Same storage, options and
    behaviour as :class:`SQLAlchemySaver`; both can share one database.

    On a SQLite file opened with :meth:`from_conn_string`, each operation runs with the
    standard library's sqlite3 on a worker thread: one trip to a thread per operation
    instead of one per statement, about twice as fast as through aiosqlite. On
    PostgreSQL and MySQL, :meth:`from_conn_string` keeps up to the pool's size of
    autocommitted connections checked out between operations (see
    :class:`HeldConnections`). An engine you pass in is used as it is (its events and
    pool settings apply): on an aiosqlite engine over a file an operation runs whole on
    the aiosqlite thread of one of its connections (see ``_aiolite``), and on a psycopg
    engine it takes a bare checkout in psycopg's autocommit (see
    :class:`AutocommitCheckout`) and keeps up to two of them between operations, given
    back after a second without one, when the pool closes a connection (as
    ``engine.dispose()`` does) and when the event loop ends (see
    :class:`CallerAutocommit`).

    Example:
        >>> async with AsyncSQLAlchemySaver.from_conn_string("sqlite:///relaygraph.db") as s:
        ...     await s.asetup()
        ...     graph = builder.compile(checkpointer=s)  # doctest: +SKIP
    """

    def __init__(self, engine: AsyncEngine, *, serde: SerializerProtocol | None = None,
                 segment_every: int = 32, compress: bool = True,
                 cache_size: int = 4096, thread_dictionaries: bool = True,
                 retry: RetryPolicy | None = None) -> None:
        if not isinstance(engine, AsyncEngine):
            raise TypeError(
                f"AsyncSQLAlchemySaver takes an AsyncEngine, got {type(engine).__name__}; "
                "use SQLAlchemySaver for a sync Engine or from_conn_string(url) for a URL")
        super().__init__(serde=serde, segment_every=segment_every, compress=compress,
                         cache_size=cache_size, thread_dictionaries=thread_dictionaries,
                         retry=retry)
        self.engine = engine
        self._dialect = engine.dialect
        self._sqlite = engine.dialect.name == "sqlite"
        self._direct = DirectWriter(engine.dialect) if supports(engine.dialect) else None
        self._write_lock: asyncio.Lock | None = None
        # reads and one-statement writes autocommit, the rest runs in transactions
        self._reader, self._tx = engine_views(engine)
        # a caller's transactional psycopg engine: its autocommitted work takes a bare
        # checkout switched by psycopg's own flag (see ``AutocommitCheckout``)
        self._switched = (self._reader if self._direct is not None and self._direct.pipelined
                          and self._reader is not engine else None)
        # a SQLite file opened by from_conn_string: operations run with sqlite3 on worker
        # threads, one trip each (see ``SqliteWorker``)
        self._worker: SqliteWorker | None = None
        # a caller's aiosqlite engine on a file: an operation per trip to its connection's
        # thread (see ``AiosqliteLane``)
        self._lane = AiosqliteLane(engine) if AiosqliteLane.suits(engine) else None
        # a caller's psycopg pool (transactional or autocommitted): a couple of its
        # checkouts kept in autocommit between operations (see ``CallerAutocommit``)
        self._kept: CallerAutocommit | None = None
        if self._direct is not None and CallerAutocommit.suits(engine, self._direct):
            self._kept = CallerAutocommit(engine, self._direct)
        # the autocommitted engine of from_conn_string: its connections stay checked out
        self._held: HeldConnections | None = None
        # and those of the pool task writes go through (see SQLAlchemySaver._writes_reader)
        self._writes_held: HeldConnections | None = None
        try:
            self.loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self.loop = None

    @classmethod
    @asynccontextmanager
    async def from_conn_string(
            cls, url: str, *, max_connections: int = DEFAULT_MAX_CONNECTIONS,
            lock_timeout: float | None = DEFAULT_LOCK_TIMEOUT,
            statement_timeout: float | None = DEFAULT_STATEMENT_TIMEOUT,
            **kwargs: Any) -> AsyncIterator[AsyncSQLAlchemySaver]:
        """Create an async engine for ``url``, yield a saver on it, dispose it after.

        ``max_connections``, ``lock_timeout`` and ``statement_timeout`` as in
        :meth:`SQLAlchemySaver.from_conn_string`; the connections the saver holds between
        operations count among ``max_connections``.
        """
        u = sqlite_read_only(resolve_url(url, async_=True))
        sizes = pool_sizes(u, max_connections)
        engine = create_async_engine(u, **engine_kwargs(u), **sizes[0])
        set_timeouts(engine, lock=lock_timeout, statement=statement_timeout)
        worker_engine: sa.Engine | None = None
        if u.get_backend_name() == "sqlite":
            sa.event.listen(engine.sync_engine, "connect", sqlite_pragmas)
            if is_sqlite_file(u):
                su = u.set(drivername="sqlite+pysqlite")  # the standard library's
                worker_engine = sa.create_engine(su, **engine_kwargs(su))
                sa.event.listen(worker_engine, "connect", sqlite_pragmas)
                set_timeouts(worker_engine, lock=lock_timeout, statement=statement_timeout)
        fast_kw = autocommit_kwargs(u)  # as in SQLAlchemySaver.from_conn_string
        fast = create_async_engine(u, **fast_kw, **sizes[1]) if fast_kw is not None else None
        lane = create_async_engine(u, **fast_kw, **sizes[2]) if fast_kw is not None else None
        for extra in (fast, lane):
            if extra is not None:
                set_timeouts(extra, lock=lock_timeout, statement=statement_timeout)
        saver: AsyncSQLAlchemySaver | None = None
        try:
            saver = cls(engine, **kwargs)
            saver._timeouts = {"lock": lock_timeout, "statement": statement_timeout}
            saver._kept = None  # its own pools are held instead (below)
            if fast is not None:
                saver._reader = fast
                saver._held = HeldConnections(fast)
            if lane is not None:
                saver._writes_held = HeldConnections(lane)
            if worker_engine is not None:
                saver._worker = SqliteWorker(worker_engine)
                saver._lane = None
            yield saver
        finally:
            if saver is not None:
                saver._close()
            for held in (saver._held, saver._writes_held) if saver is not None else ():
                if held is not None:
                    await held.close()
            await engine.dispose()
            if fast is not None:
                await fast.dispose()
            if lane is not None:
                await lane.dispose()
            if worker_engine is not None:
                if saver is not None and saver._worker is not None:
                    await asyncio.to_thread(saver._worker.close)
                worker_engine.dispose()

    # -- driving the core -------------------------------------------------------------

    async def _run(self, make: Callable[..., Op], *args: Any, write: bool = False,
                   writes_lane: bool = False, short: bool = False) -> Any:
        """See :meth:`SQLAlchemySaver._run`."""
        if self.loop is None:
            self.loop = asyncio.get_running_loop()
        if not self._schema_ok:
            await self._run_checked(self._op_schema_version)
        troubled: list[Any] = []
        try:
            return await self._retrying(
                lambda: self._run_once(make(*args), write=write, writes_lane=writes_lane,
                                       short=short),
                on_retry=lambda: _first_retry(troubled))
        except Exception as exc:
            note_failed_save(make, args, exc)  # the run stops at its next step boundary
            raise
        finally:
            if troubled:
                trouble_ends(troubled[0])

    async def _retrying(self, work: Callable[[], Awaitable[T]],
                        on_retry: Callable[[], Any] | None = None) -> T:
        """See :meth:`SQLAlchemySaver._retrying`."""
        started: float | None = None
        for attempt in itertools.count(1):
            try:
                return await work()
            except sa.exc.DBAPIError as exc:
                if is_transient(exc):
                    if started is None:
                        started = self.retry.clock()
                    wait = self.retry.delay(attempt, started)
                    if wait is not None:
                        if on_retry is not None:
                            on_retry()
                        await self.retry.asleep(wait)
                        continue
                raise db_error(self, exc, attempt, started) from exc
        raise AssertionError("unreachable")

    async def _run_checked(self, make: Callable[[], Op]) -> None:
        self._check_open()
        version = await self._retrying(lambda: self._run_once(make(), write=False))
        self._check_schema(version)

    async def _run_once(self, op: Op, *, write: bool, writes_lane: bool = False,
                        short: bool = False) -> Any:
        afters: list[After] = []
        held = (self._writes_held if writes_lane and self._writes_held is not None
                else self._held)
        if self._worker is not None:
            result = await asyncio.to_thread(self._worker.run, op, afters, write, short)
        elif self._lane is not None:
            result = await self._lane.run(op, afters, write)
        elif write and self._sqlite:
            # one writer at a time, write lock taken up front (see SQLAlchemySaver)
            if self._write_lock is None:
                self._write_lock = asyncio.Lock()
            async with self._write_lock, self._tx.begin() as conn:
                await conn.exec_driver_sql("BEGIN IMMEDIATE")
                result = await _drive(conn, op, afters, self._direct)
        elif write:
            async with self._tx.begin() as conn:
                result = await _drive(conn, op, afters, self._direct)
        elif held is not None and held.usable():
            result = await self._on_held(lambda c: _drive(c, op, afters, self._direct), held)
        elif self._kept is not None:
            result = await lend(self._kept, lambda c: _drive(c, op, afters, self._direct))  # type: ignore[arg-type]
        elif self._switched is not None and self._reader is self._switched:
            # a checkout per operation: the caller's pool keeps its own (its events run,
            # and nothing is left checked out when the application disposes of it)
            assert self._direct is not None
            async with AutocommitCheckout.lent(self.engine, self._direct) as checkout:
                result = await _drive(checkout, op, afters, self._direct)  # type: ignore[arg-type]
        else:
            async with self._reader.connect() as conn:
                result = await _drive(conn, op, afters, self._direct)
        for a in afters:
            a.fn()
        return result

    async def _on_held(self, work: Callable[[Any], Awaitable[T]],
                       pool: HeldConnections | None = None) -> T:
        """Run ``work`` on a held connection (see :class:`HeldConnections`)."""
        pool = pool or self._held
        assert pool is not None
        return await lend(pool, work)

    async def _stream(self, op: Op) -> AsyncIterator[Any]:
        if not self._schema_ok:
            await self._run_checked(self._op_schema_version)
        try:
            msg = next(op)
            while True:
                if isinstance(msg, Emit):
                    yield msg.item
                    msg = op.send(None)
                elif isinstance(msg, After):
                    msg = op.send(None)
                else:
                    msg = op.send(await self._retrying(functools.partial(self._exec_one, msg)))
        except StopIteration:
            return

    async def _exec_one(self, msg: Any) -> Any:
        if self._worker is not None:
            return await asyncio.to_thread(self._worker.execute, msg)
        if self._lane is not None:
            return await self._lane.execute(msg)
        if self._held is not None and self._held.usable():
            return await self._on_held(functools.partial(_exec, msg=msg, direct=self._direct))
        if self._kept is not None:
            return await lend(self._kept, functools.partial(_exec, msg=msg,  # type: ignore[arg-type]
                                                            direct=self._direct))
        if self._switched is not None and self._reader is self._switched:
            assert self._direct is not None
            async with AutocommitCheckout.lent(self.engine, self._direct) as checkout:
                return await _exec(checkout, msg, self._direct)  # type: ignore[arg-type]
        async with self._reader.connect() as conn:
            return await _exec(conn, msg, self._direct)

    async def asetup(self) -> None:
        """Create or migrate the checkpoint tables. Idempotent; safe across processes.

        On a SQLite file this also puts the database in WAL journal mode (stored in the
        file, as ``AsyncSqliteSaver.setup()`` does), on a caller's engine too.
        """
        self._check_open()

        async def wal() -> None:
            async with self.engine.connect() as conn:
                await conn.run_sync(lambda c: persist_wal(c.connection.dbapi_connection))

        if is_sqlite_file(self.engine.sync_engine.url):
            await self._retrying(wal)  # its errors explained as the operations' are

        async def migrate() -> None:
            async with self._tx.begin() as conn:
                await conn.run_sync(S.run_migrations)

        await self._retrying(migrate)
        self._schema_ok = False  # checked again, against what the database now holds

    # -- async BaseCheckpointSaver --------------------------------------------------------

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await self._run(self._op_get_tuple, config, short=True)

    async def alist(self, config: RunnableConfig | None, *,
                    filter: dict[str, Any] | None = None, before: RunnableConfig | None = None,
                    limit: int | None = None) -> AsyncIterator[CheckpointTuple]:
        async for item in self._stream(self._op_list(config, filter, before, limit)):
            yield item

    async def aput(self, config: RunnableConfig, checkpoint: Checkpoint,
                   metadata: CheckpointMetadata, new_versions: ChannelVersions) -> RunnableConfig:
        # autocommitted outside SQLite: see SQLAlchemySaver.put
        await self._cache.writes.await_idle(self._writes_key(config))
        fence = self._fence(config)
        if fence is not None:  # one transaction, see SQLAlchemySaver.put
            return await self._run(self._op_fenced, fence, self._op_put, config, checkpoint,
                                   metadata, new_versions, write=True)
        return await self._run(self._op_put, config, checkpoint, metadata, new_versions,
                               write=self._sqlite)

    async def aput_writes(self, config: RunnableConfig, writes: Sequence[tuple[str, Any]],
                          task_id: str, task_path: str = "") -> None:
        key = self._writes_key(config)
        self._cache.writes.begin(key)
        try:
            fence = self._fence(config)
            if fence is not None:  # see SQLAlchemySaver.put_writes
                await self._run(self._op_fenced, fence, self._op_put_writes, config, writes,
                                task_id, task_path, True, write=True)
                return
            if not self._sqlite and await self._run(
                    self._op_put_writes, config, writes, task_id, task_path,
                    False, writes_lane=True) is not CONFLICT:
                return
            await self._run(self._op_put_writes, config, writes, task_id, task_path, True,
                            write=True)
        finally:
            self._cache.writes.end(key)

    async def adelete_thread(self, thread_id: str) -> None:
        await self._run(self._op_delete_thread, thread_id, write=True)

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        await self._run(self._op_delete_for_runs, run_ids, write=True)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        await self._run(self._op_copy_thread, source_thread_id, target_thread_id, write=True)

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest",
                     keep_last: int = 1) -> None:
        """See :meth:`SQLAlchemySaver.prune`."""
        await self._run(self._op_prune, thread_ids, strategy, keep_last, write=True)

    async def aget_delta_channel_history(
        self, *, config: RunnableConfig, channels: Sequence[str]
    ) -> Mapping[str, DeltaChannelHistory]:
        return await self._run(self._op_delta_history, config, channels)

    async def alist_threads(self, *, limit: int | None = None) -> builtins.list[ThreadInfo]:
        """Threads, most recently checkpointed first, without decoding any state."""
        return await self._run(self._op_threads, limit)

    def list_threads(self, *, limit: int | None = None) -> builtins.list[ThreadInfo]:
        return self._sync(self.alist_threads(limit=limit))

    # -- sync API: only from another thread than the event loop's ----------------------

    def _sync(self, coro: Coroutine[Any, Any, T]) -> T:
        loop = self.loop
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop is None or not loop.is_running() or running is loop:
            coro.close()
            raise CheckpointerError(
                "AsyncSQLAlchemySaver's sync methods only work from a thread other than its "
                "event loop's (e.g. sync nodes); in async code use the a-prefixed methods "
                "(graph.aget_state, ...), or use SQLAlchemySaver for a sync program")
        return asyncio.run_coroutine_threadsafe(coro, loop).result()

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return self._sync(self.aget_tuple(config))

    def list(self, config: RunnableConfig | None, *, filter: dict[str, Any] | None = None,
             before: RunnableConfig | None = None,
             limit: int | None = None) -> Iterator[CheckpointTuple]:
        async def collect() -> list[CheckpointTuple]:
            return [t async for t in self.alist(config, filter=filter, before=before,
                                                limit=limit)]
        return iter(self._sync(collect()))

    def put(self, config: RunnableConfig, checkpoint: Checkpoint, metadata: CheckpointMetadata,
            new_versions: ChannelVersions) -> RunnableConfig:
        return self._sync(self.aput(config, checkpoint, metadata, new_versions))

    def put_writes(self, config: RunnableConfig, writes: Sequence[tuple[str, Any]],
                   task_id: str, task_path: str = "") -> None:
        self._sync(self.aput_writes(config, writes, task_id, task_path))

    def delete_thread(self, thread_id: str) -> None:
        self._sync(self.adelete_thread(thread_id))

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        self._sync(self.adelete_for_runs(run_ids))

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        self._sync(self.acopy_thread(source_thread_id, target_thread_id))

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest",
              keep_last: int = 1) -> None:
        self._sync(self.aprune(thread_ids, strategy=strategy, keep_last=keep_last))

    def get_delta_channel_history(self, *, config: RunnableConfig,
                                  channels: Sequence[str]) -> Mapping[str, DeltaChannelHistory]:
        return self._sync(self.aget_delta_channel_history(config=config, channels=channels))


async def _exec(conn: AsyncConnection, msg: Any, direct: DirectWriter | None = None) -> Any:
    if isinstance(msg, P | Q):
        writes = writes_of(msg)
        counts = await direct.arun(conn, writes) if direct is not None else None
        if counts is None:
            counts = [await _exec_q(conn, q) for q in writes]
        return answer(msg, counts)
    if isinstance(msg, R):
        rows = await direct.aread(conn, msg.stmt, msg.params) if direct is not None else None
        return rows if rows is not None else (await conn.execute(msg.stmt, msg.params)).all()
    res = await conn.execute(msg)
    return res.all() if res.returns_rows else res.rowcount


async def _exec_q(conn: AsyncConnection, msg: Q) -> int:
    # one row: a plain execute (an executemany goes through the driver's pipeline)
    params = msg.params[0] if len(msg.params) == 1 else msg.params
    return (await conn.execute(msg.stmt, params)).rowcount


async def _drive(conn: AsyncConnection, op: Op, afters: list[After],
                 direct: DirectWriter | None = None, first: Any = None) -> Any:
    """See ``_sync._drive``."""
    try:
        msg = next(op) if first is None else first
        while True:
            if isinstance(msg, After):
                afters.append(msg)
                msg = op.send(None)
            elif isinstance(msg, Emit):
                raise TypeError("streaming operations must be run with _stream")
            else:
                msg = op.send(await _exec(conn, msg, direct))
    except StopIteration as stop:
        return stop.value
