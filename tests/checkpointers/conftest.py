"""Saver fixtures: every test runs on each reachable database, sync and async."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from relaygraph.checkpointers import AsyncSQLAlchemySaver, SQLAlchemySaver


@pytest.fixture
def saver(backend) -> Iterator[SQLAlchemySaver]:
    engine = sa.create_engine(backend.url)
    s = SQLAlchemySaver(engine)
    s.setup()
    yield s
    engine.dispose()


@pytest.fixture
async def asaver(backend) -> AsyncIterator[AsyncSQLAlchemySaver]:
    engine = create_async_engine(backend.async_url)
    s = AsyncSQLAlchemySaver(engine)
    await s.asetup()
    yield s
    await engine.dispose()


@pytest.fixture(params=["sync", "async"])
async def any_saver(request, backend) -> AsyncIterator[SQLAlchemySaver | AsyncSQLAlchemySaver]:
    """The sync saver (its a-methods run the sync code on a thread) or the async saver."""
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
