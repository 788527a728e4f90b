"""Serve graphs over HTTP: LangServe routes, LangGraph's client protocol, reviews, tenants.

Needs the ``serve`` extra (``pip install 'relaygraph[serve]'``)::

    from relaygraph.serve import Principal, create_app
    app = create_app({"refund": graph}, checkpointer=saver,
                     auth={"a-key-of-16-chars-or-more": Principal("acme", "ana")})

or from the command line: ``relaygraph serve refund=myapp.graphs:refund --workers 2``.
"""

from __future__ import annotations

from typing import Any

from relaygraph.serve._reviews import is_review_request
from relaygraph.serve._threads import ThreadSummary, alist_threads, list_threads, thread_config

__all__ = [
    "Authenticator",
    "Principal",
    "ServerConfig",
    "ServerContext",
    "ServerSettings",
    "ThreadSummary",
    "alist_threads",
    "api_key_authenticator",
    "compile_on",
    "create_app",
    "is_review_request",
    "list_threads",
    "load_config",
    "load_graph_spec",
    "run_server",
    "thread_config",
]

# FastAPI is an optional extra: these import it, so they load when first asked for.
_LAZY = {
    "Authenticator": "relaygraph.serve._auth",
    "Principal": "relaygraph.serve._auth",
    "api_key_authenticator": "relaygraph.serve._auth",
    "ServerContext": "relaygraph.serve._context",
    "ServerSettings": "relaygraph.serve._context",
    "ServerConfig": "relaygraph.serve._config",
    "load_config": "relaygraph.serve._config",
    "compile_on": "relaygraph.serve._loader",
    "load_graph_spec": "relaygraph.serve._loader",
    "create_app": "relaygraph.serve._app",
    "run_server": "relaygraph.serve._server",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'relaygraph.serve' has no attribute {name!r}")
    import importlib

    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        from relaygraph._errors import MissingDependencyError

        raise MissingDependencyError(exc.name or "fastapi", "serve",
                                     f"relaygraph.serve.{name}") from exc
    return getattr(mod, name)
