"""A clock that tests move by hand."""

from __future__ import annotations


class ManualClock:
    """A ``Clock`` (``() -> float``) that only moves when told to.

    Pass it as ``clock=`` to relaygraph components and call :meth:`advance` instead of
    sleeping::

        clock = ManualClock()
        breaker = CircuitBreaker(..., clock=clock)
        clock.advance(301)

    Args:
        start: Initial epoch seconds (default 2026-01-01T00:00:00Z).
    """

    def __init__(self, start: float = 1_767_225_600.0) -> None:
        self.now = float(start)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        """Move forward by ``seconds`` (must be >= 0) and return the new time."""
        if seconds < 0:
            raise ValueError(f"a clock cannot go back: advance({seconds})")
        self.now += seconds
        return self.now
