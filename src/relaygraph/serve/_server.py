"""Running the server: an importable app factory for uvicorn/gunicorn workers.

``relaygraph serve`` calls `run_server`; it puts the specs and config path in the
environment and starts uvicorn on ``relaygraph.serve._server:app_factory`` with
``factory=True``, so every worker process builds its own app (its own engine and saver)
on the shared database. The same factory works by hand::

    RELAYGRAPH_SERVE_CONFIG=relaygraph.toml uvicorn --factory --workers 2 \\
        relaygraph.serve._server:app_factory
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

from relaygraph._errors import ConfigurationError
from relaygraph.serve._config import DEFAULT_DATABASE_URL, ServerConfig, load_config

CONFIG_ENV = "RELAYGRAPH_SERVE_CONFIG"
"""Path of the TOML config file the factory reads."""
SPECS_ENV = "RELAYGRAPH_SERVE_GRAPHS"
"""JSON list of ``NAME=module:attr`` specs (added to / overriding the config's graphs)."""
DATABASE_ENV = "RELAYGRAPH_DATABASE_URL"
"""Database URL overriding the config file's."""

APP_FACTORY = "relaygraph.serve._server:app_factory"


def _graph_objects(specs: Mapping[str, str]) -> dict[str, Any]:
    from relaygraph.serve._loader import load_graph_spec

    if not specs:
        from relaygraph.graphs.examples import EXAMPLES

        return {name: ex.build for name, ex in EXAMPLES.items()}
    out = {}
    for name, target in specs.items():
        loaded_name, obj = load_graph_spec(f"{name}={target}")
        out[loaded_name] = obj
    return out


def _specs(config: ServerConfig, specs: Sequence[str]) -> dict[str, str]:
    merged = dict(config.graphs)
    for spec in specs:
        name, sep, target = spec.partition("=")
        if not sep:
            raise ConfigurationError(
                f"a graph spec is NAME=module:attr (e.g. refund=myapp.graphs:refund), got "
                f"{spec!r}")
        merged[name.strip()] = target.strip()
    return merged


def build_app(config: ServerConfig, specs: Sequence[str] = (), *,
              database_url: str | None = None) -> Any:
    """A FastAPI app for a config: opens the database, compiles the graphs on its saver."""
    import sqlalchemy as sa
    from fastapi import FastAPI
    from sqlalchemy.ext.asyncio import create_async_engine

    from relaygraph.checkpointers import AsyncSQLAlchemySaver
    from relaygraph.checkpointers._urls import engine_kwargs, resolve_url, sqlite_pragmas
    from relaygraph.serve._app import create_app
    from relaygraph.serve._auth import anonymous_authenticator
    from relaygraph.serve._loader import compile_on

    objects = _graph_objects(_specs(config, specs))
    url = resolve_url(database_url or config.database_url, async_=True)
    engine = create_async_engine(url, **engine_kwargs(url))
    if url.get_backend_name() == "sqlite":
        sa.event.listen(engine.sync_engine, "connect", sqlite_pragmas)
    saver = AsyncSQLAlchemySaver(engine)
    graphs = {name: compile_on(obj, saver) for name, obj in objects.items()}

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        await saver.asetup()
        try:
            yield
        finally:
            await engine.dispose()

    if config.anonymous:
        auth: Any = anonymous_authenticator()
    elif config.keys:
        auth = dict(config.keys)
    else:
        raise ConfigurationError(
            "no API keys: set RELAYGRAPH_API_KEYS='tenant:key,...' or [auth] keys in the config "
            "file (or auth.anonymous = true for local development only)")
    app = FastAPI(title="relaygraph", docs_url=None, redoc_url=None, lifespan=lifespan)
    return create_app(graphs, checkpointer=saver, app=app, auth=auth, settings=config.settings)


def app_factory() -> Any:
    """The app for this process, from ``RELAYGRAPH_SERVE_*`` environment variables."""
    config = load_config(os.environ.get(CONFIG_ENV) or None)
    specs = json.loads(os.environ.get(SPECS_ENV) or "[]")
    return build_app(config, specs, database_url=os.environ.get(DATABASE_ENV) or None)


def run_server(specs: Sequence[str] = (), config_path: str | None = None, host: str = "127.0.0.1",
               port: int = 8000, workers: int = 1, *, database_url: str | None = None,
               log_level: str = "info", announce: Callable[[], None] | None = None) -> None:
    """Serve graphs with uvicorn; ``workers > 1`` starts that many processes.

    Args:
        specs: ``NAME=module:attr`` graph specs; none and none in the config: the examples.
        config_path: a TOML config file (see `relaygraph.serve._config`).
        host, port: where to listen.
        workers: worker processes (each opens its own connection pool on the database).
        database_url: overrides the config's database URL.
        announce: called once the graphs, config and keys are checked, just before the
            server starts listening (the CLI prints where it serves).

    Raises:
        ConfigurationError: a bad spec, config or missing keys, before anything listens.
    """
    import uvicorn

    if workers < 1:
        raise ConfigurationError(f"workers must be >= 1, got {workers}")
    config = load_config(config_path)
    build_app(config, specs, database_url=database_url)  # fail here, not in every worker
    if announce is not None:
        announce()
    os.environ[SPECS_ENV] = json.dumps(list(specs))
    if config_path:
        os.environ[CONFIG_ENV] = str(config_path)
    if database_url:
        os.environ[DATABASE_ENV] = database_url
    uvicorn.run(APP_FACTORY, factory=True, host=host, port=port, workers=workers,
                log_level=log_level, timeout_graceful_shutdown=int(
                    config.settings.drain_timeout) + 5)


__all__ = ["APP_FACTORY", "DEFAULT_DATABASE_URL", "app_factory", "build_app", "run_server"]
