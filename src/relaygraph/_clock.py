"""Injected clocks. Every component that reads time takes a ``clock`` so tests move time."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], float]
"""Returns seconds since the epoch, like :func:`time.time`."""

system_clock: Clock = time.time


def iso(ts: float) -> str:
    """Format an epoch timestamp as an ISO-8601 UTC string (``2026-01-01T00:00:00+00:00``)."""
    return datetime.fromtimestamp(ts, UTC).isoformat()


def now_iso(clock: Clock = system_clock) -> str:
    """The clock's current time as an ISO-8601 UTC string."""
    return iso(clock())
