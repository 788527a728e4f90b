"""Saver fixtures: every test runs on each reachable database, sync and async."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from relaygraph.checkpointers import AsyncSQLAlchemySaver, SQLAlchemySaver


@pytest.fixture(params=["sync", "async", "async-url"])
async def any_saver(request, backend) -> AsyncIterator[SQLAlchemySaver | AsyncSQLAlchemySaver]:
    """The sync saver (its a-methods run the sync code on a thread), the async saver on an
    async engine, or the async saver from a URL (on a SQLite file: sqlite3 on worker
    threads)."""
    if request.param == "async-url":
        async with AsyncSQLAlchemySaver.from_conn_string(backend.async_url) as a:
            assert (a._worker is not None) == (backend.kind == "sqlite")
            await a.asetup()
            yield a
        return
    if request.param == "sync":
        engine = sa.create_engine(backend.url)
        s = SQLAlchemySaver(engine)
        s.setup()
        yield s
        engine.dispose()
    else:
        aengine = create_async_engine(backend.async_url)
        a = AsyncSQLAlchemySaver(aengine)
        await a.asetup()
        yield a
        await aengine.dispose()
