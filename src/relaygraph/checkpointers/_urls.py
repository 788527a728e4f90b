"""Turning a connection string into an engine with safe defaults and clear errors."""

from __future__ import annotations

import importlib.util
import itertools
import os
import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url

from relaygraph._errors import ConfigurationError, MissingDependencyError

CONNECT_TIMEOUT = 5
WAL_SWITCH_TRIES = 200  # x 50 ms: as long as a setup() elsewhere may hold the file

# backend -> (default sync driver, default async driver)
_DEFAULT_DRIVERS = {
    "sqlite": ("pysqlite", "aiosqlite"),
    "postgresql": ("psycopg", "psycopg"),
    "mysql": ("pymysql", "asyncmy"),
    "mariadb": ("pymysql", "asyncmy"),
}
# driver -> (importable module, extra that installs it)
_DRIVER_PACKAGES = {
    "pysqlite": ("sqlite3", None),
    "aiosqlite": ("aiosqlite", None),
    "psycopg": ("psycopg", "postgres"),
    "psycopg_async": ("psycopg", "postgres"),
    "psycopg2": ("psycopg2", "postgres"),
    "asyncpg": ("asyncpg", "postgres"),
    "pymysql": ("pymysql", "mysql"),
    "aiomysql": ("aiomysql", "mysql"),
    "asyncmy": ("asyncmy", "mysql"),
    "mysqldb": ("MySQLdb", "mysql"),
}
_SCHEME_ALIASES = {"postgres": "postgresql", "pg": "postgresql"}
# drivers that work only under asyncio, and only without it (psycopg works both ways)
_ASYNC_ONLY = {"aiosqlite", "asyncpg", "psycopg_async", "aiomysql", "asyncmy"}
_SYNC_ONLY = {"pysqlite", "psycopg2", "pymysql", "mysqldb"}


def resolve_url(url: str | URL, *, async_: bool) -> URL:
    """Normalise ``url``: pick relaygraph's default driver and check it is installed.

    A driver of the wrong kind (a sync one for ``async_``, an async one otherwise) is
    replaced by the default driver of the same database.
    """
    try:
        u = make_url(url) if isinstance(url, str) else url
    except sa.exc.ArgumentError as exc:
        raise ConfigurationError(
            f"cannot parse database URL {str(url)[:80]!r}; expected e.g. "
            "'sqlite:///relaygraph.db', 'postgresql://user@host/db' or "
            "'mysql://user@host/db'") from exc
    backend = _SCHEME_ALIASES.get(u.get_backend_name(), u.get_backend_name())
    if backend not in _DEFAULT_DRIVERS:
        raise ConfigurationError(
            f"unsupported database scheme {u.drivername!r}; relaygraph supports sqlite, "
            "postgresql (pip install 'relaygraph[postgres]') and mysql/mariadb "
            "(pip install 'relaygraph[mysql]')")
    driver = u.get_driver_name() if "+" in u.drivername else None
    if driver is None or driver == u.get_backend_name():
        driver = _DEFAULT_DRIVERS[backend][1 if async_ else 0]
    if driver in (_SYNC_ONLY if async_ else _ASYNC_ONLY):
        # a URL written for the other saver ("mysql+pymysql://" for the async one, say):
        # the same database through relaygraph's driver of the kind this one runs on
        driver = _DEFAULT_DRIVERS[backend][1 if async_ else 0]
    pkg = _DRIVER_PACKAGES.get(driver)
    if pkg is None:
        raise ConfigurationError(
            f"unknown driver {driver!r} for {backend}; use one of "
            f"{sorted(k for k, v in _DRIVER_PACKAGES.items())}")
    module, extra = pkg
    if importlib.util.find_spec(module) is None:
        raise MissingDependencyError(module, extra or "dev", f"The {backend}+{driver} driver")
    return u.set(drivername=f"{backend}+{driver}")


def engine_kwargs(u: URL) -> dict[str, Any]:
    """Connection defaults: fail within seconds when the server is down, no hanging."""
    backend = u.get_backend_name()
    # No pre-ping round trip per checkout: the savers retry an operation once when the
    # driver reports a dropped connection (see ``SQLAlchemySaver._run``).
    kw: dict[str, Any] = {"pool_recycle": 1800}
    if backend in ("postgresql", "mysql", "mariadb"):
        kw["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT}
        # The most recently used connection first: a lone writer keeps one connection
        # busy (its prepared statements warm, its inserts filling one page after
        # another) instead of taking turns over every connection a burst opened.
        kw["pool_use_lifo"] = True
    elif backend == "sqlite":
        kw["connect_args"] = {"timeout": 30}
    return kw


#: connections one saver from ``from_conn_string`` opens at most (see ``pool_sizes``)
DEFAULT_MAX_CONNECTIONS = 10


def pool_sizes(u: URL, max_connections: int) -> tuple[dict[str, Any], dict[str, Any],
                                                     dict[str, Any]]:
    """Pool arguments of a saver's three engines (transactions, autocommitted reads and
    puts, task writes) so that together they open at most ``max_connections``.

    Each pool keeps its connections open and has no overflow: an operation that finds
    its pool busy waits for a connection (up to ``POOL_WAIT`` seconds) instead of
    opening one more. Autocommitted reads and puts, the busiest, get the largest share.
    SQLite opens a connection per thread as it needs one: nothing to size.
    """
    if u.get_backend_name() == "sqlite":
        return {}, {}, {}
    if type(max_connections) is not int or max_connections < 3:
        raise ConfigurationError(
            f"max_connections must be an int >= 3 (one per pool: transactions, reads and "
            f"puts, task writes), got {max_connections!r}")
    tx = max(1, max_connections * 3 // 10)
    writes = max(1, max_connections * 3 // 10)
    reads = max_connections - tx - writes
    return tuple({"pool_size": n, "max_overflow": 0, "pool_timeout": POOL_WAIT}
                 for n in (tx, reads, writes))  # type: ignore[return-value]


#: how long an operation waits for a free connection of its pool
POOL_WAIT = 60


def autocommit_kwargs(u: URL) -> dict[str, Any] | None:
    """Engine arguments for the pool of a saver's own autocommitted work (see
    :func:`engine_views`), or ``None`` where one engine serves (SQLite)."""
    if u.get_backend_name() == "sqlite":
        return None
    # autocommitted connections hold no transaction to roll back on return
    return {**engine_kwargs(u), "isolation_level": "AUTOCOMMIT", "pool_reset_on_return": None}


def engine_views(engine: Any) -> tuple[Any, Any]:
    """``(autocommitted, transactional)`` views of a caller's ``Engine`` or ``AsyncEngine``.

    Reads and single-statement writes need no transaction. A view with another isolation
    level switches the driver connection at every checkout and back at every return,
    which costs psycopg about 0.1 ms of CPU each way (PyMySQL a round trip): an engine
    created with ``isolation_level="AUTOCOMMIT"`` is used as it is for those, and
    switched only for the rare transactions. SQLite needs no switch.
    """
    sync = getattr(engine, "sync_engine", engine)
    if sync.dialect.name == "sqlite":
        return engine, engine
    # create_engine(isolation_level=...) is kept on the dialect (a private name in
    # SQLAlchemy 2; without it the saver switches, as for any other engine)
    level = (engine.get_execution_options().get("isolation_level")
             or getattr(sync.dialect, "_on_connect_isolation_level", None)
             or getattr(sync.dialect, "isolation_level", None))
    if level == "AUTOCOMMIT":
        return engine, engine.execution_options(isolation_level="READ COMMITTED")
    return engine.execution_options(isolation_level="AUTOCOMMIT"), engine


def is_sqlite_file(u: URL) -> bool:
    """True when ``u`` names a SQLite database file, which a second engine opens as the
    same database (an in-memory database would be a new, empty one)."""
    db = u.database or ""
    if u.get_backend_name() != "sqlite" or db in ("", ":memory:"):
        return False
    mode = u.query.get("mode")
    return not (db.startswith("file:") and ("mode=memory" in db or mode == "memory")
                or mode == "memory")


def sqlite_missing_folder(u: URL) -> str | None:
    """The folder of ``u``'s SQLite file when that folder does not exist (sqlite3 then
    says only "unable to open database file"), else None."""
    db = u.database or ""
    if not is_sqlite_file(u) or db.startswith("file:"):
        return None
    folder = os.path.dirname(os.path.abspath(db))
    return None if os.path.isdir(folder) else folder


def sqlite_read_only(u: URL) -> URL:
    """``u``, or, for a SQLite file this process cannot write, ``u`` opened read-only.

    A WAL database needs its ``-shm`` file next to it even to be read; on a read-only
    file system, or in a directory this process may not write, SQLite cannot create it
    and refuses to open the database at all. Opened read-only (``mode=ro``, and
    ``immutable=1`` where nothing can change the file) it reads; a write then fails with
    an error saying the database is read-only.
    """
    db = u.database or ""
    if not is_sqlite_file(u) or db.startswith("file:") or not os.path.exists(db):
        return u
    path = os.path.abspath(db)
    folder = os.path.dirname(path)
    read_only_fs = bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    shm = os.path.exists(path + "-shm")
    if not read_only_fs and os.access(path, os.W_OK) and (os.access(folder, os.W_OK) or shm):
        return u
    query = {**u.query, "mode": "ro", "uri": "true"}
    if read_only_fs or not (os.access(folder, os.W_OK) or shm):
        query["immutable"] = "1"
    return u.set(database=f"file:{path}", query=query)


def sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    """WAL lets readers and one writer work at once; NORMAL sync is durable in WAL mode."""
    cur = dbapi_conn.cursor()
    try:
        switch_to_wal(cur)
        cur.execute("PRAGMA synchronous=NORMAL")
    finally:
        cur.close()


def persist_wal(dbapi_conn: Any) -> None:
    """``setup()`` on a SQLite file: WAL journal mode, as ``SqliteSaver.setup()`` sets it.

    The mode is stored in the file, so it holds for every connection, the caller's own
    engine's included, and for every later process. Per-connection settings are left
    alone (see ``LiteConnection.begin_write``).
    """
    cur = dbapi_conn.cursor()
    try:
        switch_to_wal(cur)
    finally:
        cur.close()


def switch_to_wal(cur: Any) -> None:
    """Put the database of ``cur`` (sqlite3's, or SQLAlchemy's aiosqlite adapter's) in WAL
    journal mode, unless it is in it already."""
    cur.execute("PRAGMA journal_mode")
    if str(cur.fetchone()[0]).lower() != "wal":
        # WAL sticks to the file: only the first connection switches. The switch needs
        # the file to itself and SQLite does not wait for that (no busy handler), so
        # while another process creates the database, try again for a while.
        for attempt in itertools.count():
            try:
                cur.execute("PRAGMA journal_mode=WAL")
                break
            except Exception as exc:  # sqlite3's, or the same raised through aiosqlite
                if "readonly" in str(exc):
                    return  # a file this process may only read (see ``sqlite_read_only``)
                if "locked" not in str(exc) or attempt >= WAL_SWITCH_TRIES:
                    raise
                time.sleep(0.05)


def acts_per_checkout(pool: Any) -> bool:
    """Whether the application asked its pool to do something at every checkout or
    return (``checkout``, ``checkin`` or ``reset`` listeners, ``pool_pre_ping``): a
    connection the saver kept between its operations would skip it, so none is kept."""
    d = pool.dispatch
    return bool(getattr(pool, "_pre_ping", False) or d.checkout or d.checkin or d.reset)
