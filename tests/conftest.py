"""Backend fixtures shared by every test package.

SQLite always runs. PostgreSQL (127.0.0.1:5432, user postgres, trust auth) and MariaDB /
MySQL (127.0.0.1:3306, user root, empty password) run when reachable; each test gets a
fresh database that is dropped afterwards. With ``CI=true`` an unreachable server is a
failure, not a skip. Override the servers with ``RELAYGRAPH_PG_URL`` / ``RELAYGRAPH_MYSQL_URL``
(a server URL without the database part).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from relaygraph.checkpointers import AsyncSQLAlchemySaver, SQLAlchemySaver

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

PG_SERVER = os.environ.get("RELAYGRAPH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432")
MYSQL_SERVER = os.environ.get("RELAYGRAPH_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306")

HOW_TO_ENABLE = {
    "postgres": (
        "PostgreSQL is not reachable at 127.0.0.1:5432; start it with "
        "`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` "
        "or point RELAYGRAPH_PG_URL at a server"
    ),
    "mysql": (
        "MariaDB/MySQL is not reachable at 127.0.0.1:3306; start it with "
        "`start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd` "
        "or point RELAYGRAPH_MYSQL_URL at a server"
    ),
}

_reachable: dict[str, bool | str] = {}


def _probe(kind: str) -> bool | str:
    if kind not in _reachable:
        url = PG_SERVER + "/postgres" if kind == "postgres" else MYSQL_SERVER + "/"
        args = {"connect_timeout": 3}
        try:
            eng = sa.create_engine(url, connect_args=args, poolclass=sa.pool.NullPool)
            with eng.connect() as c:
                c.execute(sa.text("SELECT 1"))
            eng.dispose()
            _reachable[kind] = True
        except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
            _reachable[kind] = f"{HOW_TO_ENABLE[kind]} ({type(exc).__name__}: {exc})"
    return _reachable[kind]


def require_backend(kind: str) -> None:
    """Skip (or fail under CI) when the server for ``kind`` is unreachable."""
    ok = _probe(kind)
    if ok is True:
        return
    if IN_CI:
        pytest.fail(f"CI=true but {ok}", pytrace=False)
    pytest.skip(str(ok))


@dataclass(frozen=True)
class Backend:
    """A fresh, empty database for one test."""

    kind: str  # "sqlite" | "postgres" | "mysql"
    url: str  # sync SQLAlchemy URL
    async_url: str  # async SQLAlchemy URL


def _fresh_server_db(kind: str) -> Iterator[Backend]:
    require_backend(kind)
    name = f"rg_{uuid.uuid4().hex[:12]}"
    if kind == "postgres":
        admin = sa.create_engine(PG_SERVER + "/postgres", isolation_level="AUTOCOMMIT",
                                 poolclass=sa.pool.NullPool)
        with admin.connect() as c:
            c.execute(sa.text(f'CREATE DATABASE "{name}"'))
        url = f"{PG_SERVER}/{name}"
        try:
            yield Backend("postgres", url, url)
        finally:
            with admin.connect() as c:
                c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()
    else:
        admin = sa.create_engine(MYSQL_SERVER + "/", poolclass=sa.pool.NullPool)
        with admin.begin() as c:
            c.execute(sa.text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
        url = f"{MYSQL_SERVER}/{name}?charset=utf8mb4"
        try:
            yield Backend("mysql", url, url.replace("+pymysql", "+asyncmy"))
        finally:
            with admin.begin() as c:
                c.execute(sa.text(f"DROP DATABASE IF EXISTS `{name}`"))
            admin.dispose()


@pytest.fixture
def sqlite_backend(tmp_path) -> Backend:
    path = tmp_path / "relaygraph.db"
    return Backend("sqlite", f"sqlite:///{path}", f"sqlite+aiosqlite:///{path}")


@pytest.fixture
def pg_backend() -> Iterator[Backend]:
    yield from _fresh_server_db("postgres")


@pytest.fixture
def mysql_backend() -> Iterator[Backend]:
    yield from _fresh_server_db("mysql")


@pytest.fixture(params=["sqlite", "postgres", "mysql"])
def backend(request) -> Iterator[Backend]:
    """Every reachable database, one fresh database per test."""
    if request.param == "sqlite":
        yield request.getfixturevalue("sqlite_backend")
    else:
        yield from _fresh_server_db(request.param)


@pytest.fixture
def engine(backend: Backend) -> Iterator[sa.Engine]:
    eng = sa.create_engine(backend.url)
    yield eng
    eng.dispose()


@pytest.fixture
def saver(backend: Backend) -> Iterator[SQLAlchemySaver]:
    """The sync saver on the backend's database (tests that need another kind define their own)."""
    engine = sa.create_engine(backend.url)
    s = SQLAlchemySaver(engine)
    s.setup()
    yield s
    engine.dispose()


@pytest.fixture
async def asaver(backend: Backend) -> AsyncIterator[AsyncSQLAlchemySaver]:
    engine = create_async_engine(backend.async_url)
    s = AsyncSQLAlchemySaver(engine)
    await s.asetup()
    yield s
    await engine.dispose()
