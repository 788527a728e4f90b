"""A thread's status, decided in one place from its state snapshot.

Every tool that shows a thread (the CLI's ``threads`` and ``demo``, the server's listings)
asks :func:`thread_status`, so that they agree on what a thread is doing.

The subtle case is a crash. A process killed mid-run leaves the thread's latest checkpoint
behind together with the task writes stored after it. When every task of that step had
stored its writes, LangGraph folds them into the snapshot and reports ``next == ()``: the
thread looks finished although the steps after it never ran. Its pending work is visible
only in ``snapshot.tasks`` (tasks whose ``result`` is already known). Such a thread is
``interrupted``, and ``graph.invoke(None, config)`` resumes it: LangGraph applies the stored
writes without running those tasks again and carries on with the next step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from langchain_core.runnables import RunnableConfig
from langgraph.types import StateSnapshot

ThreadStatus = Literal["running", "waiting", "interrupted", "finished", "failed"]
"""What a thread is doing:

- ``running``: a live run holds the thread (the caller says so: a live lease).
- ``waiting``: paused on one or more interrupts, for a human or another system to answer
  with ``Command(resume=...)``.
- ``interrupted``: stopped mid-run (a crash, a lost database, a static breakpoint) with work
  left to do; ``graph.invoke(None, config)`` continues it.
- ``finished``: nothing left to run.
- ``failed``: a task raised; ``graph.invoke(None, config)`` retries the failed tasks.
"""


@dataclass(frozen=True)
class StatusReport:
    """The status of one thread, as decided by :func:`thread_status`.

    Attributes:
        status: see :data:`ThreadStatus`.
        next: the nodes whose work is pending: those scheduled to run and, after a crash,
            those whose writes were stored but not yet folded into a checkpoint.
        waiting_on: the open interrupts as ``{"id", "value", "node"}`` dicts (``waiting``).
        error: ``"node: ErrorType: message"`` for each failed task, joined by ``"; "``
            (``failed``), else None.
        resumable: ``graph.invoke(None, config)`` continues the thread with no new input
            (``interrupted`` and ``failed``). A ``waiting`` thread needs an answer instead,
            a ``running`` one belongs to its holder, a ``finished`` one has nothing to do.
    """

    status: ThreadStatus
    next: tuple[str, ...] = ()
    waiting_on: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    resumable: bool = False

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (interrupt values are passed through as they are)."""
        return {"status": self.status, "next": list(self.next),
                "waiting_on": self.waiting_on, "error": self.error,
                "resumable": self.resumable}


def thread_status(snapshot: StateSnapshot, *, running: bool = False) -> StatusReport:
    """Decide a thread's status from ``graph.get_state(config)``.

    Args:
        snapshot: the thread's state snapshot (root namespace).
        running: a live run holds the thread, e.g.
            ``LeaseStore.current(thread_id) is not None``.

    The checks, in order: a live holder makes it ``running``; a task that recorded an
    error makes it ``failed``; an open interrupt makes it ``waiting``; scheduled nodes, or
    tasks whose writes were stored after the latest checkpoint, make it ``interrupted``;
    otherwise it is ``finished``. A thread with no checkpoint at all (never started, or
    killed before its input was stored) is ``finished``: there is nothing to resume, and
    the run has to be started again with its input.

    A thread whose answer to an interrupt was stored but whose run then crashed still shows
    ``waiting``: answering again with ``Command(resume=...)`` replaces the stored answer and
    continues it. (Continuing with ``invoke(None)`` would also use the stored answer, but
    from the snapshot alone that case cannot be told apart from a task that asked a second
    question after its first answer.)

    Example:
        >>> report = thread_status(graph.get_state(config))     # doctest: +SKIP
        >>> if report.resumable:                                 # doctest: +SKIP
        ...     graph.invoke(None, config)
    """
    tasks = tuple(snapshot.tasks or ())
    pending = _pending_nodes(snapshot)
    if running:
        return StatusReport("running", pending)
    errors = [f"{t.name}: {_describe(t.error)}" for t in tasks if t.error is not None]
    if errors:
        return StatusReport("failed", pending, error="; ".join(errors), resumable=True)
    waiting = [{"id": i.id, "value": i.value, "node": t.name}
               for t in tasks for i in (t.interrupts or ())]
    if not waiting:  # snapshots built by hand may carry interrupts without their tasks
        waiting = [{"id": i.id, "value": i.value, "node": None}
                   for i in (snapshot.interrupts or ())]
    if waiting:
        return StatusReport("waiting", pending, waiting_on=waiting)
    if pending:
        return StatusReport("interrupted", pending, resumable=True)
    return StatusReport("finished")


def _pending_nodes(snapshot: StateSnapshot) -> tuple[str, ...]:
    # scheduled nodes first, then those that stored writes the snapshot already folded in
    out = list(snapshot.next or ())
    for t in snapshot.tasks or ():
        if t.name not in out:
            out.append(t.name)
    return tuple(out)


def _describe(error: Any) -> str:
    if isinstance(error, BaseException):
        text = str(error).strip().splitlines()
        return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__
    return str(error)


def get_thread_status(graph: Any, config: RunnableConfig, *,
                      running: bool = False) -> StatusReport:
    """``thread_status(graph.get_state(config), running=running)``."""
    return thread_status(graph.get_state(config), running=running)


async def aget_thread_status(graph: Any, config: RunnableConfig, *,
                             running: bool = False) -> StatusReport:
    """Async twin of :func:`get_thread_status`."""
    return thread_status(await graph.aget_state(config), running=running)
