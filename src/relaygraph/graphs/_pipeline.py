"""``pipeline()``: agent → handoff(contract) → guard → agent → …, with human review as fallback.

The common shape of a reliable multi-agent workflow, wired in one call::

    builder = pipeline(
        Agent("intake", intake),
        Handoff("to_resolver", RefundCase, source="messages", target="case",
                compressor=model),
        Guard("check", score="case.confidence", threshold=0.8, max_retries=1),
        Agent("resolver", resolver),
        Review("review", subject="resolution"),
        state_schema=RefundState,
    )
    graph = builder.compile(checkpointer=saver)

Each stage goes to the next one when it succeeds. A handoff that cannot fill its contract
and a guard that escalates go to a human review of that stage (``<stage>_review``), which
continues the pipeline when approved (for a failed handoff: when the reviewer fills the
contract with an edit) and ends the run when rejected; a guard's retries go back to the
agent before it.
Every relaygraph record (guard decisions, handoff reports, reviews, usage) lands in the
``RelayState`` keys of the state.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import UnionType
from typing import Annotated, Any

from langchain_core.messages import AnyMessage
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from typing_extensions import TypedDict

from relaygraph._errors import ConfigurationError
from relaygraph.guards import BreakerGate, BudgetGuard, ConfidenceGuard
from relaygraph.nodes import HandoffState, HumanReview, handoff, track_agent
from relaygraph.state import RelayState


@dataclass(frozen=True)
class Agent:
    """An agent stage: any LangGraph node (function, runnable, compiled subgraph).

    Attributes:
        name: the node name (also the agent name in ``usage``).
        node: the node itself; it returns a state update.
        track: wrap it with ``relaygraph.nodes.track_agent`` so its tokens, cost and run
            record are kept in state.
        options: extra keyword arguments for ``track_agent`` (e.g. ``pricing``).
    """

    name: str
    node: Any
    track: bool = True
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, init=False)
class Handoff:
    """A handoff stage: ``relaygraph.nodes.handoff(contract, **options)``.

    ``on_success`` is the next stage and ``on_failure`` this stage's human review; every
    other argument of ``handoff()`` (``source``, ``target``, ``compressor``,
    ``brief_to``, ``max_repairs``, ...) is passed through.
    """

    name: str
    contract: type
    options: Mapping[str, Any]

    def __init__(self, name: str, contract: type, **options: Any) -> None:
        for route in ("on_success", "on_failure"):
            if route in options:
                raise ConfigurationError(
                    f"Handoff {name!r}: {route} is wired by pipeline(); remove it, got "
                    f"{route}={options[route]!r}")
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "contract", contract)
        object.__setattr__(self, "options", dict(options))

    @property
    def target(self) -> str:
        """The state key that receives the contract."""
        return str(self.options.get("target", ""))


@dataclass(frozen=True, init=False)
class Guard:
    """A guard stage: ``relaygraph.guards.ConfidenceGuard(**options)``.

    ``on_pass`` is the next stage, ``on_retry`` the nearest agent before the guard and
    ``on_escalate`` this stage's human review, unless given explicitly. Every other
    argument (``score``, ``threshold``, ``max_retries``, ``breaker``, ``checks``,
    ``on_halt``, ...) is passed through.

    With ``breaker=``, the agent the guard retries also gets a `BreakerGate`
    (``<agent>_gate``) in front of it: while the breaker is open the agent is skipped and
    a human fills its output in (``<agent>_gate_review``: edit or reject).
    """

    name: str
    options: Mapping[str, Any]

    def __init__(self, name: str, **options: Any) -> None:
        if "on_pass" in options:
            raise ConfigurationError(
                f"Guard {name!r}: on_pass is wired by pipeline() to the next stage; remove it")
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "options", dict(options))


@dataclass(frozen=True, init=False)
class Budget:
    """A budget stage: ``relaygraph.guards.BudgetGuard(**options)``.

    Placed before an expensive stage, it lets the run continue while the run's tokens and
    cost (``usage``) stay within ``max_tokens`` / ``max_cost``. Over budget, the run goes
    to this stage's human review (``<name>_review``, which may approve the extra spend or
    end the run), unless ``on_escalate`` or ``on_halt`` is given.
    """

    name: str
    options: Mapping[str, Any]

    def __init__(self, name: str, **options: Any) -> None:
        if "on_pass" in options:
            raise ConfigurationError(
                f"Budget {name!r}: on_pass is wired by pipeline() to the next stage; remove it")
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "options", dict(options))


@dataclass(frozen=True, init=False)
class Review:
    """An explicit human review stage: ``relaygraph.nodes.HumanReview(subject, **options)``.

    ``on_approve`` (and ``on_edit``) is the next stage; ``on_reject`` defaults to the end
    of the graph. ``agent`` defaults to the nearest agent before the review.
    """

    name: str
    subject: str
    options: Mapping[str, Any]

    def __init__(self, name: str, *, subject: str, **options: Any) -> None:
        if "on_approve" in options:
            raise ConfigurationError(
                f"Review {name!r}: on_approve is wired by pipeline() to the next stage; "
                "remove it")
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "subject", subject)
        object.__setattr__(self, "options", dict(options))


Stage = Agent | Handoff | Guard | Budget | Review


def _default_schema(stages: list[Stage]) -> type:
    """A state with ``messages``, the relaygraph keys and one key per handoff target."""
    fields: dict[str, Any] = dict(typing.get_type_hints(HandoffState, include_extras=True))
    fields["messages"] = Annotated[list[AnyMessage], add_messages]
    for st in stages:
        if isinstance(st, Handoff):
            fields[st.target] = st.contract | None
        elif isinstance(st, Review):
            fields.setdefault(st.subject, Any)
        elif isinstance(st, Guard) and (root := _guard_subject(st)):
            fields.setdefault(root, Any)
    return TypedDict("PipelineState", fields, total=False)  # type: ignore[operator]


def _check_schema(schema: type, stages: list[Stage]) -> None:
    try:
        hints = typing.get_type_hints(schema, include_extras=True)
    except Exception as exc:  # noqa: BLE001 - any failure means we cannot inspect it
        raise ConfigurationError(f"cannot read the annotations of state_schema {schema!r}: "
                                 f"{exc}") from exc
    required = set(typing.get_type_hints(RelayState))
    if any(isinstance(s, Handoff) for s in stages):
        required.add("handoff_sources")
        required |= {s.target for s in stages if isinstance(s, Handoff)}
    missing = sorted(required - set(hints))
    if missing:
        base = "HandoffState (relaygraph.nodes)" if "handoff_sources" in missing else \
            "RelayState (relaygraph.graphs)"
        raise ConfigurationError(
            f"state_schema {schema.__name__} lacks the keys {missing}; subclass {base} and "
            "declare each handoff target")
    bookkeeping = set(typing.get_type_hints(HandoffState))
    known = ", ".join(sorted(k for k in hints if k not in bookkeeping))
    for st in stages:
        if isinstance(st, Review) and st.subject not in hints:
            # a review of a key no node can write would ask a human to approve None
            raise ConfigurationError(
                f"Review {st.name!r}: subject {st.subject!r} is not a key of "
                f"{schema.__name__} (keys: {known}); fix the subject or declare the key")


def _validate(stages: list[Stage]) -> None:
    if not stages:
        raise ConfigurationError("pipeline() needs at least one stage, got none")
    names: set[str] = set()
    for st in stages:
        if not isinstance(st, Agent | Handoff | Guard | Budget | Review):
            raise ConfigurationError(
                "pipeline() stages are Agent, Handoff, Guard, Budget or Review, got "
                f"{type(st).__name__}: {st!r}")
        if not st.name or st.name in (START, END):
            raise ConfigurationError(f"invalid stage name {st.name!r}")
        for n in (st.name, f"{st.name}_review"):
            if n in names:
                raise ConfigurationError(f"two stages would both be called {n!r}; rename one")
        names.add(st.name)
        if isinstance(st, Handoff | Guard | Budget):
            names.add(f"{st.name}_review")
        if isinstance(st, Handoff) and not st.target:
            raise ConfigurationError(f"Handoff {st.name!r} needs target='<state key>'")
    for i, st in enumerate(stages):
        if isinstance(st, Guard) and "on_retry" not in st.options and \
                not any(isinstance(s, Agent) for s in stages[:i]):
            raise ConfigurationError(
                f"Guard {st.name!r} has no agent before it to retry; add one or pass "
                "on_retry=")
        if isinstance(st, Guard) and st.options.get("breaker") is not None:
            gated = _gated_agent(stages, i)
            if gated is None:
                raise ConfigurationError(
                    f"Guard {st.name!r} has a breaker but no agent stage to gate; the "
                    "breaker protects the agent the guard retries")
            for n in (f"{gated}_gate", f"{gated}_gate_review"):
                if n in names:
                    raise ConfigurationError(
                        f"two stages would both be called {n!r}; rename one")
                names.add(n)


def pipeline(
    *stages: Stage,
    state_schema: type | None = None,
    review_options: Mapping[str, Any] | None = None,
) -> StateGraph:
    """Build the graph ``stage 1 → stage 2 → …`` with human review as the fallback.

    Args:
        *stages: `Agent`, `Handoff`, `Guard`, `Budget` and `Review` stages, in order.
        state_schema: the graph state; it must include ``RelayState`` (and
            ``HandoffState`` plus every handoff target when there are handoffs). Default:
            a state with ``messages`` and those keys.
        review_options: extra ``HumanReview`` arguments for the fallback reviews that
            handoffs and guards escalate to (e.g. ``policy=``).

    Returns:
        An uncompiled ``StateGraph``; compile it with a checkpointer (human reviews pause
        the run and need one).

    Raises:
        ConfigurationError: no stages, duplicate names, a guard with no agent to retry, a
            state schema without the relaygraph keys, a guard score path or a review
            subject that the state schema does not have, or an argument the underlying
            node refuses.
    """
    items = list(stages)
    _validate(items)
    if state_schema is None:
        state_schema = _default_schema(items)
    else:
        _check_schema(state_schema, items)
    builder: StateGraph = StateGraph(state_schema)
    fallback_opts = dict(review_options or {})

    # an agent protected by a guard's breaker is entered through its gate
    gates: dict[str, Any] = {}
    for i, st in enumerate(items):
        if isinstance(st, Guard) and st.options.get("breaker") is not None:
            gated = _gated_agent(items, i)
            assert gated is not None  # _validate checked it
            gates[gated] = (st, i)

    def entry(name: str) -> str:
        return f"{name}_gate" if name in gates else name

    def next_of(i: int) -> str:
        return entry(items[i + 1].name) if i + 1 < len(items) else END

    def agent_before(i: int) -> str | None:
        for st in reversed(items[:i]):
            if isinstance(st, Agent):
                return st.name
        return None

    def after_reviews_of(i: int, subject: str) -> str:
        # A human who approved (or edited) an escalated draft has reviewed that draft: the
        # Review stages right after the guard that would ask about the same key are skipped.
        j = i + 1
        while j < len(items) and isinstance(items[j], Review) and \
                typing.cast(Review, items[j]).subject == subject:
            j += 1
        return entry(items[j].name) if j < len(items) else END

    for i, st in enumerate(items):
        nxt = next_of(i)
        if isinstance(st, Agent):
            node = track_agent(st.node, name=st.name, **st.options) if st.track else st.node
            builder.add_node(st.name, node)
            builder.add_edge(st.name, nxt)
        elif isinstance(st, Handoff):
            review = f"{st.name}_review"
            builder.add_node(st.name, handoff(st.contract, on_success=nxt, on_failure=review,
                                              name=st.options.get("name", st.name),
                                              **{k: v for k, v in st.options.items()
                                                 if k != "name"}),
                             destinations=(nxt, review))
            # a failed handoff leaves nothing to approve: the reviewer fills the contract
            # (edit) or stops the run (reject); bad data is never passed on
            _add_review(builder, HumanReview, review, st.target, nxt,
                        {"contract": st.contract, "agent": agent_before(i) or st.name,
                         "actions": ("edit", "reject"), **fallback_opts})
        elif isinstance(st, Guard):
            opts = dict(st.options)
            retry = opts.pop("on_retry", None) or agent_before(i)
            escalate = opts.pop("on_escalate", None) or f"{st.name}_review"
            halt = opts.get("on_halt")
            opts.setdefault("schema", state_schema)
            guard = ConfidenceGuard(name=opts.pop("name", st.name), on_pass=nxt,
                                    on_retry=retry, on_escalate=escalate, **opts)
            dests = tuple(d for d in (nxt, retry, escalate, halt) if d)
            builder.add_node(st.name, guard, destinations=dests)
            subject = _guard_subject(st) or _last_target(items[:i]) or "messages"
            if escalate == f"{st.name}_review":
                _add_review(builder, HumanReview, escalate, subject,
                            after_reviews_of(i, subject),
                            {"agent": retry or st.name, **fallback_opts})
        elif isinstance(st, Budget):
            opts = dict(st.options)
            escalate = opts.pop("on_escalate", None)
            if escalate is None and "on_halt" not in opts:
                escalate = f"{st.name}_review"
            budget = BudgetGuard(name=opts.pop("name", st.name), on_pass=nxt,
                                 on_escalate=escalate, **opts)
            builder.add_node(st.name, budget, destinations=budget.destinations)
            if escalate == f"{st.name}_review":
                # the reviewer approves the extra spend (the run continues) or ends the run
                _add_review(builder, HumanReview, escalate, "usage", nxt,
                            {"agent": agent_before(i) or st.name,
                             "actions": ("approve", "reject"), "kind": "budget",
                             **fallback_opts})
        else:
            opts = {"agent": agent_before(i) or st.name, **st.options}
            _add_review(builder, HumanReview, st.name, st.subject, nxt, opts)
    for agent, (guard_stage, gi) in gates.items():
        gate, review = f"{agent}_gate", f"{agent}_gate_review"
        builder.add_node(gate, BreakerGate(guard_stage.options["breaker"], on_allow=agent,
                                           on_block=review, name=gate),
                         destinations=(agent, review))
        # the agent is skipped: a human writes its output (edit) or stops the run (reject),
        # and the run continues after the guard that would have checked the agent
        subject = _guard_subject(guard_stage) or _last_target(items[:gi]) or "messages"
        gate_opts: dict[str, Any] = {"agent": agent, "actions": ("edit", "reject")}
        contract = _contract_of(state_schema, subject)
        if contract is not None:
            gate_opts["contract"] = contract
        _add_review(builder, HumanReview, review, subject, next_of(gi),
                    {**gate_opts, **fallback_opts})
    builder.add_edge(START, entry(items[0].name))
    return builder


def _contract_of(schema: Any, key: str) -> type | None:
    """The pydantic model a state key holds (``Draft | None`` → ``Draft``), if any."""
    from pydantic import BaseModel

    try:
        hint = typing.get_type_hints(schema).get(key)
    except Exception:  # noqa: BLE001 - unreadable annotations: no contract to validate with
        return None
    alts = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, UnionType) \
        else (hint,)
    models = [a for a in alts if isinstance(a, type) and issubclass(a, BaseModel)]
    return models[0] if len(models) == 1 else None


def _gated_agent(stages: Sequence[Stage], i: int) -> str | None:
    """The agent a guard's breaker protects: its ``on_retry``, else the agent before it."""
    st = stages[i]
    assert isinstance(st, Guard)
    named = st.options.get("on_retry")
    for cand in reversed(stages[:i]):
        if isinstance(cand, Agent) and (named is None or cand.name == named):
            return cand.name
    return None


def _guard_subject(st: Guard) -> str | None:
    score = st.options.get("score")
    if isinstance(score, str) and "." in score:
        return score.split(".", 1)[0]
    return None


def _last_target(stages: list[Stage]) -> str | None:
    for st in reversed(stages):
        if isinstance(st, Handoff):
            return st.target
    return None


def _add_review(builder: StateGraph, review_cls: Callable[..., Any], name: str, subject: str,
                on_approve: str, options: Mapping[str, Any]) -> None:
    opts = dict(options)
    on_reject = opts.pop("on_reject", END)
    node = review_cls(subject, on_approve=on_approve, on_reject=on_reject,
                      name=opts.pop("name", name), **opts)
    dests = tuple(dict.fromkeys(d for d in (on_approve, on_reject, opts.get("on_edit")) if d))
    builder.add_node(name, node, destinations=dests)
