"""The persisted state of one circuit breaker and the pure transitions over it.

Stores only load and save `BreakerRecord`s atomically; every decision (open, half-open,
close) is made here, once, so the in-memory and SQL stores cannot disagree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Literal

BreakerState = Literal["closed", "open", "half_open"]
BREAKER_STATES: tuple[str, ...] = ("closed", "open", "half_open")

FAILURE = "1"
SUCCESS = "0"


class CorruptRecordError(ValueError):
    """A stored breaker row cannot be read back; the store resets it."""


@dataclass(frozen=True, slots=True)
class BreakerRecord:
    """The state of one breaker as a store keeps it.

    Attributes:
        state: ``closed``, ``open`` or ``half_open`` as last written. An ``open`` record whose
            cooldown has elapsed is reported as ``half_open`` by `CircuitBreaker.state`.
        outcomes: the last ``window`` outcomes while closed, oldest first
            (``"1"`` failure, ``"0"`` success).
        changed_at: when ``state`` last changed (epoch seconds, from the breaker's clock).
        probes: half-open calls admitted and not yet reported.
        successes: successful half-open calls so far.
        probe_at: when the latest half-open probe was admitted.
        updated_at: when the record was last written.
    """

    state: BreakerState = "closed"
    outcomes: str = ""
    changed_at: float = 0.0
    probes: int = 0
    successes: int = 0
    probe_at: float | None = None
    updated_at: float = 0.0

    @property
    def failures(self) -> int:
        """Failures in the current window."""
        return self.outcomes.count(FAILURE)

    @property
    def failure_rate(self) -> float | None:
        """Observed failure rate over the window, or None with no calls recorded."""
        return self.failures / len(self.outcomes) if self.outcomes else None

    def to_row(self) -> dict[str, Any]:
        """Column values for the SQL store."""
        return {
            "state": self.state,
            "outcomes": self.outcomes,
            "changed_at": self.changed_at,
            "probes": self.probes,
            "successes": self.successes,
            "probe_at": self.probe_at,
            "updated_at": self.updated_at,
        }

    @classmethod
    def from_row(cls, row: Any) -> BreakerRecord:
        """Rebuild a record from stored values; raises `CorruptRecordError` when invalid."""
        try:
            get = row.__getitem__ if isinstance(row, dict) else row._mapping.__getitem__
            state = get("state")
            outcomes = get("outcomes")
            changed_at = _num(get("changed_at"), "changed_at")
            probes = _count(get("probes"), "probes")
            successes = _count(get("successes"), "successes")
            probe_raw = get("probe_at")
            updated_at = _num(get("updated_at"), "updated_at")
        except (KeyError, AttributeError, TypeError) as exc:
            raise CorruptRecordError(f"missing or unreadable column ({exc})") from exc
        if state not in BREAKER_STATES:
            raise CorruptRecordError(f"unknown state {state!r}")
        if not isinstance(outcomes, str) or outcomes.strip("01"):
            raise CorruptRecordError(f"outcomes must be a string of 0/1, got {outcomes!r:.60}")
        probe_at = None if probe_raw is None else _num(probe_raw, "probe_at")
        return cls(state, outcomes, changed_at, probes, successes, probe_at, updated_at)


def _num(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CorruptRecordError(f"{name} must be a number, got {value!r}")
    f = float(value)
    if not math.isfinite(f):
        raise CorruptRecordError(f"{name} must be finite, got {value!r}")
    return f


def _count(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise CorruptRecordError(f"{name} must be a non-negative integer, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class Policy:
    """The numbers a transition needs (a `CircuitBreaker`'s configuration)."""

    failure_rate: float
    window: int
    min_calls: int
    cooldown: float
    half_open_probes: int


def cooled(record: BreakerRecord, policy: Policy, now: float) -> bool:
    """True when an open breaker's cooldown has elapsed."""
    return record.state == "open" and now - record.changed_at >= policy.cooldown


def effective_state(record: BreakerRecord | None, policy: Policy, now: float) -> BreakerState:
    """The state callers should see: an open breaker past its cooldown is half-open."""
    if record is None:
        return "closed"
    if cooled(record, policy, now):
        return "half_open"
    return record.state


def fresh(now: float) -> BreakerRecord:
    """A closed breaker with no history."""
    return BreakerRecord(changed_at=now, updated_at=now)


def admit(record: BreakerRecord | None, policy: Policy, now: float) -> tuple[BreakerRecord, bool]:
    """Ask to run the protected agent. Returns the new record and whether it may run."""
    rec = record or fresh(now)
    if rec.state == "closed":
        return rec, True
    if rec.state == "open":
        if not cooled(rec, policy, now):
            return rec, False
        rec = replace(rec, state="half_open", changed_at=now, probes=0, successes=0)
    # half-open: a probe that never reported (crashed worker) stops blocking after a cooldown
    stale = rec.probe_at is not None and now - rec.probe_at >= policy.cooldown
    probes = 0 if stale else rec.probes
    if probes + rec.successes >= policy.half_open_probes:
        return rec, False
    return replace(rec, probes=probes + 1, probe_at=now, updated_at=now), True


def report(record: BreakerRecord | None, policy: Policy, now: float, ok: bool) -> BreakerRecord:
    """Record one outcome of the protected agent and apply the resulting transition."""
    rec = record or fresh(now)
    if rec.state == "open" and cooled(rec, policy, now):
        # No gate admitted this call (the guard is used without one): it is the probe.
        rec = replace(rec, state="half_open", changed_at=now, probes=1, successes=0, probe_at=now)
    if rec.state == "open":
        return rec  # a call admitted before the breaker opened; its outcome changes nothing
    if rec.state == "half_open":
        if not ok:
            return BreakerRecord("open", "", now, 0, 0, None, now)
        successes = rec.successes + 1
        if successes >= policy.half_open_probes:
            return BreakerRecord("closed", "", now, 0, 0, None, now)
        return replace(rec, probes=max(rec.probes - 1, 0), successes=successes, updated_at=now)
    outcomes = (rec.outcomes + (SUCCESS if ok else FAILURE))[-policy.window :]
    if len(outcomes) >= policy.min_calls:
        rate = outcomes.count(FAILURE) / len(outcomes)
        if rate >= policy.failure_rate:
            return BreakerRecord("open", "", now, 0, 0, None, now)
    return replace(rec, outcomes=outcomes, updated_at=now)


def force(state: BreakerState, now: float) -> BreakerRecord:
    """A record forced into ``state`` (manual trip or reset)."""
    return BreakerRecord(state, "", now, 0, 0, None, now)
