"""``AutonomyPolicy``: human review relaxed from measured agreement, restored on trouble.

Per (agent, decision kind) the policy keeps how many reviews it has seen, how many were
plain approvals and how many approvals came in a row. At first every decision is reviewed.
Once ``min_approvals`` consecutive approvals are in *and* the Wilson lower bound of the
approval rate is at least ``target``, reviews are sampled at a rate that halves (``decay``)
with each further approval, down to ``floor``. One rejection, one edit or one circuit
breaker trip sets the consecutive count back to zero: full review again.

Each decision is stored under a key (by default the thread and task of the review node),
so a node that LangGraph re-executes on resume gets the same answer, and an outcome is
counted once per key even when a worker crashes and the node runs again.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal, Protocol, runtime_checkable

import sqlalchemy as sa

from relaygraph._clock import Clock, system_clock
from relaygraph._errors import ConfigurationError, RelaygraphError
from relaygraph._sql import KeyStr, LargeText, create_tables, metadata, upsert

Outcome = Literal["approve", "edit", "reject"]
OUTCOMES: tuple[str, ...] = ("approve", "edit", "reject")


@dataclass(frozen=True)
class AutonomyStats:
    """The evidence for one (agent, decision kind)."""

    agent: str
    kind: str
    reviews: int = 0
    approvals: int = 0
    consecutive: int = 0
    reset_reason: str | None = None
    updated_at: float | None = None


@dataclass(frozen=True)
class PolicyDecision:
    """Whether one decision goes to a human, and why."""

    review: bool
    reason: str
    rate: float
    lower_bound: float
    agent: str
    kind: str
    key: str | None = None
    at: float | None = None


def wilson_lower_bound(successes: int, trials: int, confidence: float = 0.95) -> float:
    """Lower bound of the Wilson score interval for a proportion (0 when ``trials == 0``)."""
    if trials <= 0:
        return 0.0
    z = _z(confidence)
    p = successes / trials
    denom = 1 + z * z / trials
    centre = p + z * z / (2 * trials)
    spread = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials))
    return max(0.0, (centre - spread) / denom)


def _z(confidence: float) -> float:
    from statistics import NormalDist

    return NormalDist().inv_cdf(1 - (1 - confidence) / 2)


# --------------------------------------------------------------------------- stores


@runtime_checkable
class AutonomyStore(Protocol):
    """Where the policy keeps its evidence and decisions (in memory or SQL)."""

    def stats(self, agent: str, kind: str) -> AutonomyStats: ...

    def get_decision(self, key: str) -> PolicyDecision | None: ...

    def put_decision(self, decision: PolicyDecision) -> PolicyDecision: ...

    def record_outcome(self, key: str, agent: str, kind: str, outcome: str, at: float) -> bool: ...

    def reset(self, agent: str, kind: str | None, reason: str, at: float) -> None: ...

    async def astats(self, agent: str, kind: str) -> AutonomyStats: ...

    async def aget_decision(self, key: str) -> PolicyDecision | None: ...

    async def aput_decision(self, decision: PolicyDecision) -> PolicyDecision: ...

    async def arecord_outcome(self, key: str, agent: str, kind: str, outcome: str,
                              at: float) -> bool: ...

    async def areset(self, agent: str, kind: str | None, reason: str, at: float) -> None: ...


class InMemoryAutonomyStore:
    """Process-local store (tests, single-process apps). Thread-safe."""

    def __init__(self) -> None:
        self._stats: dict[tuple[str, str], AutonomyStats] = {}
        self._decisions: dict[str, PolicyDecision] = {}
        self._outcomes: dict[str, str] = {}
        self._lock = threading.Lock()

    def setup(self) -> None:
        """Nothing to create; present for symmetry with the SQL store."""

    async def asetup(self) -> None:
        """Nothing to create."""

    def stats(self, agent: str, kind: str) -> AutonomyStats:
        """Evidence for (agent, kind)."""
        with self._lock:
            return self._stats.get((agent, kind), AutonomyStats(agent, kind))

    def get_decision(self, key: str) -> PolicyDecision | None:
        """The decision stored under ``key``, if any."""
        with self._lock:
            return self._decisions.get(key)

    def put_decision(self, decision: PolicyDecision) -> PolicyDecision:
        """Store a decision; the first one stored under a key wins and is returned."""
        assert decision.key is not None
        with self._lock:
            return self._decisions.setdefault(decision.key, decision)

    def record_outcome(self, key: str, agent: str, kind: str, outcome: str, at: float) -> bool:
        """Count a review outcome once per key; False when the key was already counted."""
        with self._lock:
            if key in self._outcomes:
                return False
            self._outcomes[key] = outcome
            cur = self._stats.get((agent, kind), AutonomyStats(agent, kind))
            ok = outcome == "approve"
            self._stats[(agent, kind)] = replace(
                cur, reviews=cur.reviews + 1, approvals=cur.approvals + int(ok),
                consecutive=cur.consecutive + 1 if ok else 0,
                reset_reason=cur.reset_reason if ok else outcome, updated_at=at)
            return True

    def reset(self, agent: str, kind: str | None, reason: str, at: float) -> None:
        """Set the consecutive approvals of ``agent`` (one kind, or all) back to zero."""
        with self._lock:
            targets = [k for k in self._stats if k[0] == agent and (kind is None or k[1] == kind)]
            if kind is not None and (agent, kind) not in self._stats:
                targets.append((agent, kind))
            for k in targets:
                cur = self._stats.get(k, AutonomyStats(*k))
                self._stats[k] = replace(cur, consecutive=0, reset_reason=reason, updated_at=at)

    async def astats(self, agent: str, kind: str) -> AutonomyStats:
        """Async twin of :meth:`stats`."""
        return self.stats(agent, kind)

    async def aget_decision(self, key: str) -> PolicyDecision | None:
        """Async twin of :meth:`get_decision`."""
        return self.get_decision(key)

    async def aput_decision(self, decision: PolicyDecision) -> PolicyDecision:
        """Async twin of :meth:`put_decision`."""
        return self.put_decision(decision)

    async def arecord_outcome(self, key: str, agent: str, kind: str, outcome: str,
                              at: float) -> bool:
        """Async twin of :meth:`record_outcome`."""
        return self.record_outcome(key, agent, kind, outcome, at)

    async def areset(self, agent: str, kind: str | None, reason: str, at: float) -> None:
        """Async twin of :meth:`reset`."""
        self.reset(agent, kind, reason, at)


stats_table = sa.Table(
    "relaygraph_autonomy_stats", metadata,
    sa.Column("agent", KeyStr, primary_key=True),
    sa.Column("kind", KeyStr, primary_key=True),
    sa.Column("reviews", sa.Integer, nullable=False, default=0),
    sa.Column("approvals", sa.Integer, nullable=False, default=0),
    sa.Column("consecutive", sa.Integer, nullable=False, default=0),
    sa.Column("reset_reason", sa.String(255), nullable=True),
    sa.Column("updated_at", sa.Double, nullable=True),
)

decisions_table = sa.Table(
    "relaygraph_autonomy_decisions", metadata,
    sa.Column("key", sa.String(64), primary_key=True),  # sha256 of the caller's key
    sa.Column("agent", KeyStr, nullable=False),
    sa.Column("kind", KeyStr, nullable=False),
    sa.Column("review", sa.Boolean, nullable=False),
    sa.Column("reason", LargeText, nullable=False),
    sa.Column("rate", sa.Double, nullable=False),
    sa.Column("lower_bound", sa.Double, nullable=False),
    sa.Column("at", sa.Double, nullable=True),
    sa.Column("outcome", sa.String(16), nullable=True),
    sa.Column("outcome_at", sa.Double, nullable=True),
)

_TABLES = [stats_table, decisions_table]


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


# One core of statements over a Connection; the sync and async shells only execute.

def _sql_stats(conn: sa.Connection, agent: str, kind: str) -> AutonomyStats:
    row = conn.execute(sa.select(stats_table).where(
        stats_table.c.agent == agent, stats_table.c.kind == kind)).mappings().first()
    if row is None:
        return AutonomyStats(agent, kind)
    return AutonomyStats(agent, kind, int(row["reviews"]), int(row["approvals"]),
                         int(row["consecutive"]), row["reset_reason"], row["updated_at"])


def _row_to_decision(key: str, row: Any) -> PolicyDecision:
    return PolicyDecision(review=bool(row["review"]), reason=row["reason"],
                          rate=float(row["rate"]), lower_bound=float(row["lower_bound"]),
                          agent=row["agent"], kind=row["kind"], key=key, at=row["at"])


def _sql_get_decision(conn: sa.Connection, key: str) -> PolicyDecision | None:
    row = conn.execute(sa.select(decisions_table).where(
        decisions_table.c.key == _hash(key))).mappings().first()
    return None if row is None else _row_to_decision(key, row)


def _sql_put_decision(conn: sa.Connection, d: PolicyDecision) -> PolicyDecision:
    assert d.key is not None
    conn.execute(upsert(conn.dialect, decisions_table, {
        "key": _hash(d.key), "agent": d.agent, "kind": d.kind, "review": d.review,
        "reason": d.reason, "rate": d.rate, "lower_bound": d.lower_bound, "at": d.at,
    }, keys=["key"]))
    stored = _sql_get_decision(conn, d.key)
    return stored or d


def _ensure_stats_row(conn: sa.Connection, agent: str, kind: str, at: float) -> None:
    conn.execute(upsert(conn.dialect, stats_table, {
        "agent": agent, "kind": kind, "reviews": 0, "approvals": 0, "consecutive": 0,
        "reset_reason": None, "updated_at": at}, keys=["agent", "kind"]))


def _sql_record_outcome(conn: sa.Connection, key: str, agent: str, kind: str, outcome: str,
                        at: float) -> bool:
    hk = _hash(key)
    # Claim the key: only the first outcome per decision key is counted.
    conn.execute(upsert(conn.dialect, decisions_table, {
        "key": hk, "agent": agent, "kind": kind, "review": True,
        "reason": "review (no policy decision stored)", "rate": 1.0, "lower_bound": 0.0,
        "at": at}, keys=["key"]))
    claimed = conn.execute(
        sa.update(decisions_table)
        .where(decisions_table.c.key == hk, decisions_table.c.outcome.is_(None))
        .values(outcome=outcome, outcome_at=at)
    ).rowcount
    if claimed != 1:
        return False
    _ensure_stats_row(conn, agent, kind, at)
    ok = outcome == "approve"
    c = stats_table.c
    values: dict[str, Any] = {
        "reviews": c.reviews + 1,
        "approvals": c.approvals + (1 if ok else 0),
        "consecutive": (c.consecutive + 1) if ok else 0,
        "updated_at": at,
    }
    if not ok:
        values["reset_reason"] = outcome
    conn.execute(sa.update(stats_table).where(c.agent == agent, c.kind == kind).values(**values))
    return True


def _sql_reset(conn: sa.Connection, agent: str, kind: str | None, reason: str, at: float
               ) -> None:
    c = stats_table.c
    if kind is not None:
        _ensure_stats_row(conn, agent, kind, at)
    cond = [c.agent == agent] + ([c.kind == kind] if kind is not None else [])
    conn.execute(sa.update(stats_table).where(*cond).values(
        consecutive=0, reset_reason=reason[:255], updated_at=at))


class SQLAutonomyStore:
    """Autonomy evidence in SQL, shared by every worker on the same database.

    Pass a sync ``Engine`` for the sync API or an ``AsyncEngine`` for the async one (a sync
    engine also serves the async API, in a worker thread). The tables are part of
    ``relaygraph._sql.metadata`` (``relaygraph_autonomy_stats``,
    ``relaygraph_autonomy_decisions``); create them with :meth:`setup` / :meth:`asetup`.
    """

    def __init__(self, engine: Any) -> None:
        from sqlalchemy.ext.asyncio import AsyncEngine

        if isinstance(engine, AsyncEngine):
            self._async: AsyncEngine | None = engine
            self._sync: sa.Engine | None = None
        elif isinstance(engine, sa.Engine):
            self._async, self._sync = None, engine
        else:
            raise ConfigurationError(
                f"SQLAutonomyStore needs a SQLAlchemy Engine or AsyncEngine, "
                f"got {type(engine).__name__}"
            )

    def _engine(self) -> sa.Engine:
        if self._sync is None:
            raise RelaygraphError(
                "this SQLAutonomyStore was built on an AsyncEngine: use the async API "
                "(asetup, adecide, arecord, ...) or pass a sync Engine"
            )
        return self._sync

    def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        with self._engine().begin() as conn:
            return fn(conn, *args)

    async def _arun(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._async is None:
            return await asyncio.to_thread(self._run, fn, *args)
        async with self._async.begin() as conn:
            return await conn.run_sync(fn, *args)

    def setup(self) -> None:
        """Create the tables if absent (idempotent)."""
        create_tables(self._engine(), _TABLES)

    async def asetup(self) -> None:
        """Async twin of :meth:`setup`."""
        if self._async is None:
            await asyncio.to_thread(self.setup)
            return
        from relaygraph._sql import acreate_tables

        await acreate_tables(self._async, _TABLES)

    def stats(self, agent: str, kind: str) -> AutonomyStats:
        """Evidence for (agent, kind)."""
        return self._run(_sql_stats, agent, kind)

    def get_decision(self, key: str) -> PolicyDecision | None:
        """The decision stored under ``key``, if any."""
        return self._run(_sql_get_decision, key)

    def put_decision(self, decision: PolicyDecision) -> PolicyDecision:
        """Store a decision; the first one stored under a key wins and is returned."""
        return self._run(_sql_put_decision, decision)

    def record_outcome(self, key: str, agent: str, kind: str, outcome: str, at: float) -> bool:
        """Count a review outcome once per key; False when the key was already counted."""
        return self._run(_sql_record_outcome, key, agent, kind, outcome, at)

    def reset(self, agent: str, kind: str | None, reason: str, at: float) -> None:
        """Set the consecutive approvals of ``agent`` (one kind, or all) back to zero."""
        self._run(_sql_reset, agent, kind, reason, at)

    async def astats(self, agent: str, kind: str) -> AutonomyStats:
        """Async twin of :meth:`stats`."""
        return await self._arun(_sql_stats, agent, kind)

    async def aget_decision(self, key: str) -> PolicyDecision | None:
        """Async twin of :meth:`get_decision`."""
        return await self._arun(_sql_get_decision, key)

    async def aput_decision(self, decision: PolicyDecision) -> PolicyDecision:
        """Async twin of :meth:`put_decision`."""
        return await self._arun(_sql_put_decision, decision)

    async def arecord_outcome(self, key: str, agent: str, kind: str, outcome: str,
                              at: float) -> bool:
        """Async twin of :meth:`record_outcome`."""
        return await self._arun(_sql_record_outcome, key, agent, kind, outcome, at)

    async def areset(self, agent: str, kind: str | None, reason: str, at: float) -> None:
        """Async twin of :meth:`reset`."""
        await self._arun(_sql_reset, agent, kind, reason, at)


# --------------------------------------------------------------------------- policy


class AutonomyPolicy:
    """Decides per (agent, decision kind) whether a human must review.

    Args:
        store: where evidence lives (default: a new :class:`InMemoryAutonomyStore`).
            Use :class:`SQLAutonomyStore` to share it between workers.
        min_approvals: consecutive approvals needed before any review is skipped.
        target: the Wilson lower bound of the approval rate must reach this.
        confidence: confidence level of the Wilson interval (0.95 → z = 1.96).
        decay: the review rate once eligible is ``decay ** (consecutive - min_approvals + 1)``.
        floor: the review rate never falls below this (keeps spot checks forever).
        rng: randomness, a ``random.Random`` or a callable returning floats in [0, 1).
        clock: wall clock (seconds since the epoch).

    Example:
        >>> policy = AutonomyPolicy(min_approvals=5, target=0.8, floor=0.1, rng=random.Random(7))
        >>> policy.decide("resolver", "refund").review
        True
    """

    def __init__(self, store: AutonomyStore | None = None, *, min_approvals: int = 10,
                 target: float = 0.9, confidence: float = 0.95, decay: float = 0.5,
                 floor: float = 0.05, rng: random.Random | Callable[[], float] | None = None,
                 clock: Clock = system_clock) -> None:
        if not isinstance(min_approvals, int) or isinstance(min_approvals, bool) \
                or min_approvals < 1:
            raise ConfigurationError(f"min_approvals must be an int >= 1, got {min_approvals!r}")
        for name, value, lo, hi in (("target", target, 0.0, 1.0),
                                    ("floor", floor, 0.0, 1.0)):
            if not isinstance(value, int | float) or not lo <= value <= hi:
                raise ConfigurationError(f"{name} must be in [{lo}, {hi}], got {value!r}")
        if not isinstance(confidence, int | float) or not 0.0 < confidence < 1.0:
            raise ConfigurationError(f"confidence must be in (0, 1), got {confidence!r}")
        if not isinstance(decay, int | float) or not 0.0 < decay < 1.0:
            raise ConfigurationError(f"decay must be in (0, 1), got {decay!r}")
        if store is not None and not isinstance(store, AutonomyStore):
            raise ConfigurationError(
                f"store must implement AutonomyStore (e.g. InMemoryAutonomyStore or "
                f"SQLAutonomyStore), got {type(store).__name__}"
            )
        if rng is None:
            rng = random.Random()
        if isinstance(rng, random.Random):
            self._rng: Callable[[], float] = rng.random
        elif callable(rng):
            self._rng = rng
        else:
            raise ConfigurationError(
                f"rng must be a random.Random or a callable returning floats, got {rng!r}"
            )
        self.store: AutonomyStore = store if store is not None else InMemoryAutonomyStore()
        self.min_approvals = min_approvals
        self.target = float(target)
        self.confidence = float(confidence)
        self.decay = float(decay)
        self.floor = float(floor)
        self.clock = clock

    # -- pure part

    def evaluate(self, stats: AutonomyStats, draw: float | None = None,
                 key: str | None = None) -> PolicyDecision:
        """The decision these stats lead to (``draw`` is the random number to sample with)."""
        lb = wilson_lower_bound(stats.approvals, stats.reviews, self.confidence)
        common: dict[str, Any] = {"lower_bound": lb, "agent": stats.agent,
                                  "kind": stats.kind, "key": key, "at": self.clock()}
        evidence = (f"{stats.consecutive} consecutive approvals (need {self.min_approvals}), "
                    f"agreement lower bound {lb:.3f} over {stats.reviews} reviews "
                    f"(target {self.target:.3f})")
        if stats.consecutive < self.min_approvals or lb < self.target:
            why = "review: full review"
            if stats.reset_reason and stats.consecutive < self.min_approvals:
                why += f" since the last {stats.reset_reason}"
            return PolicyDecision(review=True, reason=f"{why}; {evidence}", rate=1.0, **common)
        rate = max(self.floor, self.decay ** (stats.consecutive - self.min_approvals + 1))
        roll = self._rng() if draw is None else draw
        if roll < rate:
            return PolicyDecision(review=True, reason=(
                f"review: sampled at rate {rate:.3f} (draw {roll:.3f}); {evidence}"),
                rate=rate, **common)
        return PolicyDecision(review=False, reason=(
            f"skip: review rate {rate:.3f} (draw {roll:.3f}); {evidence}"), rate=rate, **common)

    # -- sync API

    def stats(self, agent: str, kind: str = "default") -> AutonomyStats:
        """The evidence for (agent, kind)."""
        return self.store.stats(agent, kind)

    def decide(self, agent: str, kind: str = "default", *, key: str | None = None
               ) -> PolicyDecision:
        """Whether this decision must be reviewed. Stable per ``key`` (first answer wins)."""
        if key is not None:
            known = self.store.get_decision(key)
            if known is not None:
                return known
        decision = self.evaluate(self.store.stats(agent, kind), key=key)
        return self.store.put_decision(decision) if key is not None else decision

    def record(self, agent: str, kind: str, outcome: Outcome, *, key: str | None = None
               ) -> bool:
        """Record a human's outcome. Counted once per ``key``; returns False on a repeat."""
        _check_outcome(outcome)
        return self.store.record_outcome(key or _fresh_key(), agent, kind, outcome,
                                         self.clock())

    def record_breaker_trip(self, agent: str, kind: str | None = None) -> None:
        """A circuit breaker tripped for ``agent``: restore full review (all kinds by default).

        Guards call this from a breaker listener; so can you.
        """
        self.store.reset(agent, kind, "breaker trip", self.clock())

    def breaker_listener(self, agent: str | None = None, kind: str | None = None
                         ) -> Callable[[Any], None]:
        """A listener for ``CircuitBreaker(listeners=[...])``: a trip restores full review.

        Args:
            agent: the agent whose reviews are restored (default: the breaker's name).
            kind: one decision kind, or all kinds of the agent (default).

        Example:
            >>> breaker = CircuitBreaker("resolver",  # doctest: +SKIP
            ...                          listeners=[policy.breaker_listener()])
        """

        def on_breaker_event(event: Any) -> None:
            if str(getattr(event, "current", "")) == "open":
                self.record_breaker_trip(agent or str(event.breaker), kind)

        return on_breaker_event

    # -- async API

    async def astats(self, agent: str, kind: str = "default") -> AutonomyStats:
        """Async twin of :meth:`stats`."""
        return await self.store.astats(agent, kind)

    async def adecide(self, agent: str, kind: str = "default", *, key: str | None = None
                      ) -> PolicyDecision:
        """Async twin of :meth:`decide`."""
        if key is not None:
            known = await self.store.aget_decision(key)
            if known is not None:
                return known
        decision = self.evaluate(await self.store.astats(agent, kind), key=key)
        return await self.store.aput_decision(decision) if key is not None else decision

    async def arecord(self, agent: str, kind: str, outcome: Outcome, *, key: str | None = None
                      ) -> bool:
        """Async twin of :meth:`record`."""
        _check_outcome(outcome)
        return await self.store.arecord_outcome(key or _fresh_key(), agent, kind, outcome,
                                                self.clock())

    async def arecord_breaker_trip(self, agent: str, kind: str | None = None) -> None:
        """Async twin of :meth:`record_breaker_trip`."""
        await self.store.areset(agent, kind, "breaker trip", self.clock())

    def setup(self) -> None:
        """Create the store's tables (SQL stores); harmless for in-memory stores."""
        fn = getattr(self.store, "setup", None)
        if fn is not None:
            fn()

    async def asetup(self) -> None:
        """Async twin of :meth:`setup`."""
        fn = getattr(self.store, "asetup", None)
        if fn is not None:
            await fn()


def _check_outcome(outcome: str) -> None:
    if outcome not in OUTCOMES:
        raise ValueError(f"outcome must be one of {OUTCOMES}, got {outcome!r}")


def _fresh_key() -> str:
    import uuid

    return f"adhoc:{uuid.uuid4().hex}"
