"""SQL plumbing shared by every component that stores rows (savers, breakers, policies).

One `MetaData` holds every relaygraph table so that a user's Alembic environment can
include them with ``target_metadata = [app_metadata, relaygraph.sql_metadata]``.
Dialect differences (upserts, insert-if-absent) live here and nowhere else.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql as _mysql
from sqlalchemy.engine import Dialect

metadata = sa.MetaData()

#: Longest thread id / namespace / identifier relaygraph stores. Bounded so that the
#: composite primary keys fit MySQL's 3072-byte index limit in utf8mb4.
MAX_KEY_CHARS = 255

class _Key(sa.types.TypeDecorator[str]):
    """A string key compared exactly (byte for byte) on every dialect.

    MySQL/MariaDB compare VARCHARs case-insensitively and ignore trailing spaces (PAD SPACE
    collations), which would merge distinct thread ids; there the column is VARBINARY
    holding UTF-8.
    """

    impl = sa.String
    cache_ok = True

    def __init__(self, length: int = MAX_KEY_CHARS) -> None:
        super().__init__(length)
        self.chars = length

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if _dialect_name(dialect) == "mysql":
            return dialect.type_descriptor(_mysql.VARBINARY(self.chars * 4))
        return dialect.type_descriptor(sa.String(self.chars))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is not None and _dialect_name(dialect) == "mysql":
            return value.encode("utf-8")
        return value

    # Elsewhere a key is the plain string type: no per-value call on every bind and row.
    def bind_processor(self, dialect: Dialect) -> Any:
        if _dialect_name(dialect) == "mysql":
            return super().bind_processor(dialect)
        return self.load_dialect_impl(dialect).bind_processor(dialect)

    def result_processor(self, dialect: Dialect, coltype: Any) -> Any:
        if _dialect_name(dialect) == "mysql":
            return super().result_processor(dialect, coltype)
        return self.load_dialect_impl(dialect).result_processor(dialect, coltype)

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if isinstance(value, bytes | bytearray):
            return bytes(value).decode("utf-8")
        return value


def Key(length: int = MAX_KEY_CHARS) -> _Key:  # noqa: N802 - reads like a column type
    """An exact-match string key column of at most ``length`` characters."""
    return _Key(length)


KeyStr = _Key(MAX_KEY_CHARS)
"""A 255-character exact-match key column (see :func:`Key`)."""

def uuid_bytes(value: str) -> bytes | None:
    """The 16 bytes of a canonical (lowercase, hyphenated) UUID string, else ``None``."""
    if len(value) == 36 and value[8] == value[13] == value[18] == value[23] == "-":
        digits = value.replace("-", "")
        if len(digits) == 32:
            try:
                raw = bytes.fromhex(digits)
            except ValueError:
                return None
            if raw.hex() == digits:  # lowercase only, so that it reads back the same
                return raw
    return None


def uuid_str(raw: bytes) -> str:
    """Inverse of :func:`uuid_bytes`."""
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def id_to_db(value: str) -> bytes:
    """An id as :data:`IdKey` stores it: a canonical UUID in 16 bytes, else its UTF-8.

    UTF-8 that is itself 16 bytes long gets a NUL appended (ids never hold NUL), so the
    two forms never collide. Byte order is the strings' order within each form: UUIDs by
    value (uuid6 checkpoint ids by time), other ids by code point.
    """
    raw = uuid_bytes(value)
    return raw if raw is not None else _utf8_beside(value, 16)


def id_from_db(raw: bytes) -> str:
    """Inverse of :func:`id_to_db`."""
    return uuid_str(raw) if len(raw) == 16 else _utf8_from(raw, 16)


def _utf8_beside(value: str, compact: int) -> bytes:
    """``value``'s UTF-8, never ``compact`` bytes long (a NUL is appended then)."""
    b = value.encode("utf-8")
    return b + b"\x00" if len(b) == compact else b


def _utf8_from(raw: bytes, compact: int) -> str:
    """Inverse of :func:`_utf8_beside`."""
    if len(raw) == compact + 1 and raw[compact] == 0:
        raw = raw[:compact]
    return raw.decode("utf-8")


def version_to_db(value: str) -> bytes:
    """A channel version as :data:`VersionKey` stores it.

    The checkpointers' own versions (``<12-digit counter>.<6 hex digits>``, see
    ``get_next_version``) take 8 bytes: the counter in 5, big-endian, then the suffix, so
    byte order is their string order. Any other version is its UTF-8 (with a NUL appended
    when that is 8 bytes long, as :func:`id_to_db` does for 16).
    """
    if len(value) == 19 and value[12] == "." and value[:12].isdigit() and value[:12].isascii():
        suffix = value[13:]
        if suffix == suffix.lower():
            try:
                return int(value[:12]).to_bytes(5, "big") + bytes.fromhex(suffix)
            except ValueError:
                pass
    return _utf8_beside(value, 8)


def version_from_db(raw: bytes) -> str:
    """Inverse of :func:`version_to_db`."""
    if len(raw) == 8:
        return f"{int.from_bytes(raw[:5], 'big'):012d}.{raw[5:].hex()}"
    return _utf8_from(raw, 8)


def _binder(to_db: Any) -> Any:
    def process(value: Any) -> Any:
        return to_db(value) if isinstance(value, str) else value
    return process


_BINARY = (bytes, bytearray, memoryview)


def _reader(from_db: Any) -> Any:
    def process(value: Any) -> Any:
        if isinstance(value, _BINARY):
            return from_db(bytes(value))
        return value
    return process


class _IdKey(sa.types.TypeDecorator[str]):
    """An exact-match id column stored as bytes: UUIDs (what LangGraph generates for
    checkpoints, tasks and runs) take 16 bytes instead of 36 characters, in the row and in
    every index entry. See :func:`id_to_db`."""

    impl = sa.LargeBinary
    cache_ok = True
    # the value processors, also handed to SQLAlchemy as they are (no per-value wrapping)
    _bind = staticmethod(_binder(id_to_db))
    _result = staticmethod(_reader(id_from_db))

    def __init__(self, length: int = MAX_KEY_CHARS) -> None:
        super().__init__()
        self.chars = length

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if _dialect_name(dialect) == "mysql":
            # one byte more than the longest UTF-8 form: it tells these columns apart from
            # the text keys of earlier schema versions (see the checkpointers' migrations)
            return dialect.type_descriptor(_mysql.VARBINARY(self.chars * 4 + 1))
        return dialect.type_descriptor(sa.LargeBinary())

    def bind_processor(self, dialect: Dialect) -> Any:
        return self._bind

    def result_processor(self, dialect: Dialect, coltype: Any) -> Any:
        return self._result

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        return self._bind(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        return self._result(value)


class _VersionKey(_IdKey):
    """A channel-version column stored as bytes (see :func:`version_to_db`)."""

    cache_ok = True
    _bind = staticmethod(_binder(version_to_db))
    _result = staticmethod(_reader(version_from_db))


def VersionKey(length: int) -> _VersionKey:  # noqa: N802 - reads like a column type
    """A version column of at most ``length`` characters, stored compactly."""
    return _VersionKey(length)


def IdKey(length: int = MAX_KEY_CHARS) -> _IdKey:  # noqa: N802 - reads like a column type
    """An id column of at most ``length`` characters, stored compactly (see ``_IdKey``)."""
    return _IdKey(length)


LargeBlob = sa.LargeBinary().with_variant(_mysql.LONGBLOB(), "mysql", "mariadb")
LargeText = sa.Text().with_variant(_mysql.LONGTEXT(), "mysql", "mariadb")


def _dialect_name(dialect: Dialect) -> str:
    return "mysql" if dialect.name in ("mysql", "mariadb") else dialect.name


def upsert(
    dialect: Dialect,
    table: sa.Table,
    rows: Sequence[Mapping[str, Any]] | Mapping[str, Any] | None = None,
    *,
    keys: Sequence[str],
    update: Sequence[str] | None = None,
) -> sa.Executable:
    """Build an INSERT that updates ``update`` columns (or does nothing) on key conflict.

    Args:
        dialect: the engine's dialect (``engine.dialect``).
        table: target table.
        rows: one row or many, as bound values; ``None`` builds a statement to execute with
            a list of parameter dicts (``conn.execute(stmt, rows)``), which SQLAlchemy
            caches and batches.
        keys: the primary-key / unique columns that define a conflict.
        update: columns to overwrite on conflict; ``None`` or empty keeps the old row.
    """
    name = _dialect_name(dialect)
    stmt: Any
    if name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        stmt = pg_insert(table)
    elif name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        stmt = sqlite_insert(table)
    elif name == "mysql":
        from sqlalchemy.dialects.mysql import insert as my_insert

        stmt = my_insert(table)
    else:
        raise NotImplementedError(f"relaygraph does not support the {dialect.name!r} dialect")
    if rows is not None:
        stmt = stmt.values(list(rows) if not isinstance(rows, Mapping) else [rows])
    if name == "mysql":
        if update:
            return stmt.on_duplicate_key_update({c: stmt.inserted[c] for c in update})
        # INSERT IGNORE reports ignored rows as not inserted (rowcount), unlike the
        # ON DUPLICATE KEY no-op under the CLIENT_FOUND_ROWS flag SQLAlchemy sets.
        return stmt.prefix_with("IGNORE")
    if update:
        return stmt.on_conflict_do_update(
            index_elements=list(keys), set_={c: stmt.excluded[c] for c in update})
    return stmt.on_conflict_do_nothing(index_elements=list(keys))


def _create(conn: sa.Connection, tables: Sequence[sa.Table]) -> None:
    # Two processes running setup at once may both see a table missing; the loser's
    # CREATE fails with "already exists", which is the state it wanted.
    for table in tables:
        try:
            with conn.begin_nested():
                table.create(conn, checkfirst=True)
        except (sa.exc.ProgrammingError, sa.exc.OperationalError, sa.exc.IntegrityError):
            if not sa.inspect(conn).has_table(table.name):
                raise


_LOCK_KEY = 0x72656C6179  # "relay"


@contextmanager
def setup_lock(conn: sa.Connection) -> Iterator[None]:
    """Serialize schema changes across processes for the rest of ``conn``'s transaction.

    PostgreSQL: a transaction-scoped advisory lock. MySQL/MariaDB: a named lock (their DDL
    is not transactional and concurrent DDL on one table fails). SQLite: take the write
    lock up front so two setups queue instead of failing with "database is locked".
    """
    name = _dialect_name(conn.dialect)
    if name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
        yield
    elif name == "mysql":
        conn.execute(sa.text("SELECT GET_LOCK('relaygraph_setup', 60)"))
        try:
            yield
        finally:
            conn.execute(sa.text("SELECT RELEASE_LOCK('relaygraph_setup')"))
    else:
        if name == "sqlite" and not conn.in_nested_transaction():
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        yield


def _create_locked(conn: sa.Connection, tables: Sequence[sa.Table]) -> None:
    with setup_lock(conn):
        _create(conn, tables)


def create_tables(engine: sa.Engine, tables: Sequence[sa.Table]) -> None:
    """Create ``tables`` if absent; safe when several processes call it at once."""
    with engine.begin() as conn:
        _create_locked(conn, tables)


async def acreate_tables(engine: Any, tables: Sequence[sa.Table]) -> None:
    """Async twin of :func:`create_tables` for an ``AsyncEngine``."""
    async with engine.begin() as conn:
        await conn.run_sync(_create_locked, tables)


def recursive_step(anchor: Any, step: sa.Select, *, lateral: bool, distinct: bool) -> Any:
    """The recursive CTE ``anchor`` with its recursive term ``step`` (UNION or UNION ALL).

    PostgreSQL (``lateral``) plans the recursive term once, for a guessed 10-row work
    table, and picks a hash join over a scan of the whole table, which then runs on every
    step of the walk: the step becomes a LATERAL lookup of one row by primary key, a seek.
    """
    if lateral:
        nxt = step.limit(1).lateral(f"{anchor.name}_next")
        step = sa.select(*nxt.c).select_from(anchor).join(nxt, sa.true())
    return anchor.union(step) if distinct else anchor.union_all(step)


_SERIAL: weakref.WeakKeyDictionary[Any, threading.Lock] = weakref.WeakKeyDictionary()


def memory_engine() -> sa.Engine:
    """A private in-memory SQLite database on one shared connection.

    Every caller shares that one connection, so :func:`run_in_tx` takes turns on it:
    two threads using one sqlite3 connection at once fail with "not an error".
    """
    engine = sa.create_engine("sqlite://", poolclass=sa.pool.StaticPool,
                              connect_args={"check_same_thread": False})
    _SERIAL[engine] = threading.Lock()
    return engine


async def run_in_tx(engine: Any, fn: Callable[[sa.Connection], Any]) -> Any:
    """Run ``fn(conn)`` in one transaction on a sync or async engine, off the event loop."""
    if hasattr(engine, "sync_engine"):
        async with engine.begin() as conn:
            return await conn.run_sync(fn)
    lock = _SERIAL.get(engine)

    def call() -> Any:
        if lock is None:
            with engine.begin() as conn:
                return fn(conn)
        with lock, engine.begin() as conn:
            return fn(conn)

    return await asyncio.to_thread(call)
