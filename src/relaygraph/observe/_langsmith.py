"""LangSmith tags and metadata on the runs of relaygraph nodes.

When LangSmith tracing is enabled (``LANGSMITH_TRACING=true``), LangGraph traces each node
as a run. relaygraph nodes call :func:`annotate_run` while they execute, which adds
``relaygraph_*`` metadata and ``relaygraph:*`` tags to that node's run, so LangSmith can
filter runs by agent, guard verdict, review decision and cost. Without tracing (or without
the ``langsmith`` package) the call does nothing and costs almost nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

logger = logging.getLogger(__name__)

METADATA_PREFIX = "relaygraph_"
TAG = "relaygraph"


def _current_run_tree() -> Any | None:
    try:
        from langsmith.run_helpers import get_current_run_tree
    except ImportError:  # langsmith is optional
        return None
    try:
        return get_current_run_tree()
    except Exception:  # noqa: BLE001 - tracing must never break a run
        return None


def annotate_run(metadata: Mapping[str, Any] | None = None,
                 tags: Iterable[str] = ()) -> bool:
    """Add relaygraph metadata and tags to the LangSmith run that is executing now.

    Keys are prefixed with ``relaygraph_`` (unless they already are) and the tag
    ``relaygraph`` is always added. Guards and user nodes can call it too.

    Args:
        metadata: values to record, e.g. ``{"agent": "resolver", "cost": 0.0012}``.
        tags: extra tags, e.g. ``["relaygraph:review:approve"]``.

    Returns:
        True when a traced run was annotated, False when tracing is off.
    """
    run = _current_run_tree()
    if run is None:
        return False
    try:
        meta = run.metadata  # RunTree.metadata is backed by run.extra["metadata"]
        for key, value in (metadata or {}).items():
            name = key if key.startswith(METADATA_PREFIX) else METADATA_PREFIX + key
            meta[name] = value
        current = run.tags if run.tags is not None else []
        for tag in [TAG, *tags]:
            if tag not in current:
                current.append(tag)
        run.tags = current
    except Exception as exc:  # noqa: BLE001 - tracing must never break a run
        logger.debug("relaygraph: could not annotate the LangSmith run: %s", exc)
        return False
    return True


def annotate_guard_decision(decision: Mapping[str, Any]) -> bool:
    """Annotate the current run with a ``GuardDecision`` (verdict, score, route)."""
    route = str(decision.get("route"))
    return annotate_run(
        {"guard": decision.get("guard"), "guard_route": route,
         "guard_score": decision.get("score"), "guard_threshold": decision.get("threshold")},
        tags=[f"relaygraph:guard:{route}"],
    )
