"""`ConfidenceGuard`: scores an agent's output and picks the route (pass, retry, escalate, halt)."""

from __future__ import annotations

import typing
from collections.abc import Sequence
from typing import Any, Literal

from langchain_core.runnables import RunnableConfig
from langgraph.constants import END
from langgraph.types import Command

from relaygraph._clock import Clock, iso, system_clock
from relaygraph._errors import ConfigurationError
from relaygraph.guards._breaker import CircuitBreaker
from relaygraph.guards._checks import check_name, normalise
from relaygraph.guards._node import (
    GuardNode,
    check_route,
    resolve_async,
    resolve_sync,
    state_get,
)
from relaygraph.guards._paths import PathError, check_path
from relaygraph.guards._scorers import ScoringError, as_score, as_score_config, to_scorer
from relaygraph.state import GuardDecision

Outcome = Literal["pass", "retry", "escalate", "halt"]


def _schema_keys(schema: Any) -> set[str] | None:
    """The top-level keys of a state schema, or None when they cannot be read."""
    fields = getattr(schema, "model_fields", None)  # pydantic
    if isinstance(fields, dict):
        return set(fields)
    try:
        return set(typing.get_type_hints(schema))
    except Exception:  # noqa: BLE001 - an exotic schema: nothing to check against
        return None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, PathError | ScoringError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


class ConfidenceGuard(GuardNode):
    """A node that scores the state and routes on the result.

    The score comes from ``score``: a dotted path to a number in the state
    (``"case.confidence"``), a sync or async callable ``state -> float``, or a built-in
    scorer (`SelfReportedConfidence`, `MeanTokenProbability`, `Agreement`). ``checks`` add
    pass/fail tests (`Rule`, `ModelCheck`, or any callable returning None or a message).

    The guard passes when the score is at least ``threshold`` and every check passes.
    Otherwise, in this order:

    1. a score below ``halt_below`` halts (``on_halt``);
    2. if the breaker is open (possibly opened by this failure), the run escalates
       (``on_escalate``, or halts without one): retrying a failing agent is pointless;
    3. while the thread has retries left (``max_retries`` consecutive retries by this
       guard), the run goes back to ``on_retry`` with the reason in
       ``guard_feedback[on_retry]``;
    4. then it escalates to ``on_escalate`` (human review), or halts.

    A scorer or check that raises, or a score that is NaN, not a number or outside
    [0, 1], is recorded as a failure and routed the same way; the run never crashes on
    it. Every verdict appends a `GuardDecision` to ``guard_log``; the node returns
    ``Command(goto=…, update=…)``, so it works in any ``StateGraph`` whose state has the
    ``guard_log`` and ``guard_feedback`` keys of `relaygraph.graphs.RelayState`. Retries are
    counted from ``guard_log``: a guard that can retry refuses a state without it, when
    given ``schema=``, in `validate_guards`, and at run time at the latest (a clear
    `ConfigurationError` instead of retrying until the recursion limit).

    As its own node the guard costs one graph step (and checkpoint) per verdict;
    ``guard.wrap(agent)`` (`GuardedAgent`) runs it inside the agent's step instead.

    Args:
        score: dotted path, callable, or scorer object.
        threshold: in [0, 1].
        on_pass: node to run when the output passes (may be ``END``).
        on_retry: agent to send back to, with the failure reason.
        on_escalate: human-review node.
        on_halt: where a halted run goes (default ``END``).
        max_retries: consecutive retries allowed per thread before escalating.
        halt_below: optional score under which the run halts at once.
        checks: pass/fail checks run next to the score.
        breaker: a `CircuitBreaker` told the outcome of every verdict.
        schema: optional state schema to check score and check paths against now
            (`validate_guards` does it later from the graph builder).
        name: the guard's name in ``guard_log`` (default: the graph node's name).
        clock: epoch seconds for the ``at`` timestamps.

    Example:
        >>> guard = ConfidenceGuard(score="case.confidence", threshold=0.8,
        ...                         on_pass="crm", on_retry="resolver",
        ...                         on_escalate="review", max_retries=1)
        >>> guard.destinations
        ('crm', 'resolver', 'review', '__end__')
    """

    kind = "confidence_guard"

    def __init__(
        self,
        score: Any,
        threshold: float,
        *,
        on_pass: str,
        on_retry: str | None = None,
        on_escalate: str | None = None,
        on_halt: str = END,
        max_retries: int = 1,
        halt_below: float | None = None,
        checks: Sequence[Any] = (),
        breaker: CircuitBreaker | None = None,
        schema: Any = None,
        name: str | None = None,
        clock: Clock = system_clock,
    ) -> None:
        self.scorer = to_scorer(score)
        self.threshold = as_score_config("threshold", threshold)
        self.on_pass = check_route("on_pass", on_pass)
        self.on_retry = (
            check_route("on_retry", on_retry, allow_end=False) if on_retry is not None else None
        )
        self.on_escalate = (
            check_route("on_escalate", on_escalate, allow_end=False)
            if on_escalate is not None
            else None
        )
        self.on_halt = check_route("on_halt", on_halt)
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ConfigurationError(f"max_retries must be an integer >= 0, got {max_retries!r}")
        self.max_retries = max_retries
        if halt_below is not None:
            halt_below = as_score_config("halt_below", halt_below)
            if halt_below > self.threshold:
                raise ConfigurationError(
                    f"halt_below must be <= threshold ({self.threshold}), got {halt_below}"
                )
        self.halt_below = halt_below
        if isinstance(checks, str) or not isinstance(checks, Sequence):
            raise ConfigurationError(f"checks must be a list of checks, got {checks!r:.60}")
        for c in checks:
            if not callable(c):
                raise ConfigurationError(f"each check must be callable, got {c!r:.60}")
        self.checks = tuple(checks)
        if breaker is not None and not isinstance(breaker, CircuitBreaker):
            raise ConfigurationError(f"breaker must be a CircuitBreaker, got {breaker!r:.60}")
        self.breaker = breaker
        super().__init__(name=name, clock=clock)
        if schema is not None:
            self._validate_schema(schema, f"ConfidenceGuard {name or ''}".rstrip())

    def _routes(self) -> dict[str, str]:
        routes = {"on_pass": self.on_pass}
        if self.on_retry is not None:
            routes["on_retry"] = self.on_retry
        if self.on_escalate is not None:
            routes["on_escalate"] = self.on_escalate
        routes["on_halt"] = self.on_halt
        return routes

    def _channels(self) -> tuple[str, ...]:
        return ("guard_log", "guard_feedback") if self.on_retry else ("guard_log",)

    def _counted_channels(self) -> tuple[str, ...]:
        return ("guard_log",) if self.on_retry is not None and self.max_retries else ()

    def _validate_schema(self, schema: Any, label: str) -> None:
        if schema is None:
            return
        keys = _schema_keys(schema)
        for key in self._counted_channels():
            if keys is not None and key not in keys:
                raise ConfigurationError(
                    f"{label}: state schema {getattr(schema, '__name__', schema)} has no "
                    f"{key!r} key, so the guard could not count its retries and would retry "
                    "forever; add relaygraph.graphs.RelayState to its bases"
                )
        sources: list[tuple[str, Any]] = [("score", self.scorer)]
        sources += [(f"check {check_name(c)!r}", c) for c in self.checks]
        for what, src in sources:
            for parts in getattr(src, "state_paths", ()):
                err = check_path(schema, parts)
                if err:
                    raise ConfigurationError(
                        f"{label}: {what} path {'.'.join(parts)!r} does not exist in "
                        f"{getattr(schema, '__name__', schema)}: {err}"
                    )

    # -- sync / async shells -------------------------------------------------------------
    def _run(self, state: Any, config: RunnableConfig | None) -> Command:
        score, failed = self._score(lambda: resolve_sync(self.scorer(state)))
        for check in self.checks:
            failed += self._check(check, lambda c=check: resolve_sync(c(state)))
        passed = score is not None and score >= self.threshold and not failed
        bstate = self.breaker.record(passed) if self.breaker is not None else None
        return self._verdict(state, config, score, failed, passed, bstate)

    async def _arun(self, state: Any, config: RunnableConfig | None) -> Command:
        failed: list[str]
        try:
            score: float | None = as_score(await resolve_async(self.scorer(state)))
            failed = []
        except Exception as exc:  # noqa: BLE001 - a broken scorer is a failed verdict
            score, failed = None, [f"score: {_describe(exc)}"]
        for check in self.checks:
            try:
                result = normalise(await resolve_async(check(state)), check_name(check))
            except Exception as exc:  # noqa: BLE001
                result = f"{check_name(check)}: raised {_describe(exc)}"
            if result:
                failed.append(result)
        passed = score is not None and score >= self.threshold and not failed
        bstate = await self.breaker.arecord(passed) if self.breaker is not None else None
        return self._verdict(state, config, score, failed, passed, bstate)

    # -- shared core ---------------------------------------------------------------------
    @staticmethod
    def _score(compute: Any) -> tuple[float | None, list[str]]:
        try:
            return as_score(compute()), []
        except Exception as exc:  # noqa: BLE001 - a broken scorer is a failed verdict
            return None, [f"score: {_describe(exc)}"]

    @staticmethod
    def _check(check: Any, run: Any) -> list[str]:
        name = check_name(check)
        try:
            result = normalise(run(), name)
        except Exception as exc:  # noqa: BLE001 - a broken check is a failed check
            result = f"{name}: raised {_describe(exc)}"
        return [result] if result else []

    def retries_used(self, state: Any, guard: str) -> int:
        """Consecutive retries this guard has ordered on the thread (since its last
        non-retry verdict)."""
        used = 0
        for rec in reversed(state_get(state, "guard_log") or []):
            if not isinstance(rec, dict) or rec.get("guard") != guard:
                continue
            if rec.get("route") != "retry":
                break
            used += 1
        return used

    def _verdict(
        self,
        state: Any,
        config: RunnableConfig | None,
        score: float | None,
        failed: list[str],
        passed: bool,
        bstate: str | None,
    ) -> Command:
        guard = self.label(config)
        used = self.retries_used(state, guard)
        why: list[str] = []
        if score is not None:
            op = ">=" if score >= self.threshold else "<"
            why.append(f"score {score:.3g} {op} threshold {self.threshold:.3g}")
        why += failed
        outcome: Outcome
        if passed:
            outcome = "pass"
        elif self.halt_below is not None and score is not None and score < self.halt_below:
            outcome = "halt"
            why.append(f"score below halt_below {self.halt_below:.3g}")
        elif bstate == "open":
            outcome = "escalate" if self.on_escalate is not None else "halt"
            why.append(f"breaker {self.breaker.name!r} is open")  # type: ignore[union-attr]
        elif self.on_retry is not None and used < self.max_retries:
            outcome = "retry"
        elif self.on_escalate is not None:
            outcome = "escalate"
            if self.on_retry is not None and self.max_retries:
                why.append(f"retries exhausted ({used}/{self.max_retries})")
        else:
            outcome = "halt"
        goto = {
            "pass": self.on_pass,
            "retry": self.on_retry,
            "escalate": self.on_escalate,
            "halt": self.on_halt,
        }[outcome]
        assert goto is not None
        reason = "; ".join(why)
        decision = GuardDecision(
            guard=guard,
            score=score,
            threshold=self.threshold,
            failed_checks=failed,
            route=outcome,
            breaker_state=bstate,
            at=iso(self.clock()),
            reason=reason,
            goto=goto,
        )
        update: dict[str, Any] = {"guard_log": [decision]}
        if outcome == "retry":
            decision["attempt"] = used + 1
            update["guard_feedback"] = {self.on_retry: reason}
        elif self.on_retry is not None:
            pending = state_get(state, "guard_feedback") or {}
            if isinstance(pending, dict) and pending.get(self.on_retry):
                update["guard_feedback"] = {self.on_retry: ""}  # consumed: clear it
        return Command(goto=goto, update=update)

    def __repr__(self) -> str:
        return (
            f"ConfidenceGuard(score={self.scorer!r}, threshold={self.threshold}, "
            f"routes={self._routes()}, max_retries={self.max_retries})"
        )
