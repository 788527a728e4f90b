"""The HTTP app: one router per resource, auth and tenants as dependencies, one error map."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import logging
import os
import pkgutil
import signal
import socket
import threading
from collections.abc import AsyncIterator, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from relaygraph._errors import ConfigurationError, RelaygraphError
from relaygraph.serve._auth import (
    Authenticator,
    Principal,
    api_key_authenticator,
    keys_from_env,
)
from relaygraph.serve._context import LocalLeaseStore, ServerContext, ServerSettings
from relaygraph.serve._errors import detail, status_for
from relaygraph.serve._index import ThreadIndex
from relaygraph.serve._json import to_json
from relaygraph.serve._loader import check_graph_name

log = logging.getLogger("relaygraph.serve")

__all__ = ["create_app", "to_json"]


def _resolve_auth(auth: Authenticator | Mapping[str, Principal] | None) -> Authenticator:
    if auth is None:
        return api_key_authenticator(keys_from_env())
    if isinstance(auth, Mapping):
        return api_key_authenticator(auth)
    if not callable(auth):
        raise ConfigurationError(
            f"auth must be a callable(request) -> Principal | None or a mapping of API keys "
            f"to Principal, got {type(auth).__name__}")
    return auth


def default_leases(checkpointer: Any, settings: ServerSettings) -> Any:
    """`relaygraph.durable.LeaseStore` on the saver's database, or in-process leases."""
    if getattr(checkpointer, "engine", None) is None:
        return LocalLeaseStore(ttl=settings.lease_ttl)
    try:
        from relaygraph.durable import LeaseStore
    except ImportError:  # pragma: no cover - durable ships with relaygraph
        log.warning("relaygraph.durable is not available: leases are in-process only")
        return LocalLeaseStore(ttl=settings.lease_ttl)
    return LeaseStore.from_saver(checkpointer, ttl=settings.lease_ttl)


def route_modules() -> list[Any]:
    """The modules of ``relaygraph.serve._routes`` that expose a ``router``."""
    from relaygraph.serve import _routes

    found = []
    for info in sorted(pkgutil.iter_modules(_routes.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{_routes.__name__}.{info.name}")
        if getattr(module, "router", None) is not None:
            found.append(module)
    return found


def create_app(
    graphs: Mapping[str, Any],
    *,
    checkpointer: Any,
    title: str = "relaygraph",
    langserve_routes: bool = True,
    app: FastAPI | None = None,
    auth: Authenticator | Mapping[str, Principal] | None = None,
    settings: ServerSettings | None = None,
    leases: Any = None,
    index: ThreadIndex | None = None,
) -> FastAPI:
    """Serve compiled graphs: LangServe routes, LangGraph's client protocol, reviews.

    Routes (each resource is a router in ``relaygraph.serve._routes``):
        * ``/graphs/{name}/invoke``, ``/stream``, ... : LangServe, per graph.
        * ``/assistants``, ``/threads``, ``/threads/{id}/runs``: LangGraph's client protocol
          (``langgraph_sdk``, ``RemoteGraph``).
        * ``GET /threads``: the caller's threads, newest first, paginated.
        * ``GET /reviews`` and ``POST /reviews/{thread_id}``: pending reviews and decisions.
        * ``GET /health``, ``GET /ready``.

    Every route except ``/health`` and ``/ready`` needs an API key (``x-api-key``); a tenant
    sees only its own threads.

    Args:
        graphs: compiled graphs by name, compiled with ``checkpointer`` (see
            `relaygraph.serve.compile_on` for users' graphs).
        checkpointer: the saver every graph uses; it must implement the async methods
            (``AsyncSQLAlchemySaver``, ``SQLAlchemySaver`` or ``InMemorySaver``).
        title: the app title.
        langserve_routes: add LangServe routes (needs the ``serve`` extra).
        app: add the routes to this app instead of a new one.
        auth: an authenticator callable (OIDC, your own scheme) or ``{api_key: Principal}``;
            default: the keys in ``RELAYGRAPH_API_KEYS``.
        settings: limits, retention and timeouts.
        leases: the lease store (default: `relaygraph.durable.LeaseStore` on the saver's
            database).
        index: the thread index (default: a table in the saver's database).

    Raises:
        ConfigurationError: no graphs, a name that is not URL-safe, a graph compiled
            without a checkpointer, or no API keys.

    Example::

        app = create_app({"refund": graph}, checkpointer=saver,
                         auth={"k3y-of-at-least-16-chars": Principal("acme", "ana")})
    """
    if not graphs:
        raise ConfigurationError("create_app needs at least one graph, got an empty mapping")
    for name, graph in graphs.items():
        check_graph_name(name)
        if getattr(graph, "checkpointer", None) is None:
            raise ConfigurationError(
                f"graph {name!r} has no checkpointer; compile it with "
                f"builder.compile(checkpointer=saver) using the saver passed to create_app")
    settings = settings or ServerSettings()
    ctx = ServerContext(
        graphs=dict(graphs), checkpointer=checkpointer,
        leases=leases if leases is not None else default_leases(checkpointer, settings),
        auth=_resolve_auth(auth), settings=settings,
        threads=index or ThreadIndex(getattr(checkpointer, "engine", None)),
        holder=f"{socket.gethostname()}:{os.getpid()}",
    )

    app = app or FastAPI(title=title, docs_url=None, redoc_url=None)
    app.state.relaygraph = ctx
    _install_lifespan(app, ctx)
    _install_error_handlers(app)

    from fastapi import Depends

    from relaygraph.serve._limits import BodyLimitMiddleware, valid_json_text

    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)

    for module in route_modules():
        app.include_router(module.router, dependencies=[Depends(valid_json_text)])
    _install_docs(app, title)
    if langserve_routes:
        from relaygraph.serve._langserve import add_langserve_routes

        add_langserve_routes(app, ctx)
    return app


DOCS_ASSETS = "/docs/assets"


def _install_docs(app: FastAPI, title: str) -> None:
    """Swagger UI at ``/docs`` from the assets the ``swagger-ui-bundle-v2`` package ships.

    Nothing comes from a CDN: without the package there is no ``/docs`` (the schema stays
    at ``/openapi.json``). ReDoc is left out, as no package ships its assets.
    """
    if app.docs_url is not None or any(getattr(r, "path", None) == "/docs"
                                       for r in app.routes):
        return  # the caller's own app already has docs
    try:
        import swagger_ui_bundle
    except ImportError:
        return
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.responses import HTMLResponse
    from fastapi.staticfiles import StaticFiles

    app.mount(DOCS_ASSETS, StaticFiles(directory=swagger_ui_bundle.swagger_ui_path),
              name="docs-assets")
    openapi_url = app.openapi_url or "/openapi.json"

    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url, title=f"{title} · API",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon-32x32.png")

    app.add_api_route("/docs", docs, include_in_schema=False, response_class=HTMLResponse)


def _install_lifespan(app: FastAPI, ctx: ServerContext) -> None:
    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(a: Any) -> AsyncIterator[Any]:
        await ctx.threads.asetup()
        setup = getattr(ctx.leases, "asetup", None)
        if setup is not None:
            await setup()
        from relaygraph.serve._sweeper import run_sweeper

        sweeper = asyncio.create_task(run_sweeper(ctx)) if ctx.settings.retention else None
        restore = _drain_on_sigterm(ctx)
        try:
            async with inner(a) as state:
                yield state
        finally:
            restore()
            await drain(ctx)
            if sweeper is not None:
                sweeper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sweeper

    app.router.lifespan_context = lifespan


def begin_drain(ctx: ServerContext) -> None:
    """Take no new runs; ask running ones to stop at their next step boundary.

    Safe to call from a signal handler: it only sets flags (LangGraph's ``RunControl``
    drain request is a single attribute write).
    """
    ctx.draining = True
    for control in list(ctx.controls.values()):
        control.request_drain("shutdown")


def _drain_on_sigterm(ctx: ServerContext) -> Any:
    """Chain a drain in front of the server's own SIGTERM handler.

    uvicorn waits for in-flight requests before it runs the lifespan shutdown; the runs
    must be asked to stop first, or a long run would hold the shutdown until it finished.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum: int, frame: Any) -> None:
        begin_drain(ctx)
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL:
            raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_sigterm)

    def restore() -> None:
        if signal.getsignal(signal.SIGTERM) is on_sigterm:
            signal.signal(signal.SIGTERM, previous)

    return restore


async def drain(ctx: ServerContext) -> None:
    """Stop taking runs; give running ones ``drain_timeout`` to reach a step boundary."""
    begin_drain(ctx)
    runs = [t for t in ctx.active_runs if not t.done()]
    if not runs:
        return
    log.info("draining: waiting for %d run(s) to reach a step boundary", len(runs))
    _, pending = await asyncio.wait(runs, timeout=ctx.settings.drain_timeout)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending, timeout=5)


def _install_error_handlers(app: FastAPI) -> None:
    async def relaygraph_error(request: Request, exc: Exception) -> JSONResponse:
        status = status_for(exc)
        if status is None:
            log.exception("server error on %s %s", request.method, request.url.path,
                          exc_info=exc)
            return JSONResponse({"detail": "internal server error"}, status_code=500)
        return JSONResponse({"detail": detail(exc)}, status_code=status)

    async def bad_text(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": f"the request is not valid UTF-8 text: {exc}"},
                            status_code=400)

    async def validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return JSONResponse({"detail": to_json(_clean_errors(exc.errors()))}, status_code=422)

    app.add_exception_handler(RelaygraphError, relaygraph_error)
    app.add_exception_handler(UnicodeDecodeError, bad_text)
    app.add_exception_handler(RequestValidationError, validation)


def _clean_errors(errors: Any) -> Any:
    # pydantic puts the offending input in each error; an input JSON cannot carry (bytes
    # that are not UTF-8, a lone surrogate, 1e400 read as inf) would make the error response
    # itself fail. LangServe raises its own errors as plain strings ("Invalid JSON body").
    out = []
    for err in errors:
        if not isinstance(err, Mapping):
            out.append({"msg": str(err)})
            continue
        err = dict(err)
        if "input" in err:
            err["input"] = _printable_input(err["input"])
        out.append(err)
    return out


def _printable_input(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    try:
        json.dumps(value, ensure_ascii=False, allow_nan=False,
                   default=str).encode("utf-8")
    except (ValueError, TypeError):  # UnicodeEncodeError is a ValueError
        return repr(value)[:200]
    return value
