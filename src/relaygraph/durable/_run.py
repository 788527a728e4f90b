"""Run any compiled graph under a thread lease, and drain runs on SIGTERM.

:func:`leased` wraps a compiled graph. Each ``invoke`` / ``ainvoke`` / ``stream`` /
``astream`` on a thread first acquires the thread's lease (or raises
:class:`ThreadBusyError`, or waits, bounded, with ``strategy="enqueue"``), then runs the
graph with:

- the lease as the checkpoint write fence (``config["configurable"]["__relaygraph_fence"]``),
  so a run whose lease was taken over cannot write a checkpoint;
- a heartbeat (a thread for the sync calls, a task for the async ones) that renews the
  lease while the run is alive and learns of cancel requests from other processes;
- LangGraph's own step-boundary stop (``RunControl.request_drain``): when a cancel was
  requested, the lease was lost, or the process got SIGTERM (see :func:`drain_on_sigterm`),
  the run finishes its current step, checkpoints it and stops before the next one.

The lease is released when the run ends, however it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any, Literal

from langchain_core.runnables import RunnableConfig
from langgraph.errors import GraphDrained
from langgraph.runtime import RunControl

from relaygraph._errors import ConfigurationError
from relaygraph.checkpointers._fence import FENCE_KEY
from relaygraph.durable._errors import LeaseLostError, RunCancelledError
from relaygraph.durable._lease import Lease, LeaseStore, default_holder

__all__ = ["Drain", "LeasedGraph", "drain_on_sigterm", "leased"]

logger = logging.getLogger("relaygraph.durable")

Strategy = Literal["reject", "enqueue"]
_LOST = "lease lost"
_CANCELLED = "cancel requested"
_SHUTDOWN = "shutdown"


# -- process-wide drain (SIGTERM) ------------------------------------------------------

class Drain:
    """The process's drain switch: once requested, every leased run stops at its next
    step boundary and new leased runs refuse to start (``GraphDrained``)."""

    def __init__(self) -> None:
        self._reason: str | None = None
        self._controls: set[RunControl] = set()
        self._lock = threading.Lock()

    @property
    def requested(self) -> bool:
        """Whether a drain was requested (the worker should take no new work)."""
        return self._reason is not None

    def request(self, reason: str = _SHUTDOWN) -> None:
        """Drain every run in progress. Safe from a signal handler and from any thread."""
        self._reason = reason
        # no lock: a signal handler may interrupt a thread holding it. A run registered
        # right now sees ``requested`` when it checks before starting.
        for control in list(self._controls):
            control.request_drain(reason)

    def reset(self) -> None:
        """Forget a request (tests, or a worker that keeps serving after a pause)."""
        self._reason = None

    def _add(self, control: RunControl) -> None:
        with self._lock:
            self._controls.add(control)
        if self._reason is not None:
            control.request_drain(self._reason)

    def _discard(self, control: RunControl) -> None:
        with self._lock:
            self._controls.discard(control)


drain = Drain()
"""The process's drain switch, shared by every :class:`LeasedGraph`."""


@contextlib.contextmanager
def drain_on_sigterm(signals: Sequence[signal.Signals] = (signal.SIGTERM,)) -> Iterator[Drain]:
    """On SIGTERM, drain: each leased run finishes its current step, checkpoints it,
    releases its lease and raises ``GraphDrained``; then the worker exits.

    Install it in the main thread of a worker process::

        with drain_on_sigterm() as d:
            while not d.requested:
                job = next_job()
                try:
                    graph.invoke(job.input, job.config)   # graph = leased(...)
                except GraphDrained:
                    break        # the thread resumes on another worker from its checkpoint

    The previous handlers are restored on exit.
    """
    previous = {}
    for sig in signals:
        previous[sig] = signal.signal(sig, lambda signum, frame: drain.request(_SHUTDOWN))
    try:
        yield drain
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# -- one leased run ----------------------------------------------------------------------

class _RunFence:
    """The checkpoint write fence of one run: the lease's, noting a refusal on the run."""

    __slots__ = ("lease", "run")

    def __init__(self, lease: Lease, run: _Run) -> None:
        self.lease = lease
        self.run = run

    def fence_statement(self) -> tuple[Any, dict[str, Any]]:
        return self.lease.fence_statement()

    def fence_check(self, rows: Sequence[Any]) -> None:
        try:
            self.lease.fence_check(rows)
        except LeaseLostError:
            self.run.stop(_LOST)
            raise


class _Run:
    """State shared by a run, its heartbeat and its fence; the sync and async shells
    only drive it."""

    def __init__(self, store: LeaseStore, lease: Lease, control: RunControl | None) -> None:
        self.store = store
        self.lease = lease
        self.control = control or RunControl()
        self.reason: str | None = None  # why the run was asked to stop, if it was
        self.fence = _RunFence(lease, self)
        self.unwatch = store._watch(lease.thread_id, lambda: self.stop(_CANCELLED))
        drain._add(self.control)

    def stop(self, reason: str) -> None:
        if self.reason is None or reason == _LOST:
            self.reason = reason
        self.control.request_drain(reason)

    def config(self, config: RunnableConfig) -> RunnableConfig:
        return {**config, "configurable": {**(config.get("configurable") or {}),
                                           FENCE_KEY: self.fence}}

    def renewed(self, lease: Lease) -> None:
        self.lease = self.fence.lease = lease
        if lease.cancel_requested:
            self.stop(_CANCELLED)

    def renew_failed(self, exc: BaseException) -> None:
        if isinstance(exc, LeaseLostError):
            self.stop(_LOST)
        else:  # the database is unreachable: keep trying; fencing guards the writes
            logger.warning("could not renew the lease on thread %r: %s",
                           self.lease.thread_id, exc)

    def outcome(self, exc: BaseException) -> BaseException:
        """What a run that raised ``exc`` raises to the caller."""
        thread_id, token = self.lease.thread_id, self.lease.token
        # a refused write may come back wrapped (the savers stop a run whose save failed
        # with CheckpointSaveError, caused by the fence's LeaseLostError)
        cause: BaseException | None = exc
        while cause is not None and not isinstance(cause, LeaseLostError):
            cause = cause.__cause__
        if cause is not None:
            return exc if cause is exc else LeaseLostError(
                thread_id, token, "a checkpoint write was refused")
        if self.reason == _LOST and isinstance(exc, GraphDrained):
            return LeaseLostError(thread_id, token, "the run stopped at the next step boundary")
        if isinstance(exc, GraphDrained) and self.reason == _CANCELLED:
            return RunCancelledError(thread_id)
        return exc

    def close(self) -> None:
        self.unwatch()
        drain._discard(self.control)


def _thread_id(config: RunnableConfig | None) -> str:
    conf = (config or {}).get("configurable") or {}
    thread_id = conf.get("thread_id")
    if thread_id is None or thread_id == "":
        raise ConfigurationError(
            "a leased run needs config['configurable']['thread_id'], e.g. "
            "{'configurable': {'thread_id': 'my-thread'}}")
    return str(thread_id)


class LeasedGraph:
    """A compiled graph whose runs hold their thread's lease (see :func:`leased`).

    ``invoke``, ``ainvoke``, ``stream`` and ``astream`` take the compiled graph's
    arguments; resume a paused thread with ``invoke(Command(resume=...), config)``.
    ``update_state`` / ``aupdate_state`` also write under the lease. Anything else
    (``get_state``, ``get_state_history``, ...) is the graph's own.
    """

    def __init__(self, graph: Any, store: LeaseStore, *, strategy: Strategy = "reject",
                 wait: float = 30.0, holder: str | None = None,
                 heartbeat: float | None = None) -> None:
        if strategy not in ("reject", "enqueue"):
            raise ConfigurationError(
                f"strategy must be 'reject' or 'enqueue', got {strategy!r}")
        if not wait >= 0:
            raise ConfigurationError(f"wait must be >= 0 seconds, got {wait!r}")
        interval = store.ttl / 3 if heartbeat is None else heartbeat
        if not 0 < interval < store.ttl:
            raise ConfigurationError(
                f"heartbeat must be between 0 and the lease TTL ({store.ttl} s), "
                f"got {heartbeat!r}")
        if getattr(graph, "checkpointer", None) is None:
            raise ConfigurationError(
                "leased() needs a graph compiled with a checkpointer "
                "(builder.compile(checkpointer=saver)): the lease fences its writes")
        self.graph = graph
        self.store = store
        self.strategy = strategy
        self.wait = float(wait)
        self.holder = holder
        self.heartbeat = float(interval)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.graph, name)

    def _holder(self) -> str:
        return self.holder or default_holder()

    def _wait(self) -> float:
        return self.wait if self.strategy == "enqueue" else 0.0

    # -- sync ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _run(self, config: RunnableConfig | None, kw: dict[str, Any]) -> Iterator[_Run]:
        thread_id = _thread_id(config)
        if drain.requested:
            raise GraphDrained(drain._reason or _SHUTDOWN)
        lease = self.store.acquire(thread_id, holder=self._holder(), wait=self._wait())
        run = _Run(self.store, lease, kw.pop("control", None))
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(self.heartbeat):
                try:
                    run.renewed(self.store.renew(run.lease))
                except Exception as exc:  # noqa: BLE001 - judged by renew_failed
                    run.renew_failed(exc)
                    if run.reason == _LOST:
                        return

        heart = threading.Thread(target=beat, name=f"lease-heartbeat-{thread_id}",
                                 daemon=True)
        heart.start()
        try:
            yield run
        except BaseException as exc:
            out = run.outcome(exc)
            if out is exc:
                raise
            raise out from exc
        finally:
            stop.set()
            heart.join()
            run.close()
            try:
                self.store.release(run.lease)
            except Exception as exc:  # noqa: BLE001 - the run's own outcome comes first
                logger.warning("could not release the lease on thread %r: %s",
                               thread_id, exc)

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kw: Any) -> Any:
        """``graph.invoke`` under the thread's lease."""
        with self._run(config, kw) as run:
            return self.graph.invoke(input, run.config(config or {}),
                                     control=run.control, **kw)

    def stream(self, input: Any, config: RunnableConfig | None = None,
               **kw: Any) -> Iterator[Any]:
        """``graph.stream`` under the thread's lease, held while the stream is consumed."""
        with self._run(config, kw) as run:
            yield from self.graph.stream(input, run.config(config or {}),
                                         control=run.control, **kw)

    def update_state(self, config: RunnableConfig, values: Any, as_node: str | None = None,
                     **kw: Any) -> RunnableConfig:
        """``graph.update_state`` under the thread's lease: a fenced write too."""
        with self._run(config, {}) as run:
            return self.graph.update_state(  # type: ignore[no-any-return]
                run.config(config), values, as_node, **kw)

    # -- async ---------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _arun(self, config: RunnableConfig | None,
                    kw: dict[str, Any]) -> AsyncIterator[_Run]:
        thread_id = _thread_id(config)
        if drain.requested:
            raise GraphDrained(drain._reason or _SHUTDOWN)
        lease = await self.store.aacquire(thread_id, holder=self._holder(),
                                          wait=self._wait())
        run = _Run(self.store, lease, kw.pop("control", None))

        async def beat() -> None:
            while True:
                await asyncio.sleep(self.heartbeat)
                try:
                    run.renewed(await self.store.arenew(run.lease))
                except Exception as exc:  # noqa: BLE001 - judged by renew_failed
                    run.renew_failed(exc)
                    if run.reason == _LOST:
                        return

        heart = asyncio.create_task(beat(), name=f"lease-heartbeat-{thread_id}")
        try:
            yield run
        except BaseException as exc:
            out = run.outcome(exc)
            if out is exc:
                raise
            raise out from exc
        finally:
            heart.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heart
            run.close()
            try:
                await self.store.arelease(run.lease)
            except Exception as exc:  # noqa: BLE001 - the run's own outcome comes first
                logger.warning("could not release the lease on thread %r: %s",
                               thread_id, exc)

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None,
                      **kw: Any) -> Any:
        """``graph.ainvoke`` under the thread's lease."""
        async with self._arun(config, kw) as run:
            return await self.graph.ainvoke(input, run.config(config or {}),
                                            control=run.control, **kw)

    async def aupdate_state(self, config: RunnableConfig, values: Any,
                            as_node: str | None = None, **kw: Any) -> RunnableConfig:
        """Async twin of :meth:`update_state`."""
        async with self._arun(config, {}) as run:
            return await self.graph.aupdate_state(  # type: ignore[no-any-return]
                run.config(config), values, as_node, **kw)

    async def astream(self, input: Any, config: RunnableConfig | None = None,
                      **kw: Any) -> AsyncIterator[Any]:
        """``graph.astream`` under the thread's lease, held while the stream is consumed."""
        async with self._arun(config, kw) as run:
            async for item in self.graph.astream(input, run.config(config or {}),
                                                 control=run.control, **kw):
                yield item


def leased(graph: Any, store: LeaseStore, *, strategy: Strategy = "reject",
           wait: float = 30.0, holder: str | None = None,
           heartbeat: float | None = None) -> LeasedGraph:
    """Run ``graph`` so that one run at a time writes each thread.

    Args:
        graph: a graph compiled with a relaygraph saver on the same database as ``store``.
        store: the leases.
        strategy: a run on a thread another holder is running: ``"reject"`` raises
            :class:`ThreadBusyError` at once; ``"enqueue"`` waits for the lease, up to
            ``wait`` seconds (polling with jittered backoff), then raises it.
        wait: the longest an ``"enqueue"`` run waits.
        holder: the name leases are held under (default: host, pid and a random suffix,
            one per run).
        heartbeat: seconds between lease renewals while a run is alive (default a third
            of the store's TTL). A cancel requested from another process is noticed at
            the next renewal; one from this process at once.

    Raises (from the run methods):
        ThreadBusyError: the thread is held by another run.
        RunCancelledError: ``store.request_cancel(thread_id)`` was called; the run stopped
            at a step boundary with that step checkpointed.
        LeaseLostError: the lease was taken over (the run stalled past its TTL); the run
            wrote nothing after the takeover and stopped.
        GraphDrained: the process is draining (:func:`drain_on_sigterm`).

    Example:
        >>> runner = leased(builder.compile(checkpointer=saver),
        ...                 LeaseStore.from_saver(saver))                # doctest: +SKIP
        >>> runner.invoke({"messages": [...]}, {"configurable": {"thread_id": "t1"}})
    """
    return LeasedGraph(graph, store, strategy=strategy, wait=wait, holder=holder,
                       heartbeat=heartbeat)
