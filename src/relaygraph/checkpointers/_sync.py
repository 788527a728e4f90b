"""`SQLAlchemySaver`: the synchronous shell around the shared core."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import functools
import itertools
import os
import re
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

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

from relaygraph.checkpointers import _schema as S
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
from relaygraph.checkpointers._direct import (
    AutocommitCheckout,
    DirectWriter,
    LiteConnection,
    SyncConn,
    supports,
)
from relaygraph.checkpointers._errors import DatabaseUnavailableError, SetupRequiredError
from relaygraph.checkpointers._kept import CallerCheckouts, KeptCheckouts, Lender
from relaygraph.checkpointers._protocol import answer, writes_of
from relaygraph.checkpointers._retry import (
    DEFAULT_LOCK_TIMEOUT,
    DEFAULT_STATEMENT_TIMEOUT,
    RetryPolicy,
    is_transient,
    set_timeouts,
    timeout_error,
    timeout_kind,
)
from relaygraph.checkpointers._stop import note_failed_save, trouble_begins, trouble_ends
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
    sqlite_missing_folder,
    sqlite_pragmas,
    sqlite_read_only,
)

# SQLite, PostgreSQL and MySQL/MariaDB naming one of relaygraph's tables as missing
# (only the message's first line: PostgreSQL quotes the statement after it)
_MISSING_TABLE = re.compile(
    r"no such table: relaygraph_|relation \"relaygraph_\w+\" does not exist"
    r"|table '[^']*relaygraph_\w+' doesn't exist", re.IGNORECASE)


def translate_db_error(exc: sa.exc.DBAPIError, url: Any,
                       timeouts: dict[str, float | None] | None = None) -> Exception:
    """Map driver errors to relaygraph errors with the fix in the message."""
    text = str(exc.orig) if exc.orig is not None else str(exc)
    which = timeout_kind(exc)
    if which is not None:
        return timeout_error(exc, which, timeouts or {})
    if _MISSING_TABLE.search(text.split("\n", 1)[0]):
        return SetupRequiredError(
            "the relaygraph checkpoint tables do not exist in this database; call "
            "saver.setup() (or await saver.asetup()) once before using the saver")
    if "readonly database" in text or "read-only file system" in text.lower():
        safe = url.render_as_string(hide_password=True)
        return DatabaseUnavailableError(
            f"the database at {safe} is read-only for this process (a read-only file "
            f"system, or file permissions): it can be read, not written ({text.strip()})")
    if "database or disk is full" in text or "No space left" in text:
        safe = url.render_as_string(hide_password=True)
        return DatabaseUnavailableError(
            f"the disk holding the database at {safe} is full: nothing of this write was "
            f"stored; free some space and run again ({text.strip()})")
    unavailable = isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError)
    if unavailable or exc.connection_invalidated:
        safe = url.render_as_string(hide_password=True)
        folder = sqlite_missing_folder(url) if "unable to open" in text else None
        hint = (f"; its folder {folder} does not exist: create it first (SQLite creates "
                "the file, not its folders), or fix the path" if folder else "")
        return DatabaseUnavailableError(
            f"cannot use the database at {safe}: {text.strip()}{hint}")
    return exc


def db_error(saver: BaseSQLAlchemySaver, exc: sa.exc.DBAPIError, attempts: int,
             started: float | None) -> Exception:
    """``translate_db_error``, saying how long the saver retried before giving up."""
    out = translate_db_error(exc, saver.engine.url, saver._timeouts)  # type: ignore[attr-defined]
    if attempts > 1 and started is not None and isinstance(out, DatabaseUnavailableError):
        spent = saver.retry.clock() - started
        out = DatabaseUnavailableError(
            f"{out} (tried {attempts} times over {spent:.1f} s; the saver's "
            f"retry=RetryPolicy(window={saver.retry.window:g}) sets how long)")
    return out


class SQLAlchemySaver(BaseSQLAlchemySaver):
    """A LangGraph checkpointer on any SQLAlchemy database (sync API, async via threads).

    Args:
        engine: a caller-owned SQLAlchemy ``Engine``; the saver never disposes it.
            Reads and puts need no transaction: on MySQL an engine created with
            ``isolation_level="AUTOCOMMIT"`` is fastest, as any other has its
            connections switched to autocommit and back on every checkout. From a
            PostgreSQL pool of two or more the saver keeps a connection out for a moment
            between its operations (autocommitted while it has it; back after one second
            without one, see ``_kept.CallerCheckouts``), so there either kind of engine
            is as fast; a kept session ends when the engine is disposed.
        serde: serializer; defaults to LangGraph's JsonPlusSerializer in strict msgpack
            mode (never pickle). Pass e.g. ``EncryptedSerializer.from_pycryptodome_aes()``
            for encryption at rest.
        segment_every: list channels are stored as appended deltas; every
            ``segment_every`` versions a segment row bounds the rows a read touches.
        compress: zstd-compress stored values when that saves space.
        cache_size: entries of each in-memory cache (the latest stored value of every list
            channel, checkpoint versions, task writes), by which a put stores only what
            was appended. A thread holds one value per list channel, its latest; a miss
            costs one value stored whole, never a wrong one.
        thread_dictionaries: once a thread has stored about 16 steps' rows through this
            saver, train a small zstd dictionary (4 kB) on them, store it with the thread,
            and compress the thread's later rows with it: on long threads a step's rows
            take about a fifth less space. It is deleted and copied with its thread. A
            saver with this off still reads rows written with one.
        retry: how long an operation whose connection dropped (a database restart, a
            failover) is retried, with backoff; by default for up to 10 seconds. See
            :class:`RetryPolicy`.

    Example:
        >>> with SQLAlchemySaver.from_conn_string("sqlite:///relaygraph.db") as saver:
        ...     saver.setup()
        ...     graph = builder.compile(checkpointer=saver)  # doctest: +SKIP
    """

    def __init__(self, engine: sa.Engine, *, serde: SerializerProtocol | None = None,
                 segment_every: int = 32, compress: bool = True,
                 cache_size: int = 4096, thread_dictionaries: bool = True,
                 retry: RetryPolicy | None = None) -> None:
        if isinstance(engine, str):
            raise TypeError("SQLAlchemySaver takes an Engine; for a URL use "
                            "SQLAlchemySaver.from_conn_string(url)")
        if hasattr(engine, "sync_engine"):  # an AsyncEngine: it failed later, obscurely
            raise TypeError("SQLAlchemySaver takes a sync Engine, got AsyncEngine; use "
                            "AsyncSQLAlchemySaver(engine) for an AsyncEngine")
        super().__init__(serde=serde, segment_every=segment_every, compress=compress,
                         cache_size=cache_size, thread_dictionaries=thread_dictionaries,
                         retry=retry)
        self.engine = engine
        self._dialect = engine.dialect
        # SQLite has one writer at a time; queueing in-process writers on a lock (and
        # taking the write lock up front) avoids busy-wait sleeps and upgrade deadlocks.
        self._write_lock = threading.Lock() if engine.dialect.name == "sqlite" else None
        # reads and one-statement writes autocommit, the rest runs in transactions
        self._reader, self._tx = engine_views(engine)
        self._direct = DirectWriter(engine.dialect) if supports(engine.dialect) else None
        # a caller's transactional psycopg engine: its autocommitted work takes a bare
        # checkout switched by psycopg's own flag (see ``AutocommitCheckout``)
        self._switched = (self._reader if self._direct is not None and self._direct.pipelined
                          and self._reader is not engine else None)
        # from_conn_string on PostgreSQL/MySQL: task writes go through an autocommitted
        # pool of their own. A PostgreSQL backend fills its own insert page in each table;
        # with one pool, a put and the task writes stored beside it take turns on the
        # same connections, and every backend keeps a partly filled page in every table
        # (about 5% of a small database). Apart, each kind of insert keeps one backend.
        self._writes_reader: sa.Engine | None = None
        # from_conn_string on PostgreSQL: idle checkouts of those two pools, kept between
        # operations (see ``KeptCheckouts``)
        self._kept: Lender | None = None
        self._kept_lane: Lender | None = None
        if (self._direct is not None and self._direct.pipelined
                and CallerCheckouts.suits(engine)):
            # a caller's psycopg pool (transactional or autocommitted): a connection at a
            # time is kept for a moment between operations, for puts and reads and for
            # task writes
            self._kept = CallerCheckouts(engine, self._direct, _reaper.watch)
            self._kept_lane = CallerCheckouts(engine, self._direct, _reaper.watch)
            weakref.finalize(self, self._kept.close)
            weakref.finalize(self, self._kept_lane.close)
        # SQLite runs its cached statements on the driver connection: the operations go
        # without SQLAlchemy's Connection and Transaction too (see ``LiteConnection``)
        self._lite = self._direct if engine.dialect.name == "sqlite" else None
        # an in-memory database on one shared connection (StaticPool): every operation
        # takes its turn on it, reads included (sqlite3 fails two threads on one connection)
        self._one_conn = (self._lite is not None
                          and isinstance(engine.pool, sa.pool.StaticPool))
        # and its writes keep their connection between them (see ``HeldWriter``)
        self._writer: HeldWriter | None = None
        if self._lite is not None and HeldWriter.suits(engine):
            assert self._write_lock is not None
            self._writer = HeldWriter(engine, self._lite, self._write_lock)
            # back to the pool when the saver goes, whoever disposes the engine after
            weakref.finalize(self, self._writer.release)

    @classmethod
    @contextmanager
    def from_conn_string(cls, url: str, *, max_connections: int = DEFAULT_MAX_CONNECTIONS,
                         lock_timeout: float | None = DEFAULT_LOCK_TIMEOUT,
                         statement_timeout: float | None = DEFAULT_STATEMENT_TIMEOUT,
                         **kwargs: Any) -> Iterator[SQLAlchemySaver]:
        """Create an engine for ``url``, yield a saver on it, dispose the engine after.

        ``postgresql://`` uses psycopg 3, ``mysql://`` PyMySQL, ``sqlite://`` the standard
        library. Connections time out after a few seconds instead of hanging. On
        PostgreSQL, connections of the saver's own autocommitted pools stay checked out
        between its operations (see ``_kept.KeptCheckouts``). An in-memory SQLite URL
        (``sqlite://``, ``sqlite:///:memory:``) is one database for every thread
        LangGraph runs the saver on, held on one connection that the saver's operations
        take turns on; it lives as long as the saver.

        Args:
            url: the database.
            max_connections: the most connections this saver opens to a PostgreSQL or
                MySQL server, over all its pools (transactions, autocommitted reads and
                puts, task writes; ``saver.engine``, which ``LeaseStore.from_saver`` and
                ``EffectLedger.from_saver`` share, is one of them). Operations beyond it
                wait for a free connection. The default, 10, lets 9 worker processes
                share a server with PostgreSQL's default ``max_connections=100``, each
                running any number of graphs at once.
            lock_timeout: seconds a statement may wait for a lock (SQLite: for another
                writer) before it fails with ``DatabaseTimeoutError``; None: no limit.
            statement_timeout: seconds a statement may run (PostgreSQL, MySQL/MariaDB).
            **kwargs: passed to the saver (``serde``, ``retry``, ...).
        """
        u = sqlite_read_only(resolve_url(url, async_=False))
        sizes = pool_sizes(u, max_connections)
        kw = engine_kwargs(u)
        if u.get_backend_name() == "sqlite" and not is_sqlite_file(u):
            # one in-memory database for every thread LangGraph runs the saver on (the
            # default pool would give each thread a new, empty one)
            kw.update(poolclass=sa.pool.StaticPool,
                      connect_args={**kw.get("connect_args", {}), "check_same_thread": False})
        engine = sa.create_engine(u, **kw, **sizes[0])
        set_timeouts(engine, lock=lock_timeout, statement=statement_timeout)
        if u.get_backend_name() == "sqlite":
            sa.event.listen(engine, "connect", sqlite_pragmas)
        # ``saver.engine`` stays transactional for whoever else uses it; the saver's own
        # autocommitted work gets a pool of its own that never switches (engine_views)
        fast_kw = autocommit_kwargs(u)
        fast = sa.create_engine(u, **fast_kw, **sizes[1]) if fast_kw is not None else None
        lane = sa.create_engine(u, **fast_kw, **sizes[2]) if fast_kw is not None else None
        for extra in (fast, lane):
            if extra is not None:
                set_timeouts(extra, lock=lock_timeout, statement=statement_timeout)
        saver: SQLAlchemySaver | None = None
        try:
            saver = cls(engine, **kwargs)
            saver._timeouts = {"lock": lock_timeout, "statement": statement_timeout}
            if fast is not None:
                saver._reader = fast
                saver._writes_reader = lane
                saver._kept = saver._kept_lane = None  # its own pools: kept as below
                direct = saver._direct
                if direct is not None and KeptCheckouts.suits(fast):
                    saver._kept = KeptCheckouts(fast, direct)
                if direct is not None and lane is not None and KeptCheckouts.suits(lane):
                    saver._kept_lane = KeptCheckouts(lane, direct)
            yield saver
        finally:
            if saver is not None:
                saver._close()
            if saver is not None and saver._writer is not None:
                saver._writer.release()
            for kept in (saver._kept, saver._kept_lane) if saver is not None else ():
                if kept is not None:
                    kept.close()
            engine.dispose()
            if fast is not None:
                fast.dispose()
            if lane is not None:
                lane.dispose()

    # -- driving the core -------------------------------------------------------------

    def _run(self, make: Callable[..., Op], *args: Any, write: bool = False,
             writes_lane: bool = False, short: bool = False) -> Any:
        """Run one operation: a transaction for writes, autocommitted reads.

        A connection the driver reports as dropped (server restart, idle timeout) is
        replaced and the operation, which is idempotent, runs once more.
        """
        if not self._schema_ok:
            self._run_checked(self._op_schema_version)
        troubled: list[Any] = []
        try:
            return self._retrying(
                lambda: self._run_once(make(*args), write=write, writes_lane=writes_lane,
                                       short=short),
                on_retry=lambda: _first_retry(troubled))
        except Exception as exc:
            note_failed_save(make, args, exc)  # the run stops at its next step boundary
            raise
        finally:
            if troubled:
                trouble_ends(troubled[0])

    def _retrying(self, work: Callable[[], Any],
                  on_retry: Callable[[], Any] | None = None) -> Any:
        """Run ``work``, again while the database reports a dropped connection, with
        backoff within ``self.retry``'s window (see ``_retry``)."""
        started: float | None = None
        for attempt in itertools.count(1):
            try:
                return work()
            except sa.exc.DBAPIError as exc:
                if is_transient(exc):
                    if started is None:
                        started = self.retry.clock()
                    wait = self.retry.delay(attempt, started)
                    if wait is not None:
                        if on_retry is not None:
                            on_retry()
                        self.retry.sleep(wait)
                        continue
                raise db_error(self, exc, attempt, started) from exc
        raise AssertionError("unreachable")

    def _run_checked(self, make: Callable[[], Op]) -> None:
        self._check_open()
        version = self._retrying(lambda: self._run_once(make(), write=False))
        self._check_schema(version)

    def _run_once(self, op: Op, *, write: bool, writes_lane: bool = False,
                  short: bool = False) -> Any:
        afters: list[After] = []
        if self._lite is not None:
            assert self._write_lock is not None  # SQLite's
            result = run_lite(self.engine, self._lite, self._write_lock, op, afters, write,
                              self._writer, serial=self._one_conn, short=short)
        elif write and self._write_lock is not None:
            with self._write_lock, self._tx.begin() as conn:
                if self._direct is not None:
                    self._direct.execute(conn, "BEGIN IMMEDIATE")
                else:
                    conn.exec_driver_sql("BEGIN IMMEDIATE")
                result = _drive(conn, op, afters, self._direct)
        elif write:
            with self._tx.begin() as conn:
                result = _drive(conn, op, afters, self._direct)
        else:
            # reads need no transaction: stored checkpoints never change; single-statement
            # writes commit on their own
            lane = self._writes_reader if writes_lane else None
            kept = self._kept_lane if writes_lane else self._kept
            if kept is not None:
                held = kept.acquire()
                try:
                    result = _drive(held, op, afters, self._direct)
                finally:
                    kept.release(held)
            elif lane is None and self._switched is not None and self._reader is self._switched:
                assert self._direct is not None
                checkout = AutocommitCheckout(self.engine, self._direct)
                try:
                    result = _drive(checkout, op, afters, self._direct)
                finally:
                    checkout.close()
            else:
                with (lane or self._reader).connect() as conn:
                    result = _drive(conn, op, afters, self._direct)
        for a in afters:
            a.fn()
        return result

    def _stream(self, op: Op) -> Iterator[Any]:
        """Run a read-only streaming op: each statement on its own, nothing held while yielding."""
        if not self._schema_ok:
            self._run_checked(self._op_schema_version)
        try:
            msg = next(op)
            while True:
                if isinstance(msg, Emit):
                    yield msg.item
                    msg = op.send(None)
                elif isinstance(msg, After):
                    msg = op.send(None)
                else:
                    msg = op.send(self._retrying(functools.partial(self._exec_one, msg)))
        except StopIteration:
            return

    def _exec_one(self, msg: Any) -> Any:
        if self._lite is not None:
            if self._one_conn:
                assert self._write_lock is not None
                with self._write_lock:
                    return exec_lite(self.engine, self._lite, msg)
            return exec_lite(self.engine, self._lite, msg)
        if self._kept is not None:
            held = self._kept.acquire()
            try:
                return _exec(held, msg, self._direct)
            finally:
                self._kept.release(held)
        with self._reader.connect() as conn:
            return _exec(conn, msg, self._direct)

    # -- setup --------------------------------------------------------------------------

    def setup(self) -> None:
        """Create or migrate the checkpoint tables. Idempotent; safe across processes.

        On a SQLite file this also puts the database in WAL journal mode (stored in the
        file, as ``SqliteSaver.setup()`` does), on a caller's engine too.
        """
        self._check_open()

        def wal() -> None:
            with self.engine.connect() as conn:
                persist_wal(conn.connection.dbapi_connection)

        if is_sqlite_file(self.engine.url):
            self._retrying(wal)  # its errors explained as the operations' are

        def migrate() -> None:
            with self._tx.begin() as conn:
                S.run_migrations(conn)

        self._retrying(migrate)
        self._schema_ok = False  # checked again, against what the database now holds

    # -- BaseCheckpointSaver ------------------------------------------------------------

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return self._run(self._op_get_tuple, config, short=True)

    def list(self, config: RunnableConfig | None, *, filter: dict[str, Any] | None = None,
             before: RunnableConfig | None = None,
             limit: int | None = None) -> Iterator[CheckpointTuple]:
        return self._stream(self._op_list(config, filter, before, limit))

    def put(self, config: RunnableConfig, checkpoint: Checkpoint, metadata: CheckpointMetadata,
            new_versions: ChannelVersions) -> RunnableConfig:
        # Outside SQLite, a put is a few autocommitted statements in a crash-safe order
        # (frames, then slices of them, then the checkpoint row that makes them visible):
        # fewer round trips than a transaction, and a failure leaves only unreferenced rows.
        # The parent's writes still being stored are waited for: deltas point at them.
        self._cache.writes.wait(self._writes_key(config))
        fence = self._fence(config)
        if fence is not None:
            # a fenced put is one transaction: the fence's lock is held until the
            # checkpoint row is committed (see ``_fence``)
            return self._run(self._op_fenced, fence, self._op_put, config, checkpoint,
                             metadata, new_versions, write=True)
        return self._run(self._op_put, config, checkpoint, metadata, new_versions,
                         write=self._write_lock is not None)

    def put_writes(self, config: RunnableConfig, writes: Sequence[tuple[str, Any]],
                   task_id: str, task_path: str = "") -> None:
        key = self._writes_key(config)
        self._cache.writes.begin(key)
        try:
            fence = self._fence(config)
            if fence is not None:  # behind the fence in one transaction, as a fenced put
                self._run(self._op_fenced, fence, self._op_put_writes, config, writes,
                          task_id, task_path, True, write=True)
                return
            # one autocommitted INSERT; a task that already stored writes here is merged
            # in a transaction (SQLite always takes the one-writer path)
            if self._write_lock is None and self._run(
                    self._op_put_writes, config, writes, task_id, task_path,
                    False, writes_lane=True) is not CONFLICT:
                return
            self._run(self._op_put_writes, config, writes, task_id, task_path, True,
                      write=True)
        finally:
            self._cache.writes.end(key)

    def delete_thread(self, thread_id: str) -> None:
        self._run(self._op_delete_thread, thread_id, write=True)

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        self._run(self._op_delete_for_runs, run_ids, write=True)

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        self._run(self._op_copy_thread, source_thread_id, target_thread_id, write=True)

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest",
              keep_last: int = 1) -> None:
        """Drop old checkpoints. ``keep_latest`` keeps the newest ``keep_last`` per namespace.

        Whatever a kept checkpoint needs stays: the delta chains of its channels and, for
        LangGraph ``DeltaChannel`` values, the ancestors their writes are replayed from.
        ``delete`` removes the threads entirely.
        """
        self._run(self._op_prune, thread_ids, strategy, keep_last, write=True)

    def get_delta_channel_history(self, *, config: RunnableConfig,
                                  channels: Sequence[str]) -> Mapping[str, DeltaChannelHistory]:
        return self._run(self._op_delta_history, config, channels)

    def list_threads(self, *, limit: int | None = None) -> builtins.list[ThreadInfo]:
        """Threads, most recently checkpointed first, without decoding any state."""
        return self._run(self._op_threads, limit)

    # -- async API: the same code on a worker thread ------------------------------------

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await asyncio.to_thread(self.get_tuple, config)

    async def alist(self, config: RunnableConfig | None, *,
                    filter: dict[str, Any] | None = None, before: RunnableConfig | None = None,
                    limit: int | None = None) -> AsyncIterator[CheckpointTuple]:
        items = await asyncio.to_thread(
            lambda: list(self.list(config, filter=filter, before=before, limit=limit)))
        for item in items:
            yield item

    async def aput(self, config: RunnableConfig, checkpoint: Checkpoint,
                   metadata: CheckpointMetadata, new_versions: ChannelVersions) -> RunnableConfig:
        return await asyncio.to_thread(self.put, config, checkpoint, metadata, new_versions)

    async def aput_writes(self, config: RunnableConfig, writes: Sequence[tuple[str, Any]],
                          task_id: str, task_path: str = "") -> None:
        await asyncio.to_thread(self.put_writes, config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        await asyncio.to_thread(self.delete_thread, thread_id)

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        await asyncio.to_thread(self.delete_for_runs, run_ids)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        await asyncio.to_thread(self.copy_thread, source_thread_id, target_thread_id)

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest",
                     keep_last: int = 1) -> None:
        await asyncio.to_thread(self.prune, thread_ids, strategy=strategy, keep_last=keep_last)

    async def aget_delta_channel_history(
        self, *, config: RunnableConfig, channels: Sequence[str]
    ) -> Mapping[str, DeltaChannelHistory]:
        return await asyncio.to_thread(
            lambda: self.get_delta_channel_history(config=config, channels=channels))

    async def alist_threads(self, *, limit: int | None = None) -> builtins.list[ThreadInfo]:
        return await asyncio.to_thread(lambda: self.list_threads(limit=limit))


def run_lite(engine: sa.Engine, direct: DirectWriter, write_lock: threading.Lock, op: Op,
             afters: list[After], write: bool, writer: HeldWriter | None = None, *,
             serial: bool = False, short: bool = False) -> Any:
    """Run ``op`` on a pooled sqlite3 connection (see ``LiteConnection``): reads as they
    come (under ``write_lock`` too when ``serial``), writes in one ``BEGIN IMMEDIATE``
    transaction under ``write_lock``, on the connection ``writer`` keeps between writes
    when given one.

    A ``short`` read (one checkpoint: ``get_tuple``) runs on the writer's connection when
    no write holds it. A connection that has sat in the pool while another wrote must
    reload the pages it reads (~0.15 ms for a thread's first ``get_tuple`` after a run);
    the writer's has them. It never waits for the writer: a write under way sends the
    read to the pool as before.
    """
    if not write and short and writer is not None and write_lock.acquire(blocking=False):
        try:
            held = writer.take()
            if held is not None:
                return _on_kept(writer, held, held, lambda c: _drive(c, op, afters, direct))
        finally:
            write_lock.release()
    if not write:
        with write_lock if serial else contextlib.nullcontext():
            conn = LiteConnection(engine, direct)
            try:
                return _drive(conn, op, afters, direct)
            finally:
                conn.close()

    # The op's work up to its first statement (a put's rows serialized and compressed)
    # runs before the write lock and SQLite's: other writers, in this process and in
    # others, wait only for the statements.
    try:
        first = next(op)
    except StopIteration as stop:
        return stop.value

    def transaction(conn: LiteConnection) -> Any:
        conn.begin_write()
        result = _drive(conn, op, afters, direct, first)
        conn.commit()
        return result

    with write_lock:
        held = writer.take() if writer is not None else None
        return _on_kept(writer, held, held or LiteConnection(engine, direct), transaction)


def _on_kept(writer: HeldWriter | None, held: LiteConnection | None, conn: LiteConnection,
             work: Callable[[LiteConnection], Any]) -> Any:
    """``work(conn)`` under the write lock; ``conn`` is then kept for the next operation
    unless a ``Connection`` was built over it (rare statements), ``work`` failed, or there
    is no ``writer`` to keep it. ``held``: the connection ``writer`` lent, if any."""
    kept = False
    try:
        result = work(conn)
        kept = writer is not None and writer.keep(conn)
        return result
    finally:
        if not kept:
            if held is not None and writer is not None:
                writer.drop()
            conn.close()  # rolls back what did not commit


#: seconds a writer connection stays checked out after the saver's last write
HOLD_IDLE = 1.0


class HeldWriter:
    """The SQLite connection a saver writes on, kept checked out between its writes.

    A write on SQLite costs a pool checkout and return (SQLAlchemy's pool events, its
    reset on return) and, on a caller's connection left at ``synchronous=FULL``, two
    ``PRAGMA synchronous`` statements: together about a tenth of a step's saver time.
    The saver's writes are serialized on its write lock anyway, so one connection
    serves them all. It is used only under the write lock and never holds a
    transaction between writes (a SQLite connection outside a transaction holds no
    lock), and it goes back to the pool, its ``synchronous`` level restored, after
    ``HOLD_IDLE`` seconds without a write, when the saver is closed or collected, or
    after any failure. Only connections of a ``QueuePool`` (SQLAlchemy's default for
    SQLite files) of two connections or more are kept: a ``NullPool`` means the
    application wants none kept, a single-connection pool (``:memory:``) is shared with
    the application, and a pool of one would leave none for the saver's reads and the
    application's own work. None is kept from a pool with ``checkout``, ``checkin`` or
    ``reset`` listeners or ``pool_pre_ping`` (see ``acts_per_checkout``), asked when a
    connection is first kept: a listener added while the writer keeps one applies from
    the next connection it takes (after a pause in the writes, or a failure).
    """

    __slots__ = ("_checked", "_conn", "_lock", "_pid", "_engine", "_direct", "last",
                 "__weakref__")

    def __init__(self, engine: sa.Engine, direct: DirectWriter,
                 write_lock: threading.Lock) -> None:
        self._engine = engine
        self._direct = direct
        self._lock = write_lock
        self._conn: LiteConnection | None = None
        self._pid = os.getpid()
        self._checked: LiteConnection | None = None
        self.last = 0.0

    @staticmethod
    def suits(engine: sa.Engine) -> bool:
        pool = engine.pool
        if type(pool) is not sa.pool.QueuePool:
            return False
        overflow = pool._max_overflow  # -1: no limit
        return overflow < 0 or pool.size() + overflow >= 2

    def take(self) -> LiteConnection | None:
        """The kept connection, if any (under the write lock)."""
        if self._pid != os.getpid():  # a forked child: the parent's connection is not ours
            self._conn, self._pid = None, os.getpid()
        conn, self._conn = self._conn, None
        return conn

    def keep(self, conn: LiteConnection) -> bool:
        """Keep ``conn`` for the next write (under the write lock), if it can be."""
        if conn.has_connection():
            return False
        if conn is not self._checked:  # asked once per connection it keeps
            if acts_per_checkout(self._engine.pool):
                return False
            self._checked = conn
        self._conn = conn
        self.last = time.monotonic()
        _reaper.watch(self)
        return True

    def drop(self) -> None:
        self._conn = self._checked = None

    def reap(self, idle: float) -> bool:
        """Give the connection back after ``idle`` seconds without a write; whether one
        is still kept (for the watcher)."""
        self.release(idle=idle)
        return self._conn is not None

    def release(self, *, idle: float | None = None) -> None:
        """Give the kept connection back to the pool (after ``idle`` seconds without a
        write, if given); waits for a write in progress unless ``idle`` is given."""
        if idle is None:
            self._lock.acquire()
        elif not self._lock.acquire(blocking=False):
            return  # a write is in progress: not idle
        try:
            conn = self._conn
            if conn is None or (idle is not None and time.monotonic() - self.last < idle):
                return
            self._conn = self._checked = None
            if self._pid == os.getpid():
                conn.close()
        finally:
            self._lock.release()


class _Reaper:
    """One daemon thread that gives idle kept connections back to their pools: those of
    SQLite writers (``HeldWriter``) and of callers' PostgreSQL pools
    (``CallerCheckouts``). Each has ``reap(idle)``, which says whether it still keeps one."""

    def __init__(self) -> None:
        self._writers: weakref.WeakSet[Any] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = 0

    def watch(self, writer: Any) -> None:
        if writer in self._writers and self._pid == os.getpid():
            return
        with self._lock:
            self._writers.add(writer)
            if self._thread is None or self._pid != os.getpid():
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name="relaygraph-kept-connections")
                self._thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(HOLD_IDLE / 2)
            for w in list(self._writers):
                if not w.reap(HOLD_IDLE):
                    self._writers.discard(w)


_reaper = _Reaper()


class SqliteWorker:
    """SQLite for the async saver: each operation runs on a worker thread with sqlite3.

    aiosqlite hands every statement to its own thread and back to the event loop; a put
    is four such trips (``BEGIN``, two statements, ``COMMIT``). Running the whole
    operation in one trip, on the same code as :class:`SQLAlchemySaver`, halves the
    async saver's time per step. Writes of the saver queue on one lock, as in the
    sync saver.
    """

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.direct = DirectWriter(engine.dialect)
        self.write_lock = threading.Lock()
        self.writer = (HeldWriter(engine, self.direct, self.write_lock)
                       if HeldWriter.suits(engine) else None)

    def run(self, op: Op, afters: list[After], write: bool, short: bool = False) -> Any:
        return run_lite(self.engine, self.direct, self.write_lock, op, afters, write,
                        self.writer, short=short)

    def close(self) -> None:
        """Give the connection kept for writes back to the pool."""
        if self.writer is not None:
            self.writer.release()

    def execute(self, msg: Any) -> Any:
        """One statement of a streaming read."""
        return exec_lite(self.engine, self.direct, msg)


def exec_lite(engine: sa.Engine, direct: DirectWriter, msg: Any) -> Any:
    """One statement of a streaming read on a pooled sqlite3 connection."""
    conn = LiteConnection(engine, direct)
    try:
        return _exec(conn, msg, direct)
    finally:
        conn.close()


def _exec(conn: SyncConn, msg: Any, direct: DirectWriter | None = None) -> Any:
    if isinstance(msg, P | Q):
        writes = writes_of(msg)
        counts = direct.run(conn, writes) if direct is not None else None
        if counts is None:
            counts = [_exec_q(conn, q) for q in writes]
        return answer(msg, counts)
    if isinstance(msg, R):
        rows = direct.read(conn, msg.stmt, msg.params) if direct is not None else None
        return rows if rows is not None else conn.execute(msg.stmt, msg.params).all()
    res = conn.execute(msg)
    return res.all() if res.returns_rows else res.rowcount


def _exec_q(conn: SyncConn, msg: Q) -> int:
    # one row: a plain execute (an executemany goes through the driver's pipeline)
    params = msg.params[0] if len(msg.params) == 1 else msg.params
    return conn.execute(msg.stmt, params).rowcount


class Escalate(Exception):
    """A statement needs SQLAlchemy's ``Connection`` where none can be built (on
    aiosqlite's thread, see ``_aiolite``); ``msg`` is that statement, not yet run."""

    def __init__(self) -> None:
        super().__init__("this statement needs SQLAlchemy's Connection")
        self.msg: Any = None


def _drive(conn: SyncConn, op: Op, afters: list[After],
           direct: DirectWriter | None = None, first: Any = None) -> Any:
    """Run ``op``'s statements on ``conn``; ``first``: its first message, when the op
    was started before (``run_lite``)."""
    try:
        msg = next(op) if first is None else first
        while True:
            if isinstance(msg, After):
                afters.append(msg)
                msg = op.send(None)
            elif isinstance(msg, Emit):
                raise TypeError("streaming operations must be run with _stream")
            else:
                try:
                    res = _exec(conn, msg, direct)
                except Escalate as esc:
                    esc.msg = msg
                    raise
                msg = op.send(res)
    except StopIteration as stop:
        return stop.value


def _first_retry(troubled: list[Any]) -> None:
    """On an operation's first retry: the run it belongs to is in trouble (``_stop``)."""
    if not troubled:
        troubled.append(trouble_begins())
