"""Guards, breakers and budgets as LangChain 1.x agent middleware (``create_agent``).

The node forms (`ConfidenceGuard`, `BreakerGate`, `BudgetGuard`) route between graph nodes;
an agent built by ``langchain.agents.create_agent`` has one model loop, so the same decisions
are made by middleware hooks instead::

    from langchain.agents import create_agent
    agent = create_agent(model, tools, middleware=[
        BudgetMiddleware(max_cost=0.50, pricing=pricing),
        GuardMiddleware(score=SelfReportedConfidence(), threshold=0.8, breaker=breaker),
    ], checkpointer=saver)

* `GuardMiddleware` scores each final answer (an AI message without tool calls) with the
  guard's scorer and checks. Pass: the answer stands. Retry: the model is called again with
  the reason as a new message, so the retried model sees why. Escalate: after the model loop
  the run pauses on a human review (an ``interrupt`` with relaygraph's review request, so
  ``relaygraph reviews``, ``relaygraph review`` and the inbox handle it); halt: the run ends
  with a message saying why. With a ``breaker``, every verdict is recorded in it and an open
  breaker skips the model: a human writes the answer (``edit`` ``{"content": ...}``) or the
  run ends.
* `BudgetMiddleware` records each model call's tokens and cost in ``usage`` (as
  ``track_agent`` does for nodes, so ``relaygraph costs`` counts agents too) and, before a
  model call that would start over the limit, halts or asks a human, whose approval allows
  one more budget.

Every verdict is a `GuardDecision` in ``guard_log`` and every decision a ``ReviewRecord`` in
``reviews``: `RelayAgentState`, the agent state with relaygraph's keys, is these middlewares'
``state_schema``. Needs the ``agents`` extra: ``pip install 'relaygraph[agents]'``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

try:
    from langchain.agents.middleware import AgentMiddleware, AgentState, hook_config
    from langchain.agents.middleware.types import ExtendedModelResponse, ModelResponse
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise ImportError(
        "relaygraph's agent middleware needs LangChain 1.x; install it with: "
        "pip install 'relaygraph[agents]'") from exc
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from langgraph.config import get_config
from langgraph.types import Command, interrupt

from relaygraph._clock import Clock, iso, system_clock
from relaygraph._errors import ConfigurationError
from relaygraph.guards._breaker import CircuitBreaker
from relaygraph.guards._confidence import ConfidenceGuard
from relaygraph.nodes._review import REVIEW_KIND, parse_decision
from relaygraph.observe._pricing import Pricing
from relaygraph.state import GuardDecision, RelayState, ReviewRecord, Usage

OnEscalate = Literal["review", "halt"]


class RelayAgentState(AgentState, RelayState, total=False):  # type: ignore[misc]
    """LangChain's agent state with relaygraph's record keys (``guard_log``, ``reviews``,
    ``usage``, …), for ``create_agent(..., state_schema=RelayAgentState)`` or as the
    middlewares' own state schema."""


def _check_escalate(value: Any) -> OnEscalate:
    if value not in ("review", "halt"):
        raise ConfigurationError(f"on_escalate must be 'review' or 'halt', got {value!r}")
    return value  # type: ignore[no-any-return]


def _check_name(value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or "." in value:
        raise ConfigurationError(f"name must be a non-empty string without '.', got {value!r}")
    return value


def _text(message: AnyMessage) -> str:
    content = message.content
    if isinstance(content, str):
        return content
    return " ".join(str(p.get("text", "")) if isinstance(p, dict) else str(p) for p in content)


def _review(request: dict[str, Any], node: str, actions: Sequence[str], clock: Clock
            ) -> tuple[Any, ReviewRecord]:
    """Pause on a relaygraph review request; the decision and its record."""
    decision = parse_decision(interrupt({**request, "kind": REVIEW_KIND, "node": node,
                                         "actions": list(actions)}), actions)
    root = decision.root
    record = ReviewRecord(node=node, request={k: v for k, v in request.items() if k != "value"},
                          decision=root.action, edits=dict(getattr(root, "edits", {}) or {}),
                          reviewer=root.reviewer, comment=root.comment,
                          policy_reason=str(request.get("policy_reason") or ""),
                          at=iso(clock()))
    if root.action == "reject":
        record["reason"] = getattr(root, "reason", None) or root.comment
    return root, record


class GuardMiddleware(AgentMiddleware):  # type: ignore[misc]
    """`ConfidenceGuard` as agent middleware: pass, retry with feedback, escalate, halt.

    Args:
        score: a dotted state path, a callable ``state -> float`` or a scorer
            (`SelfReportedConfidence`, `MeanTokenProbability`, ...), evaluated on the state
            with the model's new answer as its last message.
        threshold: in [0, 1].
        max_retries: consecutive retries per thread before escalating.
        checks: pass/fail checks, as for `ConfidenceGuard`.
        breaker: a `CircuitBreaker` told every verdict; while it is open the model is
            skipped and the run escalates (or halts).
        halt_below: a score under which the run halts at once.
        on_escalate: ``"review"`` (pause for a human) or ``"halt"`` (end the run).
        name: the guard's name in ``guard_log`` and in the agent graph's node names.
        clock: epoch seconds for the records' timestamps.
    """

    state_schema = RelayAgentState

    def __init__(self, score: Any, threshold: float, *, max_retries: int = 1,
                 checks: Sequence[Any] = (), breaker: CircuitBreaker | None = None,
                 halt_below: float | None = None, on_escalate: OnEscalate = "review",
                 name: str = "guard", clock: Clock = system_clock) -> None:
        super().__init__()
        self._name = _check_name(name)
        self.on_escalate = _check_escalate(on_escalate)
        self.guard = ConfidenceGuard(
            score, threshold, on_pass="__end__", on_retry="model",
            on_escalate="review" if on_escalate == "review" else None,
            max_retries=max_retries, halt_below=halt_below, checks=checks, breaker=breaker,
            name=name, clock=clock)
        self.clock = clock

    @property
    def name(self) -> str:
        return f"relaygraph_{self._name}"

    # -- the breaker gate, once per agent run ------------------------------------------
    @hook_config(can_jump_to=["end"])
    def before_agent(self, state: Any, runtime: Any) -> dict[str, Any] | None:
        breaker = self.guard.breaker
        if breaker is None:
            return None
        allowed, record = breaker.admit()
        if allowed:
            return None
        bstate = breaker.state_of(record)
        decision = GuardDecision(
            guard=self._name, score=record.failure_rate if record is not None else None,
            threshold=breaker.failure_rate, failed_checks=[f"breaker: {breaker.name} is open"],
            route="block", breaker_state=bstate, at=iso(self.clock()),
            reason=f"breaker {breaker.name!r} is {bstate}; the model is skipped")
        update: dict[str, Any] = {"guard_log": [decision], "jump_to": "end"}
        if self.on_escalate == "halt":
            update["messages"] = [AIMessage(f"Stopped: {decision['reason']}.", name=self._name)]
        return update  # with on_escalate="review", after_agent asks a human for the answer

    def _answered(self, state: Any, decision: Any) -> bool:
        return any(r.get("node") == self.name and (r.get("request") or {}).get("at")
                   == decision.get("at") for r in state.get("reviews") or [])

    # -- the verdict on each final answer ----------------------------------------------
    @hook_config(can_jump_to=["model", "end"])
    def after_model(self, state: Any, runtime: Any) -> dict[str, Any] | None:
        messages = state.get("messages") or []
        last = messages[-1] if messages else None
        if not isinstance(last, AIMessage) or last.tool_calls:
            return None  # not a final answer: the tools run first
        verdict = self.guard._run(state, get_config())
        decision = dict(verdict.update or {})["guard_log"][0]
        route = decision["route"]
        update: dict[str, Any] = {"guard_log": [decision]}
        if route == "retry":
            update["messages"] = [HumanMessage(
                f"A check rejected your answer: {decision.get('reason')}. Answer again, "
                "fixing this.", name=self._name)]
            update["jump_to"] = "model"
        elif route == "halt":
            update["messages"] = [AIMessage(f"Stopped by {self._name}: {decision.get('reason')}",
                                            name=self._name)]
            update["jump_to"] = "end"
        return update

    # -- escalations and blocks are reviewed once the loop has ended -------------------
    def after_agent(self, state: Any, runtime: Any) -> dict[str, Any] | None:
        # The verdict was recorded by an earlier hook; pausing here means a resumed review
        # re-runs only this hook, so the scorer and the breaker are not asked twice.
        log = [r for r in state.get("guard_log") or [] if r.get("guard") == self._name]
        if not log or self.on_escalate != "review" or self._answered(state, log[-1]):
            return None
        verdict = log[-1]
        if verdict.get("route") == "escalate":
            last = next((m for m in reversed(state.get("messages") or [])
                         if isinstance(m, AIMessage)), None)
            value = {"content": _text(last) if last else ""}
            actions: tuple[str, ...] = ("approve", "edit", "reject")
            why = f"{self._name} escalated the answer to a human"
        elif verdict.get("route") == "block":
            value, actions = {"content": ""}, ("edit", "reject")
            why = "the breaker is open and the model was skipped: write the answer or reject"
        else:
            return None
        request = {"subject": "messages", "value": value, "guard": self._name,
                   "guard_route": verdict.get("route"), "guard_reason": verdict.get("reason"),
                   "confidence": verdict.get("score"), "at": verdict.get("at"),
                   "policy_reason": why}
        root, record = _review(request, self.name, actions, self.clock)
        update: dict[str, Any] = {"reviews": [record]}
        if root.action == "edit":
            update["messages"] = [AIMessage(str(root.edits.get("content", "")),
                                            name=root.reviewer or "reviewer")]
        elif root.action == "reject":
            update["messages"] = [AIMessage(f"Rejected by a reviewer: {record.get('reason')}",
                                            name=root.reviewer or "reviewer")]
        return update


class BudgetMiddleware(AgentMiddleware):  # type: ignore[misc]
    """`BudgetGuard` as agent middleware: usage recorded per call, a limit before each call.

    Args:
        max_tokens: limit on the thread's input + output tokens.
        max_cost: limit on its cost, in the pricing's currency.
        pricing: prices per model (default: relaygraph's built-in table).
        on_exceed: ``"halt"`` (end the run with a message) or ``"review"`` (ask a human;
            each approval allows one more budget).
        agent: the agent's name in ``usage``.
        name: the guard's name in ``guard_log``.
        clock: epoch seconds for the records.
    """

    state_schema = RelayAgentState

    def __init__(self, *, max_tokens: int | None = None, max_cost: float | None = None,
                 pricing: Pricing | None = None, on_exceed: OnEscalate = "halt",
                 agent: str = "agent", name: str = "budget",
                 clock: Clock = system_clock) -> None:
        from relaygraph.guards._budget import _limit

        super().__init__()
        self.max_tokens = _limit("max_tokens", max_tokens, integer=True)
        self.max_cost = _limit("max_cost", max_cost, integer=False)
        if self.max_tokens is None and self.max_cost is None:
            raise ConfigurationError("BudgetMiddleware needs max_tokens, max_cost or both")
        self.pricing = pricing or Pricing()
        self.on_exceed = _check_escalate(on_exceed)
        self.agent = agent
        self._name = _check_name(name)
        self.clock = clock

    @property
    def name(self) -> str:
        return f"relaygraph_{self._name}"

    # Usage is recorded around the model call itself, in the model node's own update: an
    # after_model hook would be skipped when another middleware's hook jumps (a retry).
    def _usage(self, response: Any) -> dict[str, Any]:
        table: dict[str, Usage] = {}
        messages = response.result if isinstance(response, ModelResponse) else [response]
        for msg in messages:
            if not isinstance(msg, AIMessage) or msg.usage_metadata is None:
                continue
            model = str((msg.response_metadata or {}).get("model_name")
                        or (msg.response_metadata or {}).get("model") or "unknown")
            tin = int(msg.usage_metadata["input_tokens"])
            tout = int(msg.usage_metadata["output_tokens"])
            cur = table.setdefault(model, Usage(calls=0, input_tokens=0, output_tokens=0,
                                                cost=0.0))
            cur["calls"] += 1
            cur["input_tokens"] += tin
            cur["output_tokens"] += tout
            cur["cost"] += self.pricing.cost(model, tin, tout)
        return {self.agent: table} if table else {}

    def _extend(self, response: Any) -> Any:
        if isinstance(response, ExtendedModelResponse):
            inner, command = response.model_response, response.command
        else:
            inner, command = response, None
        usage = self._usage(inner)
        if not usage or (command is not None and not isinstance(command.update, dict)):
            return response  # nothing to add, or an inner command we cannot merge into
        update = dict(command.update) if command is not None else {}  # type: ignore[arg-type]
        update["usage"] = usage
        model_response = inner if isinstance(inner, ModelResponse) else ModelResponse(
            result=[inner])
        return ExtendedModelResponse(model_response=model_response,
                                     command=Command(update=update))

    def wrap_model_call(self, request: Any, handler: Any) -> Any:
        return self._extend(handler(request))

    async def awrap_model_call(self, request: Any, handler: Any) -> Any:
        return self._extend(await handler(request))

    @hook_config(can_jump_to=["end"])
    def before_model(self, state: Any, runtime: Any) -> dict[str, Any] | None:
        spent = [u for models in (state.get("usage") or {}).values() for u in models.values()]
        tokens = sum(u["input_tokens"] + u["output_tokens"] for u in spent)
        cost = sum(u["cost"] for u in spent)
        approvals = sum(1 for r in state.get("reviews") or []
                        if r.get("node") == self.name and r.get("decision") == "approve")
        scale = 1 + approvals
        shares = [x / (limit * scale) for x, limit in ((tokens, self.max_tokens),
                                                        (cost, self.max_cost)) if limit]
        share = max(shares)
        if share < 1.0:
            return None
        reason = (f"spent {tokens} tokens, {cost:.6f} in cost: over the budget "
                  f"(max_tokens={self.max_tokens}, max_cost={self.max_cost}"
                  + (f", extended {approvals}x by a reviewer" if approvals else "") + ")")
        decision = GuardDecision(guard=self._name, score=share, threshold=1.0,
                                 failed_checks=["budget"], route="halt" if
                                 self.on_exceed == "halt" else "escalate",
                                 breaker_state=None, at=iso(self.clock()), reason=reason)
        if self.on_exceed == "halt":
            return {"guard_log": [decision], "jump_to": "end",
                    "messages": [AIMessage(f"Stopped: {reason}.", name=self._name)]}
        request = {"subject": "usage", "value": {"tokens": tokens, "cost": cost},
                   "guard": self._name, "guard_route": "escalate", "guard_reason": reason,
                   "policy_reason": "over budget: approve one more budget, or end the run"}
        root, record = _review(request, self.name, ("approve", "reject"), self.clock)
        if root.action == "approve":
            return {"guard_log": [decision], "reviews": [record]}
        return {"guard_log": [decision], "reviews": [record], "jump_to": "end",
                "messages": [AIMessage(f"Stopped: {reason}; a reviewer declined more.",
                                       name=self._name)]}
