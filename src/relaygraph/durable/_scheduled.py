"""Before an effect acts: the checkpoints its task was scheduled from must be stored.

An effect's key comes from its task's id, and LangGraph derives a task's id from the
checkpoint the task was scheduled from. Under ``durability="async"`` (LangGraph's default)
a step's tasks start while that checkpoint is still being written: if the process dies
before it lands, the resumed run schedules the same work again from an earlier
checkpoint, under new task ids, and an effect would act again under a new key. So an
effect waits, before it acts, until every checkpoint in its task's ``checkpoint_map`` (one
per graph level) is stored. Usually that is one primary-key lookup, already true; a
confirmed checkpoint is remembered for the rest of the process.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from relaygraph._errors import RelaygraphError

Level = tuple[str, str, str]  # thread id, checkpoint namespace, checkpoint id

#: how long an effect waits for its task's checkpoints before refusing to act
WAIT_SECONDS = 30.0

_confirmed: OrderedDict[tuple[int, Level], None] = OrderedDict()
_confirmed_lock = threading.Lock()
_CONFIRMED_MAX = 4096


class SchedulingCheckpointMissing(RelaygraphError):
    """The checkpoint an effect's task was scheduled from was not stored in time."""


def levels(conf: dict[str, Any]) -> list[Level]:
    """The (thread, namespace, checkpoint id) of every graph level the task runs under."""
    thread = str(conf.get("thread_id"))
    cmap = conf.get("checkpoint_map") or {}
    return [(thread, str(ns), str(cid)) for ns, cid in cmap.items() if cid]


def _pending(checkpointer: Any, lv: Iterable[Level]) -> list[Level]:
    with _confirmed_lock:
        return [x for x in lv if (id(checkpointer), x) not in _confirmed]


def _confirm(checkpointer: Any, x: Level) -> None:
    with _confirmed_lock:
        _confirmed[(id(checkpointer), x)] = None
        while len(_confirmed) > _CONFIRMED_MAX:
            _confirmed.popitem(last=False)


def _statement(x: Level) -> Any:
    from relaygraph.checkpointers._schema import checkpoints as c

    return sa.select(sa.literal(1)).select_from(c).where(
        c.c.thread_id == x[0], c.c.checkpoint_ns == x[1], c.c.checkpoint_id == x[2])


def _relaygraph_engine(checkpointer: Any) -> Any:
    from relaygraph.checkpointers._base import BaseSQLAlchemySaver

    if isinstance(checkpointer, BaseSQLAlchemySaver):
        return getattr(checkpointer, "engine", None)
    return None


def _config(x: Level) -> dict[str, Any]:
    return {"configurable": {"thread_id": x[0], "checkpoint_ns": x[1], "checkpoint_id": x[2]}}


def stored(checkpointer: Any, x: Level) -> bool:
    """Whether checkpoint ``x`` is stored (sync)."""
    engine = _relaygraph_engine(checkpointer)
    if isinstance(engine, sa.Engine):
        with engine.connect() as conn:
            return conn.execute(_statement(x)).first() is not None
    return checkpointer.get_tuple(_config(x)) is not None


async def astored(checkpointer: Any, x: Level) -> bool:
    """Whether checkpoint ``x`` is stored (async)."""
    engine = _relaygraph_engine(checkpointer)
    if isinstance(engine, AsyncEngine):
        async with engine.connect() as conn:
            return (await conn.execute(_statement(x))).first() is not None
    if isinstance(engine, sa.Engine):
        return await asyncio.to_thread(stored, checkpointer, x)
    return await checkpointer.aget_tuple(_config(x)) is not None


def _missing(name: str, x: Level, waited: float) -> SchedulingCheckpointMissing:
    return SchedulingCheckpointMissing(
        f"effect {name!r} did not act: its task was scheduled from checkpoint {x[2]} "
        f"(thread {x[0]!r}, namespace {x[1]!r}), which is still not stored after "
        f"{waited:.0f} s, so a crash now could not be told from a new call; check the "
        "checkpointer's database (and that subgraphs holding effects persist checkpoints)")


def wait_stored(name: str, checkpointer: Any, conf: dict[str, Any],
                wait: float | None = None) -> None:
    """Return once every checkpoint the task was scheduled from is stored (waiting at most
    ``wait`` seconds, default `WAIT_SECONDS`, for each)."""
    wait = WAIT_SECONDS if wait is None else wait
    for x in _pending(checkpointer, levels(conf)):
        start, pause = time.monotonic(), 0.001
        while not stored(checkpointer, x):
            if time.monotonic() - start > wait:
                raise _missing(name, x, wait)
            time.sleep(pause)  # the put is on LangGraph's background thread: ms
            pause = min(pause * 2, 0.05)
        _confirm(checkpointer, x)


async def await_stored(name: str, checkpointer: Any, conf: dict[str, Any],
                       wait: float | None = None) -> None:
    """Async twin of `wait_stored`."""
    wait = WAIT_SECONDS if wait is None else wait
    for x in _pending(checkpointer, levels(conf)):
        start, pause = time.monotonic(), 0.001
        while not await astored(checkpointer, x):
            if time.monotonic() - start > wait:
                raise _missing(name, x, wait)
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.05)
        _confirm(checkpointer, x)
