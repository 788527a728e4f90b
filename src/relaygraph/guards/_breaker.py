"""`CircuitBreaker`: halts an agent whose recent outputs keep failing their guard."""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from relaygraph._clock import Clock, system_clock
from relaygraph._errors import ConfigurationError
from relaygraph._sql import MAX_KEY_CHARS
from relaygraph.guards import _record as core
from relaygraph.guards._record import BreakerRecord, BreakerState, Policy
from relaygraph.guards._stores import BreakerStore, InMemoryBreakerStore

if TYPE_CHECKING:
    from relaygraph.guards._gate import BreakerGate

logger = logging.getLogger("relaygraph.guards")


@dataclass(frozen=True, slots=True)
class BreakerEvent:
    """A state change of a breaker, passed to its listeners.

    Attributes:
        breaker: the breaker's name.
        previous: the state before the change.
        current: the state after it.
        at: when it happened (epoch seconds from the breaker's clock).
        failure_rate: the failure rate over the window that caused an opening, else None.
    """

    breaker: str
    previous: BreakerState
    current: BreakerState
    at: float
    failure_rate: float | None = None


Listener = Callable[[BreakerEvent], Any]
"""Called after a transition is stored; may be sync or async. Errors are logged, not raised."""


def _fraction(name: str, value: Any, *, low_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise ConfigurationError(f"{name} must be a number in [0, 1], got {value!r}")
    ok = (0 < value <= 1) if low_open else (0 <= value <= 1)
    if not ok:
        interval = "(0, 1]" if low_open else "[0, 1]"
        raise ConfigurationError(f"{name} must be in {interval}, got {value!r}")
    return float(value)


def _positive_int(name: str, value: Any, *, minimum: int = 1, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigurationError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if maximum is not None and value > maximum:
        raise ConfigurationError(f"{name} must be <= {maximum}, got {value!r}")
    return value


class CircuitBreaker:
    """Opens when an agent's recent failure rate is too high, and blocks it until it recovers.

    Closed, it counts the outcomes the guards report (`record`) over the last ``window``
    calls; once at least ``min_calls`` are counted and the failure rate reaches
    ``failure_rate``, it opens. While open, a `BreakerGate` placed before the agent sends
    runs to the fallback without calling it. After ``cooldown`` it is half-open and lets
    ``half_open_probes`` calls through; as many successes close it, one failure reopens it.

    State lives in ``store``: `InMemoryBreakerStore` (default, one process) or
    `SQLBreakerStore` (one breaker for every worker sharing the database). Breakers with
    the same name on the same store are the same breaker.

    Args:
        name: the breaker's identity in its store (usually the protected agent's name).
        failure_rate: in (0, 1]; the window failure rate at which the breaker opens.
        window: how many recent calls the rate is computed over.
        min_calls: calls needed in the window before the breaker can open.
        cooldown: how long it stays open (a ``timedelta`` or seconds).
        half_open_probes: calls let through, and successes needed, while half-open.
        store: where the state is kept.
        clock: epoch seconds; inject one in tests to move time instead of sleeping.
        listeners: callables receiving a `BreakerEvent` after each state change this
            process makes (sync or async; exceptions are logged and swallowed).

    Example:
        >>> breaker = CircuitBreaker("resolver", failure_rate=0.5, window=20, min_calls=5,
        ...                          cooldown=timedelta(minutes=5))
        >>> breaker.state()
        'closed'
    """

    def __init__(
        self,
        name: str,
        *,
        failure_rate: float = 0.5,
        window: int = 20,
        min_calls: int = 5,
        cooldown: timedelta | float = timedelta(minutes=5),
        half_open_probes: int = 1,
        store: BreakerStore | None = None,
        clock: Clock = system_clock,
        listeners: Sequence[Listener] = (),
    ) -> None:
        if not isinstance(name, str) or not name.strip() or len(name) > MAX_KEY_CHARS:
            raise ConfigurationError(
                f"breaker name must be a non-empty string of at most {MAX_KEY_CHARS} "
                f"characters, got {name!r:.80}"
            )
        rate = _fraction("failure_rate", failure_rate, low_open=True)
        window = _positive_int("window", window, maximum=10_000)
        min_calls = _positive_int("min_calls", min_calls)
        if min_calls > window:
            raise ConfigurationError(
                f"min_calls must be <= window ({window}), got {min_calls}: the breaker "
                "could never open"
            )
        if isinstance(cooldown, timedelta):
            seconds = cooldown.total_seconds()
        elif isinstance(cooldown, int | float) and not isinstance(cooldown, bool):
            seconds = float(cooldown)
        else:
            raise ConfigurationError(
                f"cooldown must be a timedelta or a number of seconds, got {cooldown!r}"
            )
        if not math.isfinite(seconds) or seconds < 0:
            raise ConfigurationError(f"cooldown must be >= 0 seconds, got {cooldown!r}")
        probes = _positive_int("half_open_probes", half_open_probes)
        if store is None:
            store = InMemoryBreakerStore()
        missing = [m for m in ("load", "update", "aload", "aupdate") if not hasattr(store, m)]
        if missing:
            raise ConfigurationError(
                f"store must implement BreakerStore ({', '.join(missing)} missing on "
                f"{type(store).__name__}); use InMemoryBreakerStore() or SQLBreakerStore(engine)"
            )
        if not callable(clock):
            raise ConfigurationError(f"clock must be a callable returning seconds, got {clock!r}")
        if isinstance(listeners, str) or not isinstance(listeners, Sequence):
            raise ConfigurationError(
                f"listeners must be a list of callables, got {listeners!r:.60}; "
                "pass one listener as [listener]")
        for fn in listeners:
            if not callable(fn):
                raise ConfigurationError(f"listeners must be callables, got {fn!r}")
        self.name = name
        self.store = store
        self.clock = clock
        self.policy = Policy(rate, window, min_calls, seconds, probes)
        self._listeners: list[Listener] = list(listeners)

    # -- configuration -------------------------------------------------------------------
    @property
    def failure_rate(self) -> float:
        """The configured opening failure rate."""
        return self.policy.failure_rate

    @property
    def cooldown(self) -> timedelta:
        """How long the breaker stays open."""
        return timedelta(seconds=self.policy.cooldown)

    def add_listener(self, listener: Listener) -> None:
        """Register a callable called with a `BreakerEvent` after each state change."""
        if not callable(listener):
            raise ConfigurationError(f"listener must be callable, got {listener!r}")
        self._listeners.append(listener)

    def gate(self, *, on_allow: str, on_block: str, name: str | None = None) -> BreakerGate:
        """A node to place before the protected agent; see `BreakerGate`."""
        from relaygraph.guards._gate import BreakerGate

        return BreakerGate(self, on_allow=on_allow, on_block=on_block, name=name)

    # -- reads ---------------------------------------------------------------------------
    def snapshot(self) -> BreakerRecord | None:
        """The stored record (None before the first call)."""
        return self.store.load(self.name)

    async def asnapshot(self) -> BreakerRecord | None:
        """Async twin of `snapshot`."""
        return await self.store.aload(self.name)

    def state(self) -> BreakerState:
        """``closed``, ``open`` or ``half_open`` (an open breaker past its cooldown)."""
        return core.effective_state(self.snapshot(), self.policy, self.clock())

    async def astate(self) -> BreakerState:
        """Async twin of `state`."""
        return core.effective_state(await self.asnapshot(), self.policy, self.clock())

    def state_of(self, record: BreakerRecord | None) -> BreakerState:
        """The state a record represents now (applies the cooldown)."""
        return core.effective_state(record, self.policy, self.clock())

    # -- transitions ---------------------------------------------------------------------
    def allow(self) -> bool:
        """Whether the protected agent may run now (admits a half-open probe if so)."""
        return self.admit()[0]

    async def aallow(self) -> bool:
        """Async twin of `allow`."""
        return (await self.aadmit())[0]

    def admit(self) -> tuple[bool, BreakerRecord | None]:
        """Like `allow`, also returning the record the decision was made on."""
        now = self.clock()
        current = self.store.load(self.name)
        if current is None or current.state == "closed":
            return True, current  # the common case needs no write and no lock
        if current.state == "open" and not core.cooled(current, self.policy, now):
            return False, current
        box: list[bool] = []
        before, after = self.store.update(self.name, self._admit_step(now, box))
        self._notify(before, after, now)
        return box[-1], after

    async def aadmit(self) -> tuple[bool, BreakerRecord | None]:
        """Async twin of `admit`."""
        now = self.clock()
        current = await self.store.aload(self.name)
        if current is None or current.state == "closed":
            return True, current
        if current.state == "open" and not core.cooled(current, self.policy, now):
            return False, current
        box: list[bool] = []
        before, after = await self.store.aupdate(self.name, self._admit_step(now, box))
        await self._anotify(before, after, now)
        return box[-1], after

    def record(self, success: bool) -> BreakerState:
        """Report one outcome of the protected agent; returns the state afterwards."""
        now = self.clock()
        before, after = self.store.update(
            self.name, lambda rec: core.report(rec, self.policy, now, bool(success))
        )
        self._notify(before, after, now, core.SUCCESS if success else core.FAILURE)
        return core.effective_state(after, self.policy, now)

    async def arecord(self, success: bool) -> BreakerState:
        """Async twin of `record`."""
        now = self.clock()
        before, after = await self.store.aupdate(
            self.name, lambda rec: core.report(rec, self.policy, now, bool(success))
        )
        await self._anotify(before, after, now, core.SUCCESS if success else core.FAILURE)
        return core.effective_state(after, self.policy, now)

    def trip(self) -> None:
        """Open the breaker now (e.g. from an operator action)."""
        now = self.clock()
        self._notify(*self.store.update(self.name, lambda _r: core.force("open", now)), now)

    async def atrip(self) -> None:
        """Async twin of `trip`."""
        now = self.clock()
        before, after = await self.store.aupdate(self.name, lambda _r: core.force("open", now))
        await self._anotify(before, after, now)

    def reset(self) -> None:
        """Close the breaker and forget its window."""
        now = self.clock()
        self._notify(*self.store.update(self.name, lambda _r: core.force("closed", now)), now)

    async def areset(self) -> None:
        """Async twin of `reset`."""
        now = self.clock()
        before, after = await self.store.aupdate(self.name, lambda _r: core.force("closed", now))
        await self._anotify(before, after, now)

    # -- internals -----------------------------------------------------------------------
    def _admit_step(self, now: float, box: list[bool]) -> Any:
        def step(rec: BreakerRecord | None) -> BreakerRecord:
            new, allowed = core.admit(rec, self.policy, now)
            box.append(allowed)
            return new

        return step

    def _event(
        self,
        before: BreakerRecord | None,
        after: BreakerRecord,
        now: float,
        tipped: str | None = None,
    ) -> BreakerEvent | None:
        previous = before.state if before is not None else "closed"
        if previous == after.state:
            return None
        rate = None
        if tipped is not None and after.state == "open" and previous == "closed":
            # the outcome that tipped the window is not in `before` and `after` is cleared
            outcomes = ((before.outcomes if before else "") + tipped)[-self.policy.window :]
            rate = outcomes.count(core.FAILURE) / len(outcomes)
        logger.info("breaker %r: %s -> %s", self.name, previous, after.state)
        return BreakerEvent(self.name, previous, after.state, now, rate)

    def _call_listeners(self, event: BreakerEvent) -> list[tuple[Any, Any]]:
        """Call every listener; return the awaitables the async ones gave back."""
        pending = []
        for fn in self._listeners:
            try:
                result = fn(event)
            except Exception:
                logger.exception("breaker %r: listener %r failed", self.name, fn)
                continue
            if inspect.isawaitable(result):
                pending.append((fn, result))
        return pending

    def _notify(
        self,
        before: BreakerRecord | None,
        after: BreakerRecord,
        now: float,
        tipped: str | None = None,
    ) -> None:
        event = self._event(before, after, now, tipped)
        if event is None:
            return
        for fn, result in self._call_listeners(event):
            _drop(result)
            logger.warning(
                "breaker %r: async listener %r skipped in a sync call; "
                "run the graph with ainvoke to await it",
                self.name,
                fn,
            )

    async def _anotify(
        self,
        before: BreakerRecord | None,
        after: BreakerRecord,
        now: float,
        tipped: str | None = None,
    ) -> None:
        event = self._event(before, after, now, tipped)
        if event is None:
            return
        for fn, result in self._call_listeners(event):
            try:
                await result
            except Exception:
                logger.exception("breaker %r: listener %r failed", self.name, fn)

    def __repr__(self) -> str:
        p = self.policy
        return (
            f"CircuitBreaker({self.name!r}, failure_rate={p.failure_rate}, window={p.window}, "
            f"min_calls={p.min_calls}, cooldown={p.cooldown}s, store={self.store!r})"
        )


def _drop(awaitable: Any) -> None:
    close = getattr(awaitable, "close", None)
    if close is not None:
        close()
