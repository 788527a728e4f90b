"""Where circuit breakers keep their state: the `BreakerStore` protocol and the in-memory store."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from relaygraph.guards._record import BreakerRecord

logger = logging.getLogger("relaygraph.guards")

Step = Callable[[BreakerRecord | None], BreakerRecord]
"""A pure transition: the current record (None when absent) to the next one."""


@runtime_checkable
class BreakerStore(Protocol):
    """Storage for breaker records, shared by every breaker that uses it.

    ``update`` must apply ``step`` atomically: no other ``update`` of the same name may
    interleave between reading the record and writing the result, even from another
    process when the store is shared. ``step`` is pure and may be called more than once
    (a store may retry after a lost race). A record that cannot be read back is treated
    as absent and overwritten, with a logged warning.
    """

    def load(self, name: str) -> BreakerRecord | None:
        """The stored record of breaker ``name``, or None."""
        ...

    def update(self, name: str, step: Step) -> tuple[BreakerRecord | None, BreakerRecord]:
        """Atomically replace the record by ``step(record)``; returns (before, after)."""
        ...

    async def aload(self, name: str) -> BreakerRecord | None:
        """Async twin of `load`."""
        ...

    async def aupdate(self, name: str, step: Step) -> tuple[BreakerRecord | None, BreakerRecord]:
        """Async twin of `update`."""
        ...


class InMemoryBreakerStore:
    """Breaker state in this process only (threads share it; other processes do not).

    The default store of `CircuitBreaker`. Use `SQLBreakerStore` when several worker
    processes must see one breaker.
    """

    def __init__(self) -> None:
        self._records: dict[str, BreakerRecord] = {}
        self._lock = threading.Lock()

    def load(self, name: str) -> BreakerRecord | None:
        """The record of breaker ``name``, or None."""
        return self._records.get(name)

    def update(self, name: str, step: Step) -> tuple[BreakerRecord | None, BreakerRecord]:
        """Apply ``step`` under a lock; returns (before, after)."""
        with self._lock:
            before = self._records.get(name)
            after = step(before)
            self._records[name] = after
            return before, after

    async def aload(self, name: str) -> BreakerRecord | None:
        """Async twin of `load` (no I/O, so it does not leave the event loop)."""
        return self.load(name)

    async def aupdate(self, name: str, step: Step) -> tuple[BreakerRecord | None, BreakerRecord]:
        """Async twin of `update`."""
        return self.update(name, step)
