"""``HumanReview``: a durable human checkpoint with graduated autonomy.

The node pauses the run with LangGraph's ``interrupt()``, handing out a
:class:`ReviewRequest` (as a plain dict), and resumes with a decision: approve, edit
(field edits validated against the contract) or reject. A resume value that is not a
valid decision does not fail the run and is not lost: the node asks again with a second
``interrupt()`` that carries the validation error (LangGraph matches resume values to
the interrupts of one node by their order, so every earlier answer is replayed and
re-validated on each resume). :func:`submit_review` validates a decision *before*
resuming, so bad input from an API caller changes nothing at all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Final, Literal

from langchain_core.runnables import Runnable, RunnableConfig, ensure_config
from langgraph.errors import GraphInterrupt
from langgraph.types import Command, interrupt
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    RootModel,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from relaygraph._clock import Clock, now_iso, system_clock
from relaygraph._errors import ConfigurationError, RelaygraphError
from relaygraph._graph import RoutingNode, declare_destinations
from relaygraph.nodes._autonomy import AutonomyPolicy, PolicyDecision
from relaygraph.observe._langsmith import annotate_run
from relaygraph.state import ReviewRecord

#: ``kind`` of every review request; tells a review pause apart from other interrupts.
REVIEW_KIND: Final = "human_review"

Action = Literal["approve", "edit", "reject"]
ACTIONS: tuple[Action, ...] = ("approve", "edit", "reject")


class ReviewError(RelaygraphError):
    """Base class of review errors."""


class InvalidReviewDecision(ReviewError, ValueError):
    """A decision that does not fit the request (shape, action or contract)."""


class NotWaitingForReview(ReviewError):
    """A decision was submitted for a thread that is not paused at a review."""


# --------------------------------------------------------------------------- payloads


class ReviewRequest(BaseModel):
    """What a reviewer sees; handed out by ``interrupt()`` as ``model_dump(mode="json")``.

    Attributes:
        kind: always ``"human_review"``.
        node: the review node's name.
        subject: the state key under review.
        agent: the agent whose output is reviewed (for the autonomy policy).
        decision_kind: the kind of decision (for the autonomy policy).
        contract: class name of the contract under review, if it is one.
        value: the output under review, as JSON data.
        provenance: per-field verbatim checks of the latest handoff report of this
            contract (``field -> {passed, value, provenance}``).
        handoff: summary of that handoff report (repairs, failure, ratio, at).
        confidence: the score of the latest guard decision.
        guard, guard_route, guard_reason, failed_checks: the latest guard decision.
        actions: what the reviewer may do.
        policy_reason: why the autonomy policy asked for this review.
        error: why the previous answer was refused (re-asks only).
        attempt: 1 on the first ask, 2 after one refused answer, ...
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["human_review"] = REVIEW_KIND
    node: str
    subject: str
    agent: str
    decision_kind: str = "default"
    contract: str | None = None
    value: Any = None
    provenance: dict[str, Any] | None = None
    handoff: dict[str, Any] | None = None
    confidence: float | None = None
    guard: str | None = None
    guard_route: str | None = None
    guard_reason: str | None = None
    failed_checks: list[str] = Field(default_factory=list)
    actions: list[Action] = Field(default_factory=lambda: list(ACTIONS))
    policy_reason: str = ""
    error: str | None = None
    attempt: int = 1
    previous: Any = None


class _DecisionBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reviewer: str | None = Field(default=None, max_length=200)
    comment: str | None = Field(default=None, max_length=5000)


class ApproveDecision(_DecisionBase):
    """Approve the output as it is."""

    action: Literal["approve"] = "approve"


class EditDecision(_DecisionBase):
    """Approve with field edits, validated against the contract under review."""

    action: Literal["edit"] = "edit"
    edits: dict[str, Any] = Field(min_length=1)


class RejectDecision(_DecisionBase):
    """Reject the output. ``reason`` (or, failing that, ``comment``) says why."""

    action: Literal["reject"] = "reject"
    reason: str | None = Field(default=None, max_length=5000)

    @model_validator(mode="after")
    def _needs_reason(self) -> RejectDecision:
        if not (self.reason or "").strip():
            if not (self.comment or "").strip():
                raise ValueError("a rejection needs a reason: {'action': 'reject', "
                                 "'reason': '...'}")
            self.reason = self.comment
        return self


AnyDecision = Annotated[ApproveDecision | EditDecision | RejectDecision,
                        Field(discriminator="action")]


class ReviewDecision(RootModel[AnyDecision]):
    """A reviewer's answer, discriminated by ``action``.

    Example:
        >>> ReviewDecision.model_validate({"action": "edit", "edits": {"amount": "12.40"},
        ...                                "reviewer": "ann"}).action
        'edit'
        >>> ReviewDecision.reject("wrong customer", reviewer="bob").root.reason
        'wrong customer'
    """

    @property
    def action(self) -> Action:
        """``approve``, ``edit`` or ``reject``."""
        return self.root.action

    @classmethod
    def approve(cls, *, reviewer: str | None = None, comment: str | None = None
                ) -> ReviewDecision:
        """An approval."""
        return cls(ApproveDecision(reviewer=reviewer, comment=comment))

    @classmethod
    def edit(cls, edits: Mapping[str, Any], *, reviewer: str | None = None,
             comment: str | None = None) -> ReviewDecision:
        """An approval with field edits."""
        return cls(EditDecision(edits=dict(edits), reviewer=reviewer, comment=comment))

    @classmethod
    def reject(cls, reason: str, *, reviewer: str | None = None, comment: str | None = None
               ) -> ReviewDecision:
        """A rejection with its reason."""
        return cls(RejectDecision(reason=reason, reviewer=reviewer, comment=comment))

    def to_resume(self) -> dict[str, Any]:
        """The plain dict to pass as ``Command(resume=...)``."""
        return self.root.model_dump(mode="json", exclude_none=True)


_DECISION = TypeAdapter(ReviewDecision)


def _short(value: Any, width: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def _errors(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()))
        parts.append(f"{loc}: {err.get('msg')}" if loc else str(err.get("msg")))
    return "; ".join(parts)


def parse_decision(raw: Any, actions: Sequence[str] = ACTIONS) -> ReviewDecision:
    """Validate a resume value's shape and action. Raises :class:`InvalidReviewDecision`."""
    if isinstance(raw, ReviewDecision):
        decision = raw
    else:
        if isinstance(raw, BaseModel):
            raw = raw.model_dump(mode="json", exclude_none=True)
        if isinstance(raw, Mapping):
            # Tolerate what generic forms send: a transport id, absent fields as None, and
            # an empty ``edits`` with approve/reject. Anything else unknown is refused.
            raw = {k: v for k, v in raw.items() if k != "interrupt_id" and v is not None
                   and not (k == "edits" and v == {} and raw.get("action") != "edit")}
        try:
            decision = _DECISION.validate_python(raw)
        except ValidationError as exc:
            raise InvalidReviewDecision(
                f"the resume value is not a review decision ({_errors(exc)}); expected "
                f"{{'action': 'approve' | 'edit' | 'reject', 'edits': {{...}} for edit, "
                f"'reason': '...' for reject, 'reviewer': ..., 'comment': ...}}, "
                f"got {_short(raw)}"
            ) from exc
    if decision.action not in actions:
        raise InvalidReviewDecision(
            f"action {decision.action!r} is not allowed here; allowed: {list(actions)}"
        )
    return decision


# --------------------------------------------------------------------------- the node


def _latest(state: Mapping[str, Any], key: str) -> Mapping[str, Any] | None:
    records = state.get(key) or []
    return records[-1] if isinstance(records, list) and records else None


def _dump(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, Mapping):
        return {str(k): _dump(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_dump(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def _state_dict(state: Any) -> Mapping[str, Any]:
    if isinstance(state, Mapping):
        return state
    if isinstance(state, BaseModel):
        return {k: getattr(state, k) for k in type(state).model_fields}
    return vars(state)


class HumanReview(RoutingNode, Runnable[Any, Command]):
    """A node that asks a human to approve, edit or reject one output.

    Args:
        subject: the state key holding the output under review (a contract instance, a
            dict, or any JSON-able value).
        on_approve: node to go to after an approval (or a review the policy skipped).
        on_reject: node to go to after a rejection.
        on_edit: node to go to after an edit (default: ``on_approve``).
        contract: the pydantic class edits are validated against (default: the class of
            the value under review, when it is a pydantic model).
        agent: the agent whose output this is, for the autonomy policy and the
            rejection feedback (default: ``subject``).
        kind: the decision kind, for the autonomy policy.
        policy: an :class:`~relaygraph.nodes.AutonomyPolicy`; without one every decision
            is reviewed.
        actions: the actions the reviewer may take.
        feedback_key: state key (a ``merge_dicts`` channel) where a rejection's reason is
            written for the agent (``RelayState.guard_feedback``); None to skip.
        name: the node name used in records when LangGraph does not provide one.
        clock: wall clock for timestamps.

    Without ``on_*`` routes the node returns a plain update and the graph's edges decide.

    Example:
        >>> builder.add_node("review", HumanReview("case", on_approve="crm",  # doctest: +SKIP
        ...                  on_reject="resolver", policy=policy))
    """

    def __init__(self, subject: str, *, on_approve: str | None = None,
                 on_reject: str | None = None, on_edit: str | None = None,
                 contract: type[BaseModel] | None = None, agent: str | None = None,
                 kind: str = "default", policy: AutonomyPolicy | None = None,
                 actions: Sequence[Action] = ACTIONS,
                 feedback_key: str | None = "guard_feedback", name: str = "review",
                 clock: Clock = system_clock) -> None:
        if not isinstance(subject, str) or not subject:
            raise ConfigurationError(f"subject must be a state key (a non-empty string), "
                                     f"got {subject!r}")
        for label, route in (("on_approve", on_approve), ("on_reject", on_reject),
                             ("on_edit", on_edit)):
            if route is not None and (not isinstance(route, str) or not route):
                raise ConfigurationError(f"{label} must be a node name, got {route!r}")
        if contract is not None and not (isinstance(contract, type)
                                         and issubclass(contract, BaseModel)):
            raise ConfigurationError(f"contract must be a pydantic model class, got {contract!r}")
        actions = tuple(actions)
        unknown = [a for a in actions if a not in ACTIONS]
        if unknown or not actions:
            raise ConfigurationError(
                f"actions must be a non-empty subset of {list(ACTIONS)}, got {list(actions)}")
        if policy is not None and not isinstance(policy, AutonomyPolicy):
            raise ConfigurationError(
                f"policy must be an AutonomyPolicy, got {type(policy).__name__}")
        self.subject = subject
        self.on_approve = on_approve
        self.on_reject = on_reject
        self.on_edit = on_edit if on_edit is not None else on_approve
        self.contract = contract
        self.agent = agent or subject
        self.kind = kind
        self.policy = policy
        self.actions: tuple[Action, ...] = actions
        self.feedback_key = feedback_key
        self.name = name
        self.clock = clock
        #: the nodes this review can route to; ``StateGraph.add_node`` reads them, so
        #: ``compile()`` rejects a route that names no node
        self.destinations = declare_destinations(self, (on_approve, on_reject, self.on_edit))

    def __repr__(self) -> str:
        return (f"HumanReview({self.subject!r}, on_approve={self.on_approve!r}, "
                f"on_reject={self.on_reject!r})")

    # -- validation (shared by the node and submit_review)

    def contract_for(self, value: Any) -> type[BaseModel] | None:
        """The class edits are validated against for this value."""
        if self.contract is not None:
            return self.contract
        return type(value) if isinstance(value, BaseModel) else None

    def apply(self, decision: ReviewDecision, value: Any) -> Any:
        """The value after the decision (edits validated). Raises InvalidReviewDecision."""
        root = decision.root
        if not isinstance(root, EditDecision):
            return value
        return apply_edits(value, root.edits, self.contract_for(value))

    def validate(self, raw: Any, value: Any) -> tuple[ReviewDecision, Any]:
        """Parse a resume value and apply it to ``value``: ``(decision, new value)``."""
        decision = parse_decision(raw, self.actions)
        return decision, self.apply(decision, value)

    # -- the node

    def _context(self, config: RunnableConfig) -> tuple[str, str | None]:
        node = str((config.get("metadata") or {}).get("langgraph_node") or self.name)
        conf = config.get("configurable") or {}
        thread = conf.get("thread_id")
        key = f"{thread}|{conf.get('checkpoint_ns', '')}|{node}" if thread is not None else None
        return node, key

    def build_request(self, state: Mapping[str, Any], node: str, policy_reason: str
                      ) -> ReviewRequest:
        """The request for this state (latest guard decision and handoff report included)."""
        value = state.get(self.subject)
        contract = self.contract_for(value)
        contract_name = contract.__name__ if contract is not None else None
        handoff = None
        for report in reversed(state.get("handoffs") or []):
            if contract_name is None or report.get("contract") == contract_name:
                handoff = report
                break
        guard = _latest(state, "guard_log")
        return ReviewRequest(
            node=node, subject=self.subject, agent=self.agent, decision_kind=self.kind,
            contract=contract_name, value=_dump(value),
            provenance=_dump(handoff.get("verbatim")) if handoff else None,
            handoff=({k: _dump(handoff.get(k)) for k in
                      ("contract", "repairs", "failure", "ratio", "at", "node")
                      if k in handoff} if handoff else None),
            confidence=guard.get("score") if guard else None,
            guard=guard.get("guard") if guard else None,
            guard_route=guard.get("route") if guard else None,
            guard_reason=(guard.get("reason") or (", ".join(guard.get("failed_checks") or [])
                                                  or None)) if guard else None,
            failed_checks=list(guard.get("failed_checks") or []) if guard else [],
            actions=list(self.actions), policy_reason=policy_reason,
        )

    def _ask(self, request: ReviewRequest, value: Any) -> tuple[ReviewDecision, Any, int]:
        payload = request.model_dump(mode="json")
        attempt = 1
        while True:
            try:
                raw = interrupt(payload)
            except GraphInterrupt:
                # The run pauses here: mark its trace as a requested review.
                annotate_run({"review_node": request.node, "review": "requested",
                              "agent": self.agent, "review_attempt": attempt,
                              "review_policy_reason": request.policy_reason,
                              "guard_route": request.guard_route},
                             tags=["relaygraph:review:requested"])
                raise
            try:
                decision, new_value = self.validate(raw, value)
                return decision, new_value, attempt
            except InvalidReviewDecision as exc:
                attempt += 1
                payload = {**request.model_dump(mode="json"), "error": str(exc),
                           "attempt": attempt, "previous": _dump(raw)}

    def _skip(self, request: ReviewRequest, node: str) -> Command:
        record = ReviewRecord(node=node, request=request.model_dump(mode="json"),
                              decision="skipped", edits={}, reviewer=None, comment=None,
                              policy_reason=request.policy_reason, at=now_iso(self.clock))
        annotate_run({"review_node": node, "review": "skipped", "agent": self.agent,
                      "review_policy_reason": request.policy_reason,
                      "guard_route": request.guard_route},
                     tags=["relaygraph:review:skipped"])
        return self._command(self.on_approve, {"reviews": [record]})

    def _finish(self, request: ReviewRequest, node: str, decision: ReviewDecision,
                new_value: Any, attempts: int) -> Command:
        root = decision.root
        record = ReviewRecord(
            node=node, request=request.model_dump(mode="json"), decision=root.action,
            edits=dict(root.edits) if isinstance(root, EditDecision) else {},
            reviewer=root.reviewer, comment=root.comment, policy_reason=request.policy_reason,
            at=now_iso(self.clock), attempts=attempts,
        )
        update: dict[str, Any] = {"reviews": [record]}
        if isinstance(root, EditDecision):
            update[self.subject] = new_value
            goto = self.on_edit
        elif isinstance(root, RejectDecision):
            record["reason"] = root.reason
            if self.feedback_key:
                update[self.feedback_key] = {self.agent: f"rejected by reviewer: {root.reason}"}
            goto = self.on_reject
        else:
            goto = self.on_approve
        annotate_run({"review_node": node, "review": root.action, "reviewer": root.reviewer,
                      "agent": self.agent, "review_policy_reason": request.policy_reason,
                      "guard_route": request.guard_route, "review_attempts": attempts},
                     tags=[f"relaygraph:review:{root.action}"])
        return self._command(goto, update)

    @staticmethod
    def _command(goto: str | None, update: dict[str, Any]) -> Command:
        return Command(goto=goto, update=update) if goto else Command(update=update)

    def _policy_reason(self, decision: PolicyDecision | None) -> str:
        if decision is None:
            return "review: no autonomy policy, every output is reviewed"
        return decision.reason

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Command:
        """Run the review step (sync)."""
        config = ensure_config(config)
        state = _state_dict(input)
        node, key = self._context(config)
        decided = self.policy.decide(self.agent, self.kind, key=key) if self.policy else None
        request = self.build_request(state, node, self._policy_reason(decided))
        if decided is not None and not decided.review:
            return self._skip(request, node)
        decision, new_value, attempts = self._ask(request, state.get(self.subject))
        if self.policy is not None:
            self.policy.record(self.agent, self.kind, decision.action, key=key)
        return self._finish(request, node, decision, new_value, attempts)

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None,
                      **kwargs: Any) -> Command:
        """Run the review step (async)."""
        config = ensure_config(config)
        state = _state_dict(input)
        node, key = self._context(config)
        decided = (await self.policy.adecide(self.agent, self.kind, key=key)
                   if self.policy else None)
        request = self.build_request(state, node, self._policy_reason(decided))
        if decided is not None and not decided.review:
            return self._skip(request, node)
        decision, new_value, attempts = self._ask(request, state.get(self.subject))
        if self.policy is not None:
            await self.policy.arecord(self.agent, self.kind, decision.action, key=key)
        return self._finish(request, node, decision, new_value, attempts)


def apply_edits(value: Any, edits: Mapping[str, Any], contract: type[BaseModel] | None) -> Any:
    """``value`` with ``edits`` applied and validated against ``contract``.

    A pydantic value comes back as a new instance, a dict as a dict of JSON data.
    Raises :class:`InvalidReviewDecision` naming the fields that break the contract.
    """
    if isinstance(value, BaseModel):
        current: dict[str, Any] = value.model_dump()
    elif isinstance(value, Mapping):
        current = dict(value)
    elif value is None and contract is not None:
        # nothing to correct (e.g. a handoff that failed): the edits must fill the contract
        current = {}
    else:
        raise InvalidReviewDecision(
            f"edits need a field-by-field value under review; the value is {_short(value, 80)}"
            f" — approve or reject it instead")
    if contract is not None:
        unknown = sorted(set(edits) - set(contract.model_fields))
    else:
        unknown = sorted(set(edits) - set(current))
    if unknown:
        known = sorted(contract.model_fields if contract is not None else current)
        raise InvalidReviewDecision(
            f"edits name unknown fields {unknown}; fields: {known}")
    merged = {**current, **edits}
    if contract is None:
        return merged
    try:
        validated = contract.model_validate(merged)
    except ValidationError as exc:
        raise InvalidReviewDecision(
            f"edits break the contract {contract.__name__}: {_errors(exc)}") from exc
    if isinstance(value, BaseModel) or value is None:
        return validated
    return validated.model_dump(mode="json")


# --------------------------------------------------------------------------- submitting


def _thread(config: Mapping[str, Any]) -> str:
    return str((config.get("configurable") or {}).get("thread_id"))


def pending_reviews(snapshot: Any) -> list[tuple[str, str, dict[str, Any]]]:
    """``(interrupt_id, task_name, request)`` for each review a state snapshot waits on."""
    found = []
    for task in snapshot.tasks:
        for intr in task.interrupts:
            value = intr.value
            if isinstance(value, Mapping) and value.get("kind") == REVIEW_KIND:
                found.append((intr.id, task.name, dict(value)))
    return found


def _select(graph: Any, snapshot: Any, config: Mapping[str, Any], interrupt_id: str | None
            ) -> tuple[str, str, dict[str, Any]]:
    pending = pending_reviews(snapshot)
    if not pending:
        other = sum(len(t.interrupts) for t in snapshot.tasks)
        raise NotWaitingForReview(
            f"thread {_thread(config)!r} is not waiting for a review (next: "
            f"{list(snapshot.next) or 'nothing, the run is finished or never started'}"
            f"{f', {other} other interrupt(s)' if other else ''}); nothing was changed")
    if interrupt_id is not None:
        for item in pending:
            if item[0] == interrupt_id:
                return item
        raise NotWaitingForReview(
            f"thread {_thread(config)!r} has no pending review with interrupt id "
            f"{interrupt_id!r}; pending: {[p[0] for p in pending]}")
    if len(pending) > 1:
        raise InvalidReviewDecision(
            f"thread {_thread(config)!r} waits on {len(pending)} reviews; pass interrupt_id, "
            f"one of {[p[0] for p in pending]}")
    return pending[0]


def _node_for(graph: Any, name: str) -> HumanReview | None:
    builder = getattr(graph, "builder", None)
    spec = getattr(builder, "nodes", {}).get(name) if builder is not None else None
    runnable = getattr(spec, "runnable", None)
    return runnable if isinstance(runnable, HumanReview) else None


def _prepare(graph: Any, snapshot: Any, config: Mapping[str, Any], decision: Any,
             interrupt_id: str | None) -> Command:
    intr_id, task_name, request = _select(graph, snapshot, config, interrupt_id)
    actions = request.get("actions") or ACTIONS
    node = _node_for(graph, task_name)
    parsed = parse_decision(decision, actions)
    if node is not None:
        node.apply(parsed, (snapshot.values or {}).get(node.subject))
    elif isinstance(parsed.root, EditDecision):
        apply_edits(request.get("value"), parsed.root.edits, None)
    return Command(resume={intr_id: parsed.to_resume()})


def submit_review(graph: Any, config: Mapping[str, Any], decision: Any, *,
                  interrupt_id: str | None = None) -> Any:
    """Validate a review decision and resume the thread with it.

    The decision is checked against the pending request (shape, allowed action, edits
    against the contract) before anything is written, so a bad decision raises and leaves
    the thread exactly as it was.

    Args:
        graph: the compiled graph (with its checkpointer).
        config: ``{"configurable": {"thread_id": ...}}``.
        decision: a :class:`ReviewDecision` or a dict like ``{"action": "approve"}``.
        interrupt_id: which review to answer when the thread waits on several.

    Returns:
        What ``graph.invoke`` returns for the resumed run.

    Raises:
        NotWaitingForReview: the thread is not paused at a review.
        InvalidReviewDecision: the decision does not fit the request.
    """
    snapshot = graph.get_state(config)
    command = _prepare(graph, snapshot, config, decision, interrupt_id)
    return graph.invoke(command, config)


async def asubmit_review(graph: Any, config: Mapping[str, Any], decision: Any, *,
                         interrupt_id: str | None = None) -> Any:
    """Async twin of :func:`submit_review`."""
    snapshot = await graph.aget_state(config)
    command = _prepare(graph, snapshot, config, decision, interrupt_id)
    return await graph.ainvoke(command, config)
