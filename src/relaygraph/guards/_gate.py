"""`BreakerGate`: the node before a protected agent that skips it while its breaker is open."""

from __future__ import annotations

from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.types import Command

from relaygraph._clock import Clock, iso
from relaygraph._errors import ConfigurationError
from relaygraph.guards._breaker import CircuitBreaker
from relaygraph.guards._node import GuardNode, check_route
from relaygraph.state import GuardDecision


class BreakerGate(GuardNode):
    """Routes to the protected agent while its breaker lets calls through, else to a fallback.

    Place it before the agent. Closed, it routes to ``on_allow``; open, to ``on_block``
    without running the agent; half-open, it admits ``half_open_probes`` runs and blocks
    the rest. The `ConfidenceGuard` after the agent (with the same ``breaker``) reports
    each outcome, which closes or reopens the breaker. Each verdict is appended to
    ``guard_log`` with ``route`` ``allow`` or ``block``, the window's failure rate as
    ``score`` and the breaker's ``failure_rate`` as ``threshold``.

    Args:
        breaker: the protected agent's breaker.
        on_allow: the protected agent.
        on_block: the fallback (human review, a simpler agent, or ``END``).
        name: the gate's name in ``guard_log`` (default: the graph node's name).
        clock: epoch seconds for ``at`` (default: the breaker's clock).

    Example:
        >>> gate = BreakerGate(CircuitBreaker("resolver"), on_allow="resolver",
        ...                    on_block="review")
    """

    kind = "breaker_gate"

    def __init__(
        self,
        breaker: CircuitBreaker,
        *,
        on_allow: str,
        on_block: str,
        name: str | None = None,
        clock: Clock | None = None,
    ) -> None:
        if not isinstance(breaker, CircuitBreaker):
            raise ConfigurationError(f"breaker must be a CircuitBreaker, got {breaker!r:.60}")
        self.breaker = breaker
        self.on_allow = check_route("on_allow", on_allow, allow_end=False)
        self.on_block = check_route("on_block", on_block)
        if self.on_allow == self.on_block:
            raise ConfigurationError(
                f"on_allow and on_block are both {on_allow!r}; the gate would never block"
            )
        super().__init__(name=name, clock=clock if clock is not None else breaker.clock)

    def _routes(self) -> dict[str, str]:
        return {"on_allow": self.on_allow, "on_block": self.on_block}

    def _run(self, state: Any, config: RunnableConfig | None) -> Command:
        return self._verdict(config, *self.breaker.admit())

    async def _arun(self, state: Any, config: RunnableConfig | None) -> Command:
        return self._verdict(config, *await self.breaker.aadmit())

    def _verdict(self, config: RunnableConfig | None, allowed: bool, record: Any) -> Command:
        bstate = self.breaker.state_of(record)
        goto = self.on_allow if allowed else self.on_block
        reason = (
            f"breaker {self.breaker.name!r} is {bstate}"
            + ("" if allowed else f"; {self.on_allow!r} skipped")
        )
        decision = GuardDecision(
            guard=self.label(config),
            score=record.failure_rate if record is not None else None,
            threshold=self.breaker.failure_rate,
            failed_checks=[] if allowed else [f"breaker: {self.breaker.name} is {bstate}"],
            route="allow" if allowed else "block",
            breaker_state=bstate,
            at=iso(self.clock()),
            reason=reason,
            goto=goto,
        )
        return Command(goto=goto, update={"guard_log": [decision]})
