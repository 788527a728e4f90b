"""`BudgetGuard`: stops a run before its tokens or cost go over a limit."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.constants import END
from langgraph.types import Command

from relaygraph._clock import Clock, iso, system_clock
from relaygraph._errors import ConfigurationError
from relaygraph.guards._node import GuardNode, check_route, state_get
from relaygraph.guards._scorers import as_score_config
from relaygraph.state import GuardDecision


def _limit(name: str, value: Any, *, integer: bool) -> float | None:
    if value is None:
        return None
    kinds: tuple[type, ...] = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise ConfigurationError(f"{name} must be a positive number or None, got {value!r}")
    number = float(value)  # type: ignore[arg-type]  # an int or float here
    if not math.isfinite(number):
        raise ConfigurationError(f"{name} must be a positive number or None, got {value!r}")
    if number <= 0:
        raise ConfigurationError(f"{name} must be > 0, got {value!r}")
    return number


def _reserve(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ConfigurationError(f"{name} must be a number >= 0, got {value!r}")
    return float(value)


class BudgetGuard(GuardNode):
    """Escalates or halts when a run's tokens or cost would exceed a limit.

    Reads the ``usage`` channel (`relaygraph.graphs.RelayState`, filled by
    ``track_agent()``), adds the expected cost of the next step (``reserve_tokens``,
    ``reserve_cost``) and compares with the limits. Over a limit, the run goes to
    ``on_escalate`` (or ``on_halt`` without one); at ``warn_at`` of a limit it continues
    to ``on_pass`` and records a ``warn`` verdict; below, a ``pass``. Each verdict is a
    `GuardDecision` in ``guard_log`` whose ``score`` is the projected share of the
    tightest limit (``threshold`` is 1.0).

    Args:
        max_tokens: limit on input + output tokens (None: no token limit).
        max_cost: limit on cost, in the pricing's currency (None: no cost limit).
        on_pass: the next node when within budget.
        on_escalate: human-review node for runs over budget.
        on_halt: where a halted run goes (default ``END``).
        warn_at: share of a limit at which a warning is recorded, in [0, 1].
        reserve_tokens: tokens the next step is expected to use.
        reserve_cost: cost the next step is expected to add.
        agents: count only these agents' usage (default: all).
        name: the guard's name in ``guard_log`` (default: the graph node's name).
        clock: epoch seconds for ``at``.

    Example:
        >>> BudgetGuard(max_tokens=50_000, max_cost=0.50, on_pass="writer",
        ...             on_escalate="review").destinations
        ('writer', 'review', '__end__')
    """

    kind = "budget_guard"

    def __init__(
        self,
        *,
        max_tokens: int | None = None,
        max_cost: float | None = None,
        on_pass: str,
        on_escalate: str | None = None,
        on_halt: str = END,
        warn_at: float = 0.8,
        reserve_tokens: int = 0,
        reserve_cost: float = 0.0,
        agents: Sequence[str] | None = None,
        name: str | None = None,
        clock: Clock = system_clock,
    ) -> None:
        self.max_tokens = _limit("max_tokens", max_tokens, integer=True)
        self.max_cost = _limit("max_cost", max_cost, integer=False)
        if self.max_tokens is None and self.max_cost is None:
            raise ConfigurationError("BudgetGuard needs max_tokens, max_cost or both")
        self.on_pass = check_route("on_pass", on_pass)
        self.on_escalate = (
            check_route("on_escalate", on_escalate, allow_end=False)
            if on_escalate is not None
            else None
        )
        self.on_halt = check_route("on_halt", on_halt)
        self.warn_at = as_score_config("warn_at", warn_at)
        self.reserve_tokens = _reserve("reserve_tokens", reserve_tokens)
        self.reserve_cost = _reserve("reserve_cost", reserve_cost)
        if agents is not None and (
            isinstance(agents, str) or not all(isinstance(a, str) for a in agents)
        ):
            raise ConfigurationError(f"agents must be a list of agent names, got {agents!r}")
        self.agents = frozenset(agents) if agents is not None else None
        super().__init__(name=name, clock=clock)

    def _routes(self) -> dict[str, str]:
        routes = {"on_pass": self.on_pass}
        if self.on_escalate is not None:
            routes["on_escalate"] = self.on_escalate
        routes["on_halt"] = self.on_halt
        return routes

    def totals(self, state: Any) -> tuple[int, float, list[str]]:
        """Tokens and cost used so far by the counted agents, and unreadable entries."""
        usage = state_get(state, "usage") or {}
        tokens, cost, bad = 0, 0.0, []
        if not isinstance(usage, dict):
            return 0, 0.0, [f"usage is {type(usage).__name__}, not a table"]
        for agent, models in usage.items():
            if self.agents is not None and agent not in self.agents:
                continue
            if not isinstance(models, dict):
                bad.append(f"usage[{agent!r}] is not a table")
                continue
            for model, u in models.items():
                try:
                    tokens += int(u.get("input_tokens", 0)) + int(u.get("output_tokens", 0))
                    cost += float(u.get("cost", 0.0))
                except (AttributeError, TypeError, ValueError):
                    bad.append(f"usage[{agent!r}][{model!r}] is unreadable")
        return tokens, cost, bad

    def _run(self, state: Any, config: RunnableConfig | None) -> Command:
        return self._verdict(state, config)

    async def _arun(self, state: Any, config: RunnableConfig | None) -> Command:
        return self._verdict(state, config)

    def _verdict(self, state: Any, config: RunnableConfig | None) -> Command:
        tokens, cost, bad = self.totals(state)
        shares: list[float] = []
        why: list[str] = []
        over: list[str] = []
        if self.max_tokens is not None:
            projected = tokens + self.reserve_tokens
            shares.append(projected / self.max_tokens)
            why.append(f"tokens {tokens:,} + {self.reserve_tokens:,.0f} of {self.max_tokens:,.0f}")
            if projected > self.max_tokens:
                over.append(f"tokens: {projected:,.0f} would exceed {self.max_tokens:,.0f}")
        if self.max_cost is not None:
            projected_cost = cost + self.reserve_cost
            shares.append(projected_cost / self.max_cost)
            why.append(f"cost {cost:.4g} + {self.reserve_cost:.4g} of {self.max_cost:.4g}")
            if projected_cost > self.max_cost:
                over.append(f"cost: {projected_cost:.4g} would exceed {self.max_cost:.4g}")
        share = max(shares)
        if over:
            route, goto = (
                ("escalate", self.on_escalate) if self.on_escalate else ("halt", self.on_halt)
            )
        elif share >= self.warn_at:
            route, goto = "warn", self.on_pass
            why.append(f"warning: {share:.0%} of the budget")
        else:
            route, goto = "pass", self.on_pass
        decision = GuardDecision(
            guard=self.label(config),
            score=share,
            threshold=1.0,
            failed_checks=over,
            route=route,
            breaker_state=None,
            at=iso(self.clock()),
            reason="; ".join(why + bad),
            goto=goto,
        )
        return Command(goto=goto, update={"guard_log": [decision]})
