"""``EffectLedger``: the SQL record of every side effect a graph's nodes performed.

One row per effect call, keyed by the effect's name and its key (see ``relaygraph.durable.
effect``). A row is ``started`` from just before the call until its result is recorded,
then ``done`` with the result, serialized by the saver's safe serializer (strict msgpack,
never pickle). A ``started`` row that a later execution finds is a call "in doubt": it began
and never recorded its end (the process died, or the database went away in between).

The statements live once, as functions of a SQLAlchemy ``Connection``; the sync ledger runs
them in ``engine.begin()`` and the async one through ``AsyncConnection.run_sync``.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy as sa
from langgraph.checkpoint.serde.base import SerializerProtocol
from sqlalchemy.ext.asyncio import AsyncEngine

from relaygraph._clock import Clock, system_clock
from relaygraph._errors import ConfigurationError, RelaygraphError
from relaygraph._sql import acreate_tables, create_tables
from relaygraph.durable._tables import effects_table as T

Status = Literal["started", "done"]
ResolvedBy = Literal["call", "reconcile", "review", "manual"]

# a result the serializer refused: the call is done, and replaying it says why
_UNSTORABLE = "!unstorable"


class EffectLedgerError(RelaygraphError):
    """The ledger cannot be used: its table is missing or the database refused a statement."""


@dataclass(frozen=True)
class EffectRecord:
    """One effect call as the ledger holds it.

    Attributes:
        name: the effect's name.
        key: the call's key (what the function received as ``key=``).
        thread_id: the thread it ran in (``""`` for a call keyed by hand).
        checkpoint_ns: the checkpoint namespace of the task (``""`` at the root graph or
            for a call keyed by hand).
        task_id: the LangGraph task that made the call (``""`` for a call keyed by hand).
        call_index: the call's position among this effect's calls within the task.
        status: ``"started"`` (in doubt if nothing is running it) or ``"done"``.
        attempts: how many times the function was started under this key.
        started_at: when the last attempt started (epoch seconds).
        finished_at: when the result was recorded (epoch seconds), or ``None``.
        resolved_by: how a done call was settled: ``"call"`` (the function returned),
            ``"reconcile"``, ``"review"`` (a human), or ``"manual"`` (`EffectLedger.resolve`).
    """

    name: str
    key: str
    thread_id: str
    checkpoint_ns: str
    task_id: str
    call_index: int
    status: Status
    attempts: int
    started_at: float
    finished_at: float | None
    resolved_by: ResolvedBy | None
    result_type: str | None = None
    result_bytes: bytes | None = None


@dataclass(frozen=True)
class CallSite:
    """Where a call comes from: the columns a new ledger row gets besides its status."""

    name: str
    key: str
    thread_id: str = ""
    checkpoint_ns: str = ""
    task_id: str = ""
    call_index: int = 0


_COLUMNS = (T.c.effect_name, T.c.effect_key, T.c.thread_id, T.c.checkpoint_ns, T.c.task_id,
            T.c.call_index, T.c.status, T.c.attempts, T.c.started_at, T.c.finished_at,
            T.c.resolved_by, T.c.result_type, T.c.result)


def _record(row: Any) -> EffectRecord:
    return EffectRecord(
        name=row[0], key=row[1], thread_id=row[2], checkpoint_ns=row[3] or "",
        task_id=row[4], call_index=row[5], status=row[6], attempts=row[7],
        started_at=row[8], finished_at=row[9], resolved_by=row[10], result_type=row[11],
        result_bytes=bytes(row[12]) if row[12] is not None else None)


# -- the statements, built once with bound parameters, run as functions of a Connection --

def _p(name: str, column: str) -> Any:
    return sa.bindparam(name, type_=T.c[column].type)


_PK = sa.and_(T.c.effect_name == _p("n", "effect_name"), T.c.effect_key == _p("k", "effect_key"))
_STARTED = T.c.status == "started"
_OURS = T.c.attempts == _p("a", "attempts")
_DONE_VALUES = {"status": "done", "result_type": _p("rt", "result_type"),
                "result": _p("rb", "result"), "finished_at": _p("now", "finished_at"),
                "resolved_by": _p("by", "resolved_by")}
_GET = sa.select(*_COLUMNS).where(_PK)
_INSERT = sa.insert(T)
_RECLAIM = sa.update(T).where(_PK, _STARTED, _OURS).values(
    attempts=_p("a2", "attempts"), started_at=_p("now", "started_at"))
_FINISH = sa.update(T).where(_PK, _STARTED).values(**_DONE_VALUES)
_FINISH_OURS = sa.update(T).where(_PK, _STARTED, _OURS).values(**_DONE_VALUES)
_REPLACE_STARTED = sa.update(T).where(_PK, _STARTED).values(
    attempts=T.c.attempts + 1, started_at=_p("now", "started_at"), **{
        **_DONE_VALUES, "finished_at": _p("now", "finished_at")})
_FORGET = sa.delete(T).where(_PK)
_FORGET_OURS = sa.delete(T).where(_PK, _STARTED, _OURS)


def op_get(conn: sa.Connection, name: str, key: str) -> EffectRecord | None:
    row = conn.execute(_GET, {"n": name, "k": key}).first()
    return _record(row) if row is not None else None


def _new_row(site: CallSite, now: float, **values: Any) -> dict[str, Any]:
    return {"effect_name": site.name, "effect_key": site.key, "thread_id": site.thread_id,
            "checkpoint_ns": site.checkpoint_ns, "task_id": site.task_id,
            "call_index": site.call_index, "attempts": 1, "started_at": now,
            "finished_at": None, "resolved_by": None, "result_type": None, "result": None,
            **values}


def op_claim(conn: sa.Connection, site: CallSite, now: float) -> EffectRecord | None:
    """Insert a ``started`` row for a new call; ``None`` when it was inserted, else the row
    already there (done, or in doubt). A concurrent claim of the same call makes the insert
    fail with ``IntegrityError`` (see `EffectLedger.claim`)."""
    found = op_get(conn, site.name, site.key)
    if found is not None:
        return found
    conn.execute(_INSERT, _new_row(site, now, status="started"))
    return None


def op_reclaim(conn: sa.Connection, name: str, key: str, attempts: int, now: float) -> bool:
    """Start another attempt of an in-doubt call; ``False`` if someone else did first."""
    res = conn.execute(_RECLAIM, {"n": name, "k": key, "a": attempts, "a2": attempts + 1,
                                  "now": now})
    return res.rowcount == 1


def op_finish(conn: sa.Connection, name: str, key: str, attempts: int | None,
              typed: tuple[str, bytes], now: float, resolved_by: ResolvedBy) -> bool:
    """Record the result of a started call; ``False`` if it was no longer ours to record."""
    params = {"n": name, "k": key, "rt": typed[0], "rb": typed[1], "now": now,
              "by": resolved_by}
    if attempts is None:
        return conn.execute(_FINISH, params).rowcount == 1
    return conn.execute(_FINISH_OURS, {**params, "a": attempts}).rowcount == 1


def op_insert_done(conn: sa.Connection, site: CallSite, typed: tuple[str, bytes],
                   now: float, *, replace_started: bool) -> None:
    """Record a call made inside the ledger's transaction (raises IntegrityError when a
    concurrent transaction recorded the same call first)."""
    if replace_started:
        res = conn.execute(_REPLACE_STARTED, {"n": site.name, "k": site.key, "rt": typed[0],
                                              "rb": typed[1], "now": now, "by": "call"})
        if res.rowcount != 1:
            raise sa.exc.IntegrityError("effect row changed underneath", None,
                                        Exception("concurrent record"))
        return
    conn.execute(_INSERT, _new_row(site, now, status="done", finished_at=now,
                                   resolved_by="call", result_type=typed[0],
                                   result=typed[1]))


def op_forget(conn: sa.Connection, name: str, key: str, attempts: int | None) -> bool:
    if attempts is None:
        return conn.execute(_FORGET, {"n": name, "k": key}).rowcount > 0
    # only our own unfinished attempt
    return conn.execute(_FORGET_OURS, {"n": name, "k": key, "a": attempts}).rowcount > 0


def op_resolve(conn: sa.Connection, name: str, key: str, typed: tuple[str, bytes],
               now: float) -> bool:
    return conn.execute(_FINISH, {"n": name, "k": key, "rt": typed[0], "rb": typed[1],
                                  "now": now, "by": "manual"}).rowcount == 1


def op_list(conn: sa.Connection, thread_id: str, status: Status | None) -> list[EffectRecord]:
    q = sa.select(*_COLUMNS).where(T.c.thread_id == thread_id)
    if status is not None:
        q = q.where(T.c.status == status)
    rows = conn.execute(q.order_by(T.c.started_at, T.c.effect_name, T.c.call_index)).all()
    return [_record(r) for r in rows]


def op_delete_thread(conn: sa.Connection, thread_id: str) -> int:
    return conn.execute(sa.delete(T).where(T.c.thread_id == thread_id)).rowcount


def begin_write(conn: sa.Connection) -> None:
    """Take SQLite's write lock up front, so that a read-then-write transaction never
    fails to upgrade ("database is locked") beside another writer."""
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def missing_table(exc: sa.exc.DBAPIError) -> bool:
    text = str(exc.orig).lower()
    return ("no such table" in text or "doesn't exist" in text
            or ("does not exist" in text and "relation" in text))


# -- the ledger ---------------------------------------------------------------------------

class EffectLedger:
    """The record of effect calls, in SQL on the workflow's database.

    Args:
        engine: a caller-owned SQLAlchemy ``Engine`` or ``AsyncEngine`` (never disposed
            here). Use the checkpoints' database: `from_saver` does.
        serde: how results are stored; default: the savers' strict msgpack serializer.
        clock: time source (epoch seconds) for the rows' timestamps.

    Call `setup` (or `asetup`) once; it is idempotent and safe across processes.

    Example:
        >>> ledger = EffectLedger(engine)  # doctest: +SKIP
        >>> ledger.setup()  # doctest: +SKIP
        >>> @effect(ledger=ledger)  # doctest: +SKIP
        ... def issue_refund(order_id: str, amount: Decimal, *, key: str) -> str: ...
    """

    def __init__(self, engine: sa.Engine | AsyncEngine, *,
                 serde: SerializerProtocol | None = None, clock: Clock = system_clock,
                 write_lock: Any = None) -> None:
        if isinstance(engine, str):
            raise ConfigurationError(
                "EffectLedger takes an Engine or AsyncEngine, got a URL string; create one "
                "with sqlalchemy.create_engine(url), or use EffectLedger.from_saver(saver)")
        if not isinstance(engine, sa.Engine | AsyncEngine):
            raise ConfigurationError(
                f"EffectLedger takes an Engine or AsyncEngine, got {type(engine).__name__}")
        if serde is None:
            from relaygraph.checkpointers._serde import default_serde

            serde = default_serde()
        self.engine = engine
        self.serde = serde
        self.clock = clock
        self.is_async = isinstance(engine, AsyncEngine)
        self._ready = False
        self._ready_lock = threading.Lock()
        # SQLite has one writer at a time: in-process writers take turns on a lock (the
        # saver's own, from from_saver) instead of SQLite's busy handler, which sleeps
        # for milliseconds at a time while a checkpoint is being written
        if write_lock is None and isinstance(engine, sa.Engine) \
                and engine.dialect.name == "sqlite":
            write_lock = _engine_lock(engine)
        self._write_lock = write_lock

    @classmethod
    def from_saver(cls, saver: Any, **kwargs: Any) -> EffectLedger:
        """A ledger on the database (and with the serializer) of a relaygraph SQL saver."""
        engine = getattr(saver, "engine", None)
        if not isinstance(engine, sa.Engine | AsyncEngine):
            raise ConfigurationError(
                f"EffectLedger.from_saver needs a relaygraph SQL saver (SQLAlchemySaver or "
                f"AsyncSQLAlchemySaver), got {type(saver).__name__}; pass an Engine to "
                "EffectLedger(engine) instead")
        kwargs.setdefault("serde", getattr(saver, "serde", None))
        lock = getattr(saver, "_write_lock", None)
        if isinstance(engine, sa.Engine) and hasattr(lock, "acquire"):
            kwargs.setdefault("write_lock", lock)
        return cls(engine, **kwargs)

    @classmethod
    def for_checkpointer(cls, saver: Any) -> EffectLedger:
        """The ledger on ``saver``'s database, one per saver, set up on first use.

        This is the ledger an `effect` without ``ledger=`` uses: the database of the
        checkpointer the running graph was compiled with.
        """
        with _shared_lock:
            ledger = _shared.get(saver)
            if ledger is None:
                ledger = cls.from_saver(saver)
                _shared[saver] = ledger
        return ledger

    # -- setup ----------------------------------------------------------------------------

    def setup(self) -> None:
        """Create the ``relaygraph_effects`` table if absent. Idempotent."""
        if self.is_async:
            raise EffectLedgerError("this ledger is on an AsyncEngine: await ledger.asetup()")
        create_tables(self._sync_engine(), [T])
        self._ready = True

    async def asetup(self) -> None:
        """Async twin of `setup` (on a sync Engine it runs on a worker thread)."""
        if self.is_async:
            await acreate_tables(self.engine, [T])
            self._ready = True
        else:
            await asyncio.to_thread(self.setup)

    def ensure_setup(self) -> None:
        """`setup` once per ledger object (what a ledger shared per saver does)."""
        if not self._ready:
            with self._ready_lock:
                if not self._ready:
                    self.setup()

    async def aensure_setup(self) -> None:
        """Async twin of `ensure_setup`."""
        if not self._ready:
            await self.asetup()

    # -- running statements ---------------------------------------------------------------

    def _sync_engine(self) -> sa.Engine:
        if self.is_async:
            raise EffectLedgerError(
                "this ledger is on an AsyncEngine and cannot run from sync code; call the "
                "effect with `await effect_fn.acall(...)` (or from an async node), or give "
                "the ledger a sync Engine")
        assert isinstance(self.engine, sa.Engine)
        return self.engine

    @contextmanager
    def turn(self) -> Iterator[None]:
        """Hold the in-process write turn of a SQLite database (elsewhere: nothing)."""
        lock = self._write_lock
        if lock is None:
            yield
            return
        if not lock.acquire(timeout=WRITE_TURN_SECONDS):
            raise EffectLedgerError(
                f"the SQLite database was busy for {WRITE_TURN_SECONDS:.0f} s (an effect "
                "called from inside a transactional effect waits for itself)")
        try:
            yield
        finally:
            lock.release()

    def run(self, op: Callable[..., Any], *args: Any, immediate: bool = False) -> Any:
        """Run ``op(conn, *args)`` in one transaction (sync engines)."""
        engine = self._sync_engine()
        try:
            with self.turn(), engine.begin() as conn:
                if immediate or self._write_lock is not None:
                    begin_write(conn)
                return op(conn, *args)
        except sa.exc.DBAPIError as exc:
            raise self._translate(exc) from exc

    async def arun(self, op: Callable[..., Any], *args: Any, immediate: bool = False) -> Any:
        """Run ``op(conn, *args)`` in one transaction, from async code."""
        if not self.is_async:
            return await asyncio.to_thread(self.run, op, *args, immediate=immediate)
        assert isinstance(self.engine, AsyncEngine)
        try:
            async with self.engine.begin() as aconn:
                if immediate:
                    await aconn.run_sync(begin_write)
                return await aconn.run_sync(op, *args)
        except sa.exc.DBAPIError as exc:
            raise self._translate(exc) from exc

    def _translate(self, exc: sa.exc.DBAPIError) -> Exception:
        if isinstance(exc, sa.exc.IntegrityError):
            return exc
        if missing_table(exc):
            return EffectLedgerError(
                "the effect ledger's table relaygraph_effects does not exist in "
                f"{self.engine.url.render_as_string(hide_password=True)}; run "
                "ledger.setup() (or await ledger.asetup()) once")
        return exc

    def claim(self, site: CallSite) -> EffectRecord | None:
        """Start a new call (``None``) or return the record already there."""
        try:
            return self.run(op_claim, site, self.clock())
        except sa.exc.IntegrityError:  # claimed at the same moment by another execution
            return self.run(op_get, site.name, site.key)

    async def aclaim(self, site: CallSite) -> EffectRecord | None:
        """Async twin of `claim`."""
        try:
            return await self.arun(op_claim, site, self.clock())
        except sa.exc.IntegrityError:
            return await self.arun(op_get, site.name, site.key)

    # -- values -----------------------------------------------------------------------------

    def dumps(self, value: Any) -> tuple[str, bytes]:
        """Serialize a result; a value the serializer refuses is stored as unstorable."""
        try:
            return self.serde.dumps_typed(value)
        except Exception as exc:  # noqa: BLE001 - any refusal: record why, never pickle
            return _UNSTORABLE, f"{type(value).__name__}: {exc}".encode()

    def loads(self, record: EffectRecord) -> Any:
        """The recorded result of a done call."""
        if record.result_type == _UNSTORABLE:
            reason = (record.result_bytes or b"").decode(errors="replace")
            raise EffectLedgerError(
                f"effect {record.name!r} (key {record.key}) acted and is recorded as done, "
                f"but its result could not be stored ({reason}); return plain data "
                "(str, numbers, dicts, lists, pydantic models the serializer allows)")
        if record.result_type is None or record.result_bytes is None:
            return None
        return self.serde.loads_typed((record.result_type, record.result_bytes))

    # -- inspection and manual resolution ---------------------------------------------------

    def get(self, name: str, key: str) -> EffectRecord | None:
        """The record of one call, or ``None``."""
        return self.run(op_get, name, key)

    async def aget(self, name: str, key: str) -> EffectRecord | None:
        """Async twin of `get`."""
        return await self.arun(op_get, name, key)

    def calls(self, thread_id: str, *, status: Status | None = None) -> list[EffectRecord]:
        """A thread's effect calls (``status="started"``: those in doubt or running)."""
        return self.run(op_list, thread_id, status)

    async def acalls(self, thread_id: str, *,
                    status: Status | None = None) -> list[EffectRecord]:
        """Async twin of `calls`."""
        return await self.arun(op_list, thread_id, status)

    def resolve(self, name: str, key: str, result: Any = None) -> bool:
        """Settle an in-doubt call by hand: it did take effect, with ``result``.

        The next execution of its node gets ``result`` back without calling the function.
        Returns ``False`` if the call was not in doubt (unknown, or already done).
        """
        return self.run(op_resolve, name, key, self.dumps(result), self.clock())

    async def aresolve(self, name: str, key: str, result: Any = None) -> bool:
        """Async twin of `resolve`."""
        return await self.arun(op_resolve, name, key, self.dumps(result), self.clock())

    def forget(self, name: str, key: str) -> bool:
        """Drop a call's record: the next execution calls the function again, same key."""
        return self.run(op_forget, name, key, None)

    async def aforget(self, name: str, key: str) -> bool:
        """Async twin of `forget`."""
        return await self.arun(op_forget, name, key, None)

    def delete_thread(self, thread_id: str) -> int:
        """Drop every record of a thread (e.g. with the thread's checkpoints)."""
        return self.run(op_delete_thread, thread_id)

    async def adelete_thread(self, thread_id: str) -> int:
        """Async twin of `delete_thread`."""
        return await self.arun(op_delete_thread, thread_id)


WRITE_TURN_SECONDS = 30.0

_locks: weakref.WeakKeyDictionary[sa.Engine, threading.Lock] = weakref.WeakKeyDictionary()


def _engine_lock(engine: sa.Engine) -> threading.Lock:
    with _shared_lock:
        lock = _locks.get(engine)
        if lock is None:
            lock = _locks[engine] = threading.Lock()
        return lock


_shared: weakref.WeakKeyDictionary[Any, EffectLedger] = weakref.WeakKeyDictionary()
_shared_lock = threading.Lock()
