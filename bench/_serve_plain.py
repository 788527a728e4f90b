"""LangServe's own ``add_routes`` on the refund graph and relaygraph's saver, nothing else.

The baseline of ``bench_serve.py``: no API keys, tenants, leases, limits or thread index.
A compiled graph declares no configurable fields, so plain LangServe would drop the thread
id; the one addition is a ``per_req_config_modifier`` that copies it from the request body
(what every LangServe user of a checkpointed graph has to write).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI, Request
from langserve import add_routes
from sqlalchemy.ext.asyncio import create_async_engine

from relaygraph.checkpointers import AsyncSQLAlchemySaver
from relaygraph.checkpointers._urls import engine_kwargs, resolve_url, sqlite_pragmas
from relaygraph.graphs.examples import EXAMPLES
from relaygraph.serve._langserve import _serializer


def app_factory() -> FastAPI:
    url = resolve_url(os.environ["RELAYGRAPH_DATABASE_URL"], async_=True)
    engine = create_async_engine(url, **engine_kwargs(url))
    if url.get_backend_name() == "sqlite":
        sa.event.listen(engine.sync_engine, "connect", sqlite_pragmas)
    saver = AsyncSQLAlchemySaver(engine)
    graph = EXAMPLES["refund"].build().compile(checkpointer=saver)

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        await saver.asetup()
        yield
        await engine.dispose()

    async def thread_from_body(config: dict[str, Any], request: Request) -> dict[str, Any]:
        body = await request.json()
        conf = (body.get("config") or {}).get("configurable") or {}
        return {**config, "configurable": {**(config.get("configurable") or {}),
                                           "thread_id": conf.get("thread_id")}}

    app = FastAPI(lifespan=lifespan)
    add_routes(app, graph, path="/graphs/refund", input_type=dict[str, Any],
               output_type=dict[str, Any], serializer=_serializer(),
               per_req_config_modifier=thread_from_body)

    @app.get("/ready")
    async def ready() -> dict[str, str]:
        return {"status": "ready"}

    return app
