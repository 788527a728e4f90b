"""Serve graphs over HTTP: LangServe routes, thread and review endpoints, a review inbox.

Needs the ``serve`` extra (``pip install 'relaygraph[serve]'``)::

    from relaygraph.serve import create_app
    app = create_app({"refund": graph}, checkpointer=saver)
"""

from __future__ import annotations

from typing import Any

from relaygraph.serve._reviews import is_review_request
from relaygraph.serve._threads import ThreadSummary, alist_threads, list_threads, thread_config

__all__ = [
    "ThreadSummary",
    "alist_threads",
    "create_app",
    "is_review_request",
    "list_threads",
    "thread_config",
]


def __getattr__(name: str) -> Any:
    # FastAPI is an optional extra: import it only when the app is asked for.
    if name == "create_app":
        try:
            from relaygraph.serve._app import create_app
        except ImportError as exc:
            from relaygraph._errors import MissingDependencyError

            raise MissingDependencyError(exc.name or "fastapi", "serve",
                                         "relaygraph.serve.create_app") from exc
        return create_app
    raise AttributeError(f"module 'relaygraph.serve' has no attribute {name!r}")
