"""Tables and versioned migrations of the SQLAlchemy checkpointers.

The tables live in :data:`relaygraph._sql.metadata` (also exported as
``relaygraph.checkpointers.metadata``) so that an application's Alembic environment can
include them. ``setup()`` records every applied migration in
``relaygraph_migrations``; running it again, or from two processes at once, is safe.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from relaygraph._sql import (
    IdKey,
    Key,
    KeyStr,
    LargeBlob,
    LargeText,
    VersionKey,
    _create,
    _dialect_name,
    id_to_db,
    metadata,
    setup_lock,
    version_to_db,
)

COMPONENT = "checkpoints"

#: Identifier limits, checked before any SQL runs (see ``_ids.py``).
MAX_CHECKPOINT_ID = 64
MAX_CHANNEL = 128
MAX_TASK_ID = 128
MAX_RUN_ID = 255
VERSION_LEN = 64

migrations_table = sa.Table(
    "relaygraph_migrations",
    metadata,
    sa.Column("component", sa.String(64), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("applied_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
)

checkpoints = sa.Table(
    "relaygraph_checkpoints",
    metadata,
    sa.Column("thread_id", KeyStr, primary_key=True),
    sa.Column("checkpoint_ns", KeyStr, primary_key=True),
    # ids are bytes: a UUID (what LangGraph generates) in 16 of them, see ``IdKey``
    sa.Column("checkpoint_id", IdKey(MAX_CHECKPOINT_ID), primary_key=True),
    sa.Column("parent_checkpoint_id", IdKey(MAX_CHECKPOINT_ID), nullable=True),
    sa.Column("run_id", IdKey(MAX_RUN_ID), nullable=True),
    # The checkpoint without its channel values, serialized with the saver's serde.
    sa.Column("type", sa.String(32), nullable=False),
    sa.Column("checkpoint", LargeBlob, nullable=False),
    # JSON text; filtered in Python after key validation (portable, injection-proof).
    sa.Column("metadata", LargeText, nullable=False),
    # delete_for_runs looks rows up by run id; rows without one (a graph invoked with no
    # run id) need no index entry where the database has partial indexes
    sa.Index("relaygraph_checkpoints_run_id", "run_id",
             postgresql_where=sa.text("run_id IS NOT NULL"),
             sqlite_where=sa.text("run_id IS NOT NULL")),
    sqlite_with_rowid=False,
)

blobs = sa.Table(
    "relaygraph_blobs",
    metadata,
    # One row ("frame") per thread, namespace and channel version holds every channel
    # that a put stored under that version (LangGraph gives all channels updated in one
    # step the same version): one row per step instead of one per channel.
    sa.Column("thread_id", KeyStr, primary_key=True),
    sa.Column("checkpoint_ns", KeyStr, primary_key=True),
    sa.Column("version", VersionKey(VERSION_LEN), primary_key=True),
    # A later put that reuses a version adds parts (the first entry for a channel wins).
    sa.Column("part", sa.SmallInteger, primary_key=True, autoincrement=False),
    # Part 0 holds values that are not lists; each list channel has a part of its own,
    # naming the channel and the version its delta extends (NULL when stored whole), so
    # a chain is followed per channel without dragging in other channels' chains.
    sa.Column("channel", Key(MAX_CHANNEL), nullable=True),
    sa.Column("base", VersionKey(VERSION_LEN), nullable=True),
    sa.Column("type", sa.String(16), nullable=False),
    sa.Column("blob", LargeBlob, nullable=False),
    sqlite_with_rowid=False,
)

writes = sa.Table(
    "relaygraph_writes",
    metadata,
    # One row per task and checkpoint holds all the writes of that task.
    sa.Column("thread_id", KeyStr, primary_key=True),
    sa.Column("checkpoint_ns", KeyStr, primary_key=True),
    sa.Column("checkpoint_id", IdKey(MAX_CHECKPOINT_ID), primary_key=True),
    sa.Column("task_id", IdKey(MAX_TASK_ID), primary_key=True),
    sa.Column("task_path", LargeText, nullable=False),
    sa.Column("type", sa.String(16), nullable=False),
    sa.Column("blob", LargeBlob, nullable=False),
    sqlite_with_rowid=False,
)

TABLES = (checkpoints, blobs, writes)


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    apply: Callable[[sa.Connection], None]


def _initial(conn: sa.Connection) -> None:
    _create(conn, TABLES)


def _inline_rows(conn: sa.Connection) -> None:
    """PostgreSQL: keep rows up to a page long in the table instead of TOAST.

    The saver compresses its payloads itself, so PostgreSQL's TOAST (which kicks in at
    about 2 kB) only moved a segment's few kilobytes into a second relation with its own
    index and free-space map, and tried to compress them again. Rows longer than a page
    are still moved out of line.
    """
    if conn.dialect.name != "postgresql":
        return
    block = int(conn.execute(sa.text("SELECT current_setting('block_size')")).scalar_one())
    target = block - 32  # TOAST_TUPLE_TARGET_MAIN: the largest value PostgreSQL accepts
    for table in TABLES:
        conn.execute(sa.text(
            f'ALTER TABLE "{table.name}" SET (toast_tuple_target = {target})'))


@dataclass(frozen=True)
class _Packing:
    """How text keys of a kind become bytes, in each database's SQL (see ``_to_bytes``)."""

    name: str
    packed_len: int  # the length of the compact form; UTF-8 of this length gets a NUL
    regexp: str  # the values that take the compact form
    postgres: str  # SQL for the compact form of column {c}
    mysql: str
    python: Callable[[str], bytes]


_IDS = _Packing(
    "id", 16, "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$",
    "decode(replace({c}, '-', ''), 'hex')", "UNHEX(REPLACE({c}, '-', ''))", id_to_db)
_VERSIONS = _Packing(
    "version", 8, "^[0-9]{12}[.][0-9a-f]{6}$",
    "decode(lpad(to_hex(substr({c}, 1, 12)::bigint), 10, '0') || substr({c}, 14, 6), 'hex')",
    "UNHEX(CONCAT(LPAD(HEX(CAST(SUBSTRING({c}, 1, 12) AS UNSIGNED)), 10, '0'), "
    "SUBSTRING({c}, 14, 6)))", version_to_db)


def _to_bytes(conn: sa.Connection, packing: _Packing,
              columns: Sequence[tuple[sa.Table, Sequence[str]]]) -> None:
    """Rewrite text key columns as the bytes their ``IdKey``/``VersionKey`` type stores.

    Runs inside the migration's transaction where the database allows (PostgreSQL,
    SQLite; on MySQL/MariaDB the column change commits, and the row updates after it are
    one transaction with the migration's record), and is safe to run again after a crash.
    """
    name = _dialect_name(conn.dialect)
    if name == "postgresql":
        for table, cols in columns:
            kinds: dict[str, str] = dict(conn.execute(sa.text(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = current_schema() AND table_name = :t"),
                {"t": table.name}).all())
            todo = [c for c in cols if kinds.get(c) != "bytea"]
            if todo:
                conn.execute(sa.text(f'ALTER TABLE "{table.name}" '
                                     + ", ".join(_pg_alter(packing, c) for c in todo)))
    elif name == "mysql":
        for table, cols in columns:
            for c in cols:
                col = table.c[c]
                ddl = col.type.compile(dialect=conn.dialect)
                null = "NULL" if col.nullable else "NOT NULL"
                conn.execute(sa.text(f"ALTER TABLE `{table.name}` MODIFY `{c}` {ddl} {null}"))
        # The DDL above committed (and is harmless to repeat); the updates below are
        # undone together by a crash. Values of the compact length get their NUL before
        # any value takes the compact form.
        for table, cols in columns:
            for c in cols:
                conn.execute(sa.text(
                    f"UPDATE `{table.name}` SET `{c}` = CONCAT(`{c}`, X'00') "
                    f"WHERE LENGTH(`{c}`) = {packing.packed_len}"))
                conn.execute(sa.text(
                    f"UPDATE `{table.name}` SET `{c}` = {packing.mysql.format(c=f'`{c}`')} "
                    f"WHERE `{c}` REGEXP '{packing.regexp}'"))
    elif name == "sqlite":
        # values already converted are blobs: a re-run leaves them alone
        fn = f"relaygraph_pack_{packing.name}"
        to_db = packing.python
        conn.connection.dbapi_connection.create_function(  # type: ignore[union-attr]
            fn, 1, lambda v: v if not isinstance(v, str) else to_db(v), deterministic=True)
        for table, cols in columns:
            for c in cols:
                conn.execute(sa.text(f'UPDATE "{table.name}" SET "{c}" = {fn}("{c}") '
                                     f"WHERE typeof(\"{c}\") = 'text'"))


def _pg_alter(packing: _Packing, column: str) -> str:
    c = f'"{column}"'
    return (f"ALTER COLUMN {c} TYPE bytea USING CASE "
            f"WHEN {c} ~ '{packing.regexp}' THEN {packing.postgres.format(c=c)} "
            f"WHEN octet_length({c}) = {packing.packed_len} "
            f"THEN convert_to({c}, 'UTF8') || '\\x00'::bytea "
            f"ELSE convert_to({c}, 'UTF8') END")


def _binary_ids(conn: sa.Connection) -> None:
    """Checkpoint, task and run ids become bytes: a UUID in 16 instead of 36.

    Each id becomes :func:`relaygraph._sql.id_to_db` of itself. Every step stores four
    of them (a checkpoint row's own id and its parent's, a writes row's checkpoint and
    task), each also in a primary-key index.
    """
    _to_bytes(conn, _IDS, ((checkpoints, ("checkpoint_id", "parent_checkpoint_id", "run_id")),
                           (writes, ("checkpoint_id", "task_id"))))


def _binary_versions(conn: sa.Connection) -> None:
    """Frame versions become bytes: the saver's own versions in 8 instead of 19."""
    _to_bytes(conn, _VERSIONS, ((blobs, ("version", "base")),))


def _thread_dictionaries(conn: sa.Connection) -> None:
    """Rows may be compressed with a dictionary stored with their thread (``_tdict``).

    Nothing changes in the tables: the version tells an older relaygraph, which cannot
    read those rows, to stop with a clear error instead of failing on some threads.
    """


def _partial_run_index(conn: sa.Connection) -> None:
    """PostgreSQL and SQLite: the run-id index leaves out rows that have no run id."""
    if _dialect_name(conn.dialect) not in ("postgresql", "sqlite"):
        return
    (index,) = (i for i in checkpoints.indexes if i.name == "relaygraph_checkpoints_run_id")
    conn.execute(sa.text(f'DROP INDEX IF EXISTS "{index.name}"'))
    index.create(conn)


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "checkpoints, per-version frames with append deltas, per-task writes", _initial),
    Migration(2, "PostgreSQL: rows up to a page stay inline (toast_tuple_target)", _inline_rows),
    Migration(3, "checkpoint, task and run ids stored as bytes (a UUID in 16)", _binary_ids),
    Migration(4, "PostgreSQL, SQLite: the run-id index skips rows without one", _partial_run_index),
    Migration(5, "frame versions stored as bytes (the saver's own in 8)", _binary_versions),
    Migration(6, "rows compressed with a dictionary stored with their thread",
              _thread_dictionaries),
)
LATEST = MIGRATIONS[-1].version


def run_migrations(conn: sa.Connection) -> list[int]:
    """Apply pending migrations on ``conn`` (inside the caller's transaction).

    Returns the versions applied by this call. Safe to call concurrently: the migration
    DDL is idempotent and the loser of a race on the version row treats it as applied.
    """
    with setup_lock(conn):
        return _migrate(conn)


def _migrate(conn: sa.Connection) -> list[int]:
    _create(conn, (migrations_table,))
    done = set(
        conn.execute(
            sa.select(migrations_table.c.version).where(
                migrations_table.c.component == COMPONENT
            )
        ).scalars()
    )
    applied: list[int] = []
    for mig in MIGRATIONS:
        if mig.version in done:
            continue
        mig.apply(conn)
        try:
            with conn.begin_nested():
                conn.execute(
                    migrations_table.insert().values(component=COMPONENT, version=mig.version)
                )
        except sa.exc.IntegrityError:
            continue  # another process recorded it first
        applied.append(mig.version)
    return applied


def current_version(conn: sa.Connection) -> int:
    """The newest applied migration version, 0 when ``setup()`` never ran."""
    if not sa.inspect(conn).has_table(migrations_table.name):
        return 0
    v = conn.execute(
        sa.select(sa.func.max(migrations_table.c.version)).where(
            migrations_table.c.component == COMPONENT
        )
    ).scalar()
    return int(v or 0)
