"""What the savers do when the database drops a connection or makes a statement wait.

A database restart, a failover or an idle-connection reaper ends connections under a
running graph. Every saver operation is idempotent (upserts keyed by thread, namespace and
checkpoint; a transaction that did not commit left nothing), so the savers run it again:
with exponential backoff, for a bounded window (:class:`RetryPolicy`), and then fail with
an error that says how long they tried.

A statement that waits on a lock held elsewhere (someone's open transaction, a migration)
would otherwise wait forever. :func:`set_timeouts` gives every connection of an engine a
lock timeout and a statement timeout; ``from_conn_string`` does it by default. A statement
that runs into one fails with :class:`DatabaseTimeoutError`, naming the timeout and how to
change it. Timeouts are not retried: the same wait would come again.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from relaygraph._errors import ConfigurationError
from relaygraph.checkpointers._errors import CheckpointerError

DEFAULT_LOCK_TIMEOUT = 30.0
DEFAULT_STATEMENT_TIMEOUT = 300.0


class DatabaseTimeoutError(CheckpointerError, TimeoutError):
    """A statement ran into the lock timeout or the statement timeout.

    Attributes:
        which: ``"lock"`` or ``"statement"``.
        seconds: the timeout in force, when known.
    """

    def __init__(self, message: str, *, which: str, seconds: float | None) -> None:
        super().__init__(message)
        self.which = which
        self.seconds = seconds


@dataclass(frozen=True)
class RetryPolicy:
    """How long a saver keeps retrying an operation whose connection dropped.

    The first retry follows ``first`` seconds after the failure, each later one waits
    ``factor`` times longer, up to ``most`` seconds, each wait drawn between half and all
    of that (so that many workers do not reconnect in lockstep). No retry starts more than
    ``window`` seconds after the first failure. ``window=0`` fails at once.

    ``clock``, ``sleep``, ``asleep`` and ``rand`` are injectable for tests.

    Example:
        >>> SQLAlchemySaver(engine, retry=RetryPolicy(window=30))   # doctest: +SKIP
    """

    window: float = 10.0
    first: float = 0.05
    most: float = 1.0
    factor: float = 2.0
    clock: Callable[[], float] = field(default=time.monotonic, repr=False, compare=False)
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False, compare=False)
    asleep: Callable[[float], Any] = field(default=asyncio.sleep, repr=False, compare=False)
    rand: Callable[[], float] = field(default=random.random, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.window < 0 or self.first <= 0 or self.most < self.first or self.factor < 1:
            raise ConfigurationError(
                f"RetryPolicy needs window >= 0, 0 < first <= most and factor >= 1, got "
                f"window={self.window}, first={self.first}, most={self.most}, "
                f"factor={self.factor}")

    def delay(self, attempt: int, started: float) -> float | None:
        """The wait before retry number ``attempt`` (1, 2, ...), or None: give up.

        ``started`` is ``clock()`` at the first failure.
        """
        base = min(self.most, self.first * self.factor ** (attempt - 1))
        wait = base * (0.5 + 0.5 * self.rand())
        if self.clock() + wait - started > self.window:
            return None
        return wait


# Messages (first line) of connection-level failures: the statement never ran, or ran in
# a transaction the server rolled back. PostgreSQL (psycopg), MySQL/MariaDB (PyMySQL,
# asyncmy), and what SQLAlchemy's pool says when it cannot connect.
_TRANSIENT = re.compile(
    r"connection refused|could not connect|connection failed|server closed the connection"
    r"|terminating connection|the database system is (starting up|shutting down|in recovery)"
    r"|connection (is )?closed|connection reset|broken pipe|no connection to the server"
    r"|consuming input failed|server conn crashed|ssl syscall error|eof detected"
    r"|lost connection to (mysql|mariadb)? ?server|(mysql|mariadb)? ?server has gone away"
    r"|can't connect to (mysql|mariadb)? ?server|connection was killed"
    r"|deadlock detected|deadlock found|could not serialize access",
    re.IGNORECASE)
# A server that answered and refused the login: the same answer comes every time (its
# message starts like a refused connection's on psycopg: "connection failed: ...").
_REFUSED = re.compile(
    r"(database|role) \"[^\"]*\" does not exist|password authentication failed"
    r"|no pg_hba\.conf entry|access denied for user|unknown database", re.IGNORECASE)
_LOCK = re.compile(r"lock timeout|lock wait timeout|lock_timeout|database is locked",
                   re.IGNORECASE)
_STATEMENT = re.compile(r"statement timeout|max_statement_time|max_execution_time"
                        r"|maximum statement execution time", re.IGNORECASE)


def _text(exc: sa.exc.DBAPIError) -> str:
    return str(exc.orig) if exc.orig is not None else str(exc)


def is_transient(exc: sa.exc.DBAPIError) -> bool:
    """True when running the operation again may succeed: a dropped or refused
    connection, a deadlock or serialization failure (rolled back by the server)."""
    if exc.connection_invalidated:
        return True
    if timeout_kind(exc) is not None:
        return False
    first = _text(exc).split("\n", 1)[0]
    return bool(_TRANSIENT.search(first)) and not _REFUSED.search(first)


def timeout_kind(exc: sa.exc.DBAPIError) -> str | None:
    """``"lock"`` or ``"statement"`` when the driver reports that timeout, else None."""
    first = _text(exc).split("\n", 1)[0]
    if _LOCK.search(first):
        return "lock"
    if _STATEMENT.search(first):
        return "statement"
    code = getattr(exc.orig, "args", (None,))[0] if exc.orig is not None else None
    if code == 1205:  # MySQL/MariaDB: lock wait timeout exceeded
        return "lock"
    if code in (1969, 3024):  # MariaDB max_statement_time, MySQL max_execution_time
        return "statement"
    return None


def timeout_error(exc: sa.exc.DBAPIError, which: str, timeouts: dict[str, float | None],
                  ) -> DatabaseTimeoutError:
    seconds = timeouts.get(which)
    limit = f"the {which} timeout ({seconds:g} s)" if seconds else f"the {which} timeout"
    if which == "lock":
        why = ("a statement waited for a lock that another transaction held for longer "
               f"than {limit}. Find the transaction holding it (PostgreSQL: "
               "pg_stat_activity; MySQL/MariaDB: SHOW PROCESSLIST)")
    else:
        why = f"a statement ran longer than {limit}"
    return DatabaseTimeoutError(
        f"{why}; to allow longer, pass {which}_timeout=<seconds> to from_conn_string (or "
        f"to relaygraph.checkpointers.set_timeouts for your own engine). The database "
        f"said: {_text(exc).strip().splitlines()[0]}", which=which, seconds=seconds)


def set_timeouts(engine: Any, *, lock: float | None = DEFAULT_LOCK_TIMEOUT,
                 statement: float | None = DEFAULT_STATEMENT_TIMEOUT) -> None:
    """Give every new connection of ``engine`` (sync or async) a lock and a statement
    timeout, in seconds (None: the server's default, usually none).

    PostgreSQL: ``lock_timeout`` and ``statement_timeout``. MariaDB:
    ``innodb_lock_wait_timeout`` and ``max_statement_time``; MySQL:
    ``innodb_lock_wait_timeout`` and ``max_execution_time`` (which MySQL applies to
    SELECTs only). SQLite: ``busy_timeout`` (how long a writer waits for another), from
    ``lock``. Call it before the engine's first connection; ``from_conn_string`` calls it.
    """
    for name, v in (("lock", lock), ("statement", statement)):
        if v is not None and v <= 0:
            raise ConfigurationError(f"{name}_timeout must be > 0 seconds or None, got {v}")
    sync = getattr(engine, "sync_engine", engine)
    backend = sync.dialect.name

    def on_connect(dbapi_conn: Any, _record: Any) -> None:
        statements = _session_statements(backend, dbapi_conn, lock, statement)
        if not statements:
            return
        cur = dbapi_conn.cursor()
        try:
            for sql in statements:
                cur.execute(sql)
        finally:
            cur.close()
        if backend == "postgresql" and not getattr(dbapi_conn, "autocommit", False):
            dbapi_conn.commit()  # psycopg opened a transaction for the SETs

    sa.event.listen(sync, "connect", on_connect)


def _session_statements(backend: str, dbapi_conn: Any, lock: float | None,
                        statement: float | None) -> list[str]:
    out = []
    if backend == "postgresql":
        if lock is not None:
            out.append(f"SET lock_timeout = {int(lock * 1000)}")
        if statement is not None:
            out.append(f"SET statement_timeout = {int(statement * 1000)}")
    elif backend in ("mysql", "mariadb"):
        if lock is not None:
            out.append(f"SET SESSION innodb_lock_wait_timeout = {max(1, round(lock))}")
        if statement is not None:
            cur = dbapi_conn.cursor()
            try:
                cur.execute("SELECT VERSION()")
                mariadb = "mariadb" in str(cur.fetchone()[0]).lower()
            finally:
                cur.close()
            out.append(f"SET SESSION max_statement_time = {statement:g}" if mariadb
                       else f"SET SESSION max_execution_time = {int(statement * 1000)}")
    elif backend == "sqlite" and lock is not None:
        out.append(f"PRAGMA busy_timeout = {int(lock * 1000)}")
    return out
