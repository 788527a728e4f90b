"""Errors the server raises and the status codes they map to (one table, one handler)."""

from __future__ import annotations

from typing import Any

from relaygraph._errors import RelaygraphError


class NotFound(RelaygraphError, LookupError):
    """No such thread or graph for this caller (404, also for other tenants' threads)."""


class ThreadNotWaiting(RelaygraphError):
    """A resume or decision for a thread that is not paused on an interrupt (409)."""


class AlreadyDecided(ThreadNotWaiting):
    """The interrupt this decision answers was already answered (409)."""


class ServerDraining(RelaygraphError):
    """The server is shutting down and takes no new runs (503)."""


class BadRequest(RelaygraphError, ValueError):
    """A client mistake the server found itself (422, with the reason)."""


class ThreadBusy(RelaygraphError):
    """Fallback busy error when `relaygraph.durable` is not importable (409)."""

    def __init__(self, thread_id: str, holder: str, expires_at: float) -> None:
        super().__init__(f"thread {thread_id!r} is busy: a run holds it until {expires_at:.0f} "
                         f"(holder {holder!r}); retry later or use multitask_strategy "
                         f"'enqueue'")
        self.thread_id, self.holder, self.expires_at = thread_id, holder, expires_at


def busy_error(thread_id: str, holder: str, expires_at: float) -> Exception:
    """The busy error of `relaygraph.durable` (or `ThreadBusy` without it)."""
    try:
        from relaygraph.durable import ThreadBusyError
    except ImportError:
        return ThreadBusy(thread_id, holder, expires_at)
    try:
        return ThreadBusyError(thread_id, holder, expires_at)  # type: ignore[call-arg]
    except TypeError:
        return ThreadBusy(thread_id, holder, expires_at)


def status_for(exc: BaseException) -> int | None:
    """The HTTP status for a relaygraph error, or None when it is a server fault (500)."""
    from relaygraph.checkpointers._errors import (
        DatabaseUnavailableError,
        InvalidFilterError,
        InvalidKeyError,
    )
    from relaygraph.nodes import InvalidReviewDecision, NotWaitingForReview
    from relaygraph.serve._tenancy import InvalidThreadId

    table: list[tuple[tuple[type[BaseException], ...], int]] = [
        ((NotFound,), 404),
        ((ThreadNotWaiting, NotWaitingForReview, ThreadWaiting, WrongGraph,
          ThreadHasRuns), 409),
        ((ThreadBusy,), 409),
        ((ServerDraining,), 503),
        ((InvalidThreadId, InvalidReviewDecision, BadRequest, InvalidKeyError,
          InvalidFilterError), 422),
        ((DatabaseUnavailableError,), 503),
    ]
    try:
        from relaygraph.durable import LeaseLostError, RunCancelledError, ThreadBusyError
        table.append(((ThreadBusyError, LeaseLostError), 409))
        table.append(((RunCancelledError,), 409))
    except ImportError:
        pass
    if isinstance(exc, RunStopped):
        return {"timeout": 408, "shutdown": 503}.get(exc.reason, 409)
    for types, status in table:
        if isinstance(exc, types):
            return status
    return None


def detail(exc: BaseException) -> Any:
    """The message for the client; stored thread ids are shown as the client's ids."""
    text = str(exc) or type(exc).__name__
    internal = getattr(exc, "thread_id", None)
    if isinstance(internal, str) and "/" in internal:
        text = text.replace(internal, internal.split("/", 1)[1])
    return text


class ThreadWaiting(RelaygraphError):
    """New input for a thread paused on an interrupt: it must be resumed instead (409)."""


class WrongGraph(RelaygraphError):
    """The thread belongs to another served graph (409)."""


class ThreadHasRuns(RelaygraphError):
    """A run scheduled with ``reject`` on a thread that has a pending or running run (409)."""

    def __init__(self, thread_id: str, run_id: str, status: str) -> None:
        super().__init__(f"thread {thread_id!r} has a {status} run ({run_id}); a run "
                         f"scheduled with multitask_strategy 'reject' needs a thread with "
                         f"none: wait for it, or schedule with 'enqueue'")
        self.thread_id = thread_id


class RunStopped(RelaygraphError):
    """A run stopped at a step boundary before finishing (timeout 408, shutdown 503).

    The thread keeps its last checkpoint; invoking it with ``None`` input continues it.
    """

    def __init__(self, thread_id: str, reason: str, *, timeout: float | None = None) -> None:
        why = {"timeout": f"it ran longer than run_timeout={timeout}s",
               "shutdown": "the server is shutting down",
               "cancelled": "another request asked it to stop",
               "lease lost": "another server took the thread over"}.get(reason, reason)
        super().__init__(f"the run on thread {thread_id!r} stopped at a step boundary because "
                         f"{why}; its last checkpoint is kept and it can be continued")
        self.thread_id, self.reason = thread_id, reason
