"""A run stops at the next step boundary after one of its checkpoints failed to save.

Under LangGraph's default ``durability="async"`` a checkpoint is saved in the background
while the next step already runs, and a failed save is only reported when the run ends:
nodes go on acting on state that is not stored (a database restart once let a run issue
58 more refunds before it failed). The savers close that window themselves:

- every run gets a token: LangGraph reads ``saver.get_next_version`` once per run (per
  loop), and that attribute hands each reader a function of its own, which puts the
  run's token into the run's context each time LangGraph calls it;
- the run's saves, submitted from that context, see the token; a save (``put`` or
  ``put_writes``) that fails marks it;
- LangGraph calls ``get_next_version`` at every step boundary, before the next step
  starts: there the marked token raises :class:`CheckpointSaveError`, and the run stops;
- while one of the run's operations is retrying a dropped connection, that boundary
  waits for it to end (stored, or failed), so that a run with fast nodes does not race
  ahead of saves that are about to fail. (In an event loop the boundary cannot wait:
  an async run stops at the first boundary after the retries gave up.)

So a failed save stops the run at the next step boundary whatever the durability: the
step that was running when the save failed finishes (its writes are stored as pending
writes where possible), no later step starts. ``durability="sync"`` stops one step
earlier, at the cost of waiting for every save.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from typing import Any

from relaygraph.checkpointers._errors import CheckpointerError


class CheckpointSaveError(CheckpointerError):
    """A checkpoint of this run could not be saved, so the run stopped at the next step
    boundary instead of going on with state that is not stored.

    The cause (``__cause__``) is the saver's error, e.g. ``DatabaseUnavailableError``,
    or the serializer's ``TypeError`` for a value of the state it cannot store. Resume
    the thread with ``graph.invoke(None, config)`` once the database is back (or the
    node returns values that can be stored): it continues from the last checkpoint that
    was saved.
    """

    def __init__(self, thread_id: str, cause: BaseException) -> None:
        if isinstance(cause, TypeError):  # not the database: resuming as is fails again
            fix = ("A value in the state cannot be serialized: make the nodes return "
                   "values that can be stored (plain data, LangChain messages, pydantic "
                   "models, dataclasses), then resume it with graph.invoke(None, config)")
        else:
            fix = "Resume it with graph.invoke(None, config) once the database is back"
        super().__init__(
            f"a checkpoint of thread {thread_id!r} could not be saved ({cause}); the run "
            f"stopped at the next step boundary rather than run on unsaved state. {fix}")
        self.thread_id = thread_id


class _Run:
    __slots__ = ("cond", "failed", "troubled")

    def __init__(self) -> None:
        self.failed: tuple[str, BaseException] | None = None
        self.troubled = 0  # the run's operations retrying a dropped connection now
        self.cond = threading.Condition()


_RUN: ContextVar[_Run | None] = ContextVar("relaygraph_run", default=None)
_SAVES = ("_op_put", "_op_put_writes")


def per_run(next_version: Callable[..., str]) -> Callable[..., str]:
    """``next_version`` for one run: it marks the run's context and stops the run once
    one of its saves failed (see the module docstring)."""
    run = _Run()

    def get_next_version(current: Any, channel: Any = None) -> str:
        _RUN.set(run)
        if run.troubled and not _on_event_loop():
            # a save of this run is retrying a lost connection: the next step waits to
            # learn whether it was stored (an event loop must not block: there the stop
            # comes at the first boundary after the retries gave up)
            with run.cond:
                run.cond.wait_for(lambda: run.troubled == 0)
        if run.failed is not None:
            thread_id, cause = run.failed
            run.failed = None  # raised once
            raise CheckpointSaveError(thread_id, cause) from cause
        return next_version(current, channel)

    return get_next_version


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def trouble_begins() -> _Run | None:
    """An operation of the current run started retrying a dropped connection."""
    run = _RUN.get()
    if run is not None:
        with run.cond:
            run.troubled += 1
    return run


def trouble_ends(run: _Run | None) -> None:
    """That operation ended (stored, or failed and noted with :func:`note_failed_save`)."""
    if run is not None:
        with run.cond:
            run.troubled -= 1
            run.cond.notify_all()


def note_failed_save(make: Any, args: Sequence[Any], exc: BaseException) -> None:
    """Mark the current run when ``make(*args)`` (a saver operation) was a save."""
    run = _RUN.get()
    if run is None or run.failed is not None:
        return
    name = getattr(make, "__name__", "")
    if name == "_op_fenced" and len(args) >= 3:  # (fence, make, *args)
        name, args = getattr(args[1], "__name__", ""), args[2:]
    if name not in _SAVES or not args:
        return
    conf = (args[0] or {}).get("configurable") or {} if isinstance(args[0], dict) else {}
    run.failed = (str(conf.get("thread_id")), exc)
