"""The protocol between the shared core and the sync/async shells.

Each operation is a generator that yields SQLAlchemy statements and receives their rows
(or row count) back; it never touches a connection. The sync and async savers drive these
generators on an ``Engine`` or ``AsyncEngine``:

    yield <Executable>    -> receives ``list[Row]`` (statements returning rows) or rowcount
    yield Q(stmt, rows)   -> executes ``stmt`` once per parameter dict, gets the rowcount
    yield P([Q, ...])     -> runs the writes in order, in one round trip where the driver
                             can pipeline them (psycopg); gets their rowcounts
    yield R(stmt, params) -> executes a cached statement with parameters, gets the rows
    yield Emit(item)      -> hands ``item`` to the caller (``list()`` streams)
    yield After(fn)       -> ``fn()`` is called once the transaction has committed
    return value          -> the operation's result
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Generator, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeAlias

Op: TypeAlias = Generator[Any, Any, Any]
IN_BATCH = 400
CONFLICT = object()  # returned by an op that must be redone in a transaction


class ThreadInfo(NamedTuple):
    """One thread as ``list_threads()`` sees it (root namespace only)."""

    thread_id: str
    latest_checkpoint_id: str
    checkpoints: int


@dataclass(frozen=True, slots=True)
class R:
    """A cached statement and its parameters; the rows come back."""

    stmt: Any
    params: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Q:
    """A cached statement plus its parameter rows (an executemany)."""

    stmt: Any
    params: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class P:
    """Writes that need no answer in between: one round trip where the driver allows."""

    writes: list[Q]


def writes_of(msg: P | Q) -> list[Q]:
    """The writes a ``P`` or ``Q`` message carries; :func:`answer` shapes their rowcounts."""
    return msg.writes if isinstance(msg, P) else [msg]


def answer(msg: P | Q, counts: list[int]) -> list[int] | int:
    return counts if isinstance(msg, P) else counts[0]


@dataclass(frozen=True, slots=True)
class Emit:
    item: Any


@dataclass(frozen=True, slots=True)
class After:
    fn: Any


def _batches(items: Sequence[Any], n: int = IN_BATCH) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def _group_keys(keys: Iterable[tuple[str, str, str]]) -> dict[tuple[str, str], list[str]]:
    """``(thread, ns, x)`` keys as ``{(thread, ns): [x, ...]}`` (order kept, no repeats)."""
    out: dict[tuple[str, str], dict[str, None]] = defaultdict(dict)
    for t, n, x in keys:
        out[(t, n)][x] = None
    return {k: list(v) for k, v in out.items()}
