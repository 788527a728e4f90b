"""What every route needs: the graphs, the saver, leases, auth and limits.

`create_app` builds one `ServerContext` and keeps it on ``app.state.relaygraph``; routes
take it with ``ctx: ServerContext = Depends(get_context)``.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastapi import Request

from relaygraph._errors import ConfigurationError

if TYPE_CHECKING:
    from relaygraph.serve._auth import Authenticator
    from relaygraph.serve._index import ThreadIndex


@dataclass(frozen=True)
class ServerSettings:
    """Limits and policies of one server.

    Attributes:
        max_body_bytes: larger request bodies get 413.
        run_timeout: seconds a run may take; it then stops at the next step boundary and
            the thread keeps its last checkpoint (``None``: no limit).
        enqueue_wait: the longest a run with multitask strategy ``enqueue`` waits for a
            busy thread.
        lease_ttl: seconds a thread lease lives without renewal (a crashed holder's thread
            frees up after this).
        page_size: default listing page size; ``max_page_size`` caps what clients ask.
        retention: seconds a thread of each graph is kept after its last update (absent:
            forever); the sweeper deletes older threads.
        retention_strategy: ``delete`` removes expired threads, ``prune`` keeps only their
            latest checkpoint.
        sweep_interval: seconds between sweeps.
        drain_timeout: on shutdown, how long running runs get to reach a step boundary.
    """

    max_body_bytes: int = 1_000_000
    run_timeout: float | None = 300.0
    enqueue_wait: float = 30.0
    lease_ttl: float = 30.0
    page_size: int = 50
    max_page_size: int = 500
    retention: dict[str, float] = field(default_factory=dict)
    retention_strategy: str = "delete"
    sweep_interval: float = 300.0
    drain_timeout: float = 30.0

    def __post_init__(self) -> None:
        if self.max_body_bytes < 1024:
            raise ConfigurationError(
                f"max_body_bytes must be at least 1024, got {self.max_body_bytes}")
        if self.run_timeout is not None and self.run_timeout <= 0:
            raise ConfigurationError(f"run_timeout must be > 0 or None, got {self.run_timeout}")
        if not 1 <= self.page_size <= self.max_page_size:
            raise ConfigurationError(
                f"page_size must be in [1, max_page_size={self.max_page_size}], "
                f"got {self.page_size}")
        if self.retention_strategy not in ("delete", "prune"):
            raise ConfigurationError(
                f"retention_strategy must be 'delete' or 'prune', got "
                f"{self.retention_strategy!r}")
        for name, ttl in self.retention.items():
            if ttl <= 0:
                raise ConfigurationError(f"retention for graph {name!r} must be > 0 seconds, "
                                         f"got {ttl}")


@dataclass
class ServerContext:
    """Everything a route needs, built once by `create_app`.

    Attributes:
        graphs: served graphs by name, compiled on ``checkpointer``.
        checkpointer: the async-capable saver all graphs share.
        leases: one writer per thread (`relaygraph.durable.LeaseStore`, or an in-process
            store for savers without a database).
        auth: maps requests to principals.
        settings: limits and policies.
        threads: the thread index behind listings (tenant, status, pending reviews).
        draining: set on shutdown; new runs get 503.
        active_runs: runs in progress in this process (for the drain).
        controls: each running thread's LangGraph ``RunControl`` (asked to drain on
            shutdown).
        holder: this process's name on the leases it takes.
    """

    graphs: dict[str, Any]
    checkpointer: Any
    leases: Any
    auth: Authenticator
    settings: ServerSettings
    threads: ThreadIndex
    draining: bool = False
    active_runs: set[asyncio.Task[Any]] = field(default_factory=set)
    controls: dict[str, Any] = field(default_factory=dict)
    holder: str = ""

    def graph(self, name: str) -> Any:
        """The graph served under ``name``.

        Raises:
            NotFound: not served here (routes answer 404).
        """
        from relaygraph.serve._errors import NotFound

        try:
            return self.graphs[name]
        except KeyError:
            raise NotFound(
                f"graph {name!r} is not served here; served: {', '.join(sorted(self.graphs))}"
            ) from None


def get_context(request: Request) -> ServerContext:
    """FastAPI dependency: the app's `ServerContext`."""
    return request.app.state.relaygraph  # type: ignore[no-any-return]


# ----------------------------------------------------------------------- in-process leases


@dataclass(frozen=True)
class LocalLease:
    """A lease held in this process (same fields as `relaygraph.durable.Lease`)."""

    thread_id: str
    holder: str
    token: int
    expires_at: float


class LocalLeaseStore:
    """One writer per thread within one process, for savers without a database.

    Same async methods as `relaygraph.durable.LeaseStore`; a second process on the same
    saver is not coordinated (an ``InMemorySaver`` cannot be shared anyway).
    """

    def __init__(self, *, ttl: float = 30.0, clock: Callable[[], float] = time.time) -> None:
        self.ttl = ttl
        self.clock = clock
        self._held: dict[str, LocalLease] = {}
        self._cancel: set[str] = set()
        self._tokens = itertools.count(1)
        self._changed = asyncio.Event()

    async def asetup(self) -> None:
        return None

    async def aacquire(self, thread_id: str, *, holder: str | None = None,
                       wait: float = 0.0) -> LocalLease:
        from relaygraph.serve._errors import busy_error

        deadline = self.clock() + wait
        while True:
            cur = await self.acurrent(thread_id)
            if cur is None:
                lease = LocalLease(thread_id, holder or "local", next(self._tokens),
                                   self.clock() + self.ttl)
                self._held[thread_id] = lease
                self._cancel.discard(thread_id)
                return lease
            remaining = deadline - self.clock()
            if remaining <= 0:
                raise busy_error(thread_id, cur.holder, cur.expires_at)
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), timeout=min(remaining, 0.5))
            except TimeoutError:
                pass

    async def arenew(self, lease: LocalLease) -> LocalLease:
        new = LocalLease(lease.thread_id, lease.holder, lease.token, self.clock() + self.ttl)
        self._held[lease.thread_id] = new
        return new

    async def arelease(self, lease: LocalLease) -> None:
        cur = self._held.get(lease.thread_id)
        if cur is not None and cur.token == lease.token:
            del self._held[lease.thread_id]
            self._changed.set()

    async def acurrent(self, thread_id: str) -> LocalLease | None:
        cur = self._held.get(thread_id)
        if cur is not None and cur.expires_at <= self.clock():
            del self._held[thread_id]
            return None
        return cur

    async def arequest_cancel(self, thread_id: str) -> bool:
        if thread_id in self._held:
            self._cancel.add(thread_id)
            return True
        return False

    def cancel_requested(self, thread_id: str) -> bool:
        return thread_id in self._cancel
