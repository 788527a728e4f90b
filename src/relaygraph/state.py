"""The shared state vocabulary: record types, reducers and the `RelayState` mixin.

The lowest layer of relaygraph: every component (nodes, guards, graphs, observe, serve)
imports it, and it imports none of them. ``relaygraph.graphs`` re-exports these names.

Every relaygraph node writes under one of four documented keys, each with a reducer, so
that any `StateGraph` can include them by mixing `RelayState` into its own schema::

    class MyState(RelayState):
        messages: Annotated[list[AnyMessage], add_messages]
        case: RefundCase | None

Records are TypedDicts (plain dicts at run time): they round-trip through any serializer,
show up as JSON in LangServe responses and survive a strict msgpack allowlist.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, NotRequired

from typing_extensions import TypedDict


class GuardDecision(TypedDict):
    """One verdict of a guard node, appended to ``guard_log``."""

    guard: str
    score: float | None
    threshold: float | None
    failed_checks: list[str]
    route: str
    breaker_state: str | None
    at: str
    reason: NotRequired[str]
    attempt: NotRequired[int]
    goto: NotRequired[str]  # the node the guard sent the run to; ``route`` names the outcome


class VerbatimCheck(TypedDict):
    """The verbatim check of one contract field against the handoff source."""

    passed: bool
    value: str
    provenance: NotRequired[dict[str, Any] | None]  # {"message": i, "start": a, "end": b}
    reason: NotRequired[str]


class HandoffReport(TypedDict):
    """What one `handoff()` did, appended to ``handoffs``."""

    contract: str
    source_tokens: int
    brief_tokens: int
    ratio: float
    fields: list[str]
    verbatim: dict[str, VerbatimCheck]
    repairs: int
    failure: str | None
    at: str
    compressor: NotRequired[str]
    latency_ms: NotRequired[float]
    node: NotRequired[str]
    tokenizer: NotRequired[str]
    failed_fields: NotRequired[list[str]]
    draft: NotRequired[dict[str, Any] | None]  # the last rejected compressor output
    source_ref: NotRequired[str | None]  # archive key of the raw source (recall tool)


class ReconcileReport(TypedDict):
    """What one `reconcile()` did with N candidate contracts, appended to ``reconciles``."""

    node: str
    contract: str | None
    candidates: int
    sources: list[str]
    agreement: dict[str, float]  # field -> share of candidates in the winning group
    conflicts: list[str]
    resolution: Literal["agreed", "majority", "judge", "review", "failed"]
    dissent: dict[str, list[dict[str, Any]]]  # field -> [{"source", "value"}] overruled
    failure: str | None
    at: str
    decisions: NotRequired[dict[str, Any]]  # field -> value chosen by a judge or reviewer
    reviewer: NotRequired[str | None]  # who decided, when a human did
    comment: NotRequired[str | None]


ReviewAction = Literal["approve", "edit", "reject"]


class ReviewRecord(TypedDict):
    """One human review (or one policy skip), appended to ``reviews``."""

    node: str
    request: dict[str, Any]
    decision: ReviewAction | Literal["skipped"]
    edits: dict[str, Any]
    reviewer: str | None
    comment: str | None
    policy_reason: str
    at: str
    reason: NotRequired[str | None]
    """Why a reviewer rejected (``reject`` only)."""
    attempts: NotRequired[int]
    """How many resume values it took to get a valid decision (1 = first was valid)."""


class Usage(TypedDict):
    """Token and money totals for one (agent, model) pair."""

    calls: int
    input_tokens: int
    output_tokens: int
    cost: float


UsageTable = dict[str, dict[str, Usage]]
"""``usage[agent][model] -> Usage``."""


class AgentRun(TypedDict):
    """One call of an agent node wrapped by ``track_agent()``, appended to ``agent_runs``."""

    agent: str
    node: str
    input_keys: list[str]
    output_keys: list[str]
    tool_calls: list[str]
    models: list[str]
    calls: int
    input_tokens: int
    output_tokens: int
    cost: float
    latency_ms: float
    at: str
    pricing_as_of: NotRequired[str | None]
    error: NotRequired[str | None]


def append_records(left: list[Any] | None, right: list[Any] | Any | None) -> list[Any]:
    """Reducer for the append-only record channels. Accepts one record or a list."""
    base = list(left or [])
    if right is None:
        return base
    if isinstance(right, list):
        return base + right
    return base + [right]


def merge_usage(left: UsageTable | None, right: UsageTable | None) -> UsageTable:
    """Reducer for ``usage``: sums calls, tokens and cost per agent and model.

    Returns a new table; neither argument is mutated.
    """
    out: UsageTable = {agent: {m: dict(u) for m, u in models.items()}  # type: ignore[misc]
                       for agent, models in (left or {}).items()}
    for agent, models in (right or {}).items():
        slot = out.setdefault(agent, {})
        for model, u in models.items():
            cur = slot.get(model)
            if cur is None:
                slot[model] = Usage(
                    calls=int(u.get("calls", 0)),
                    input_tokens=int(u.get("input_tokens", 0)),
                    output_tokens=int(u.get("output_tokens", 0)),
                    cost=float(u.get("cost", 0.0)),
                )
            else:
                slot[model] = Usage(
                    calls=cur["calls"] + int(u.get("calls", 0)),
                    input_tokens=cur["input_tokens"] + int(u.get("input_tokens", 0)),
                    output_tokens=cur["output_tokens"] + int(u.get("output_tokens", 0)),
                    cost=cur["cost"] + float(u.get("cost", 0.0)),
                )
    return out


def merge_dicts(left: dict[str, Any] | None, right: dict[str, Any] | None) -> dict[str, Any]:
    """Reducer that overlays ``right`` on ``left`` (a new dict; neither is mutated)."""
    return {**(left or {}), **(right or {})}


class RelayState(TypedDict, total=False):
    """Mixin with relaygraph's record channels. Subclass it to add your own keys."""

    guard_log: Annotated[list[GuardDecision], append_records]
    handoffs: Annotated[list[HandoffReport], append_records]
    reconciles: Annotated[list[ReconcileReport], append_records]
    reviews: Annotated[list[ReviewRecord], append_records]
    usage: Annotated[UsageTable, merge_usage]
    agent_runs: Annotated[list[AgentRun], append_records]
    guard_feedback: Annotated[dict[str, str], merge_dicts]
    """Why the last guard sent an agent back (``agent -> reason``); read by retried agents."""


__all__ = [
    "AgentRun",
    "GuardDecision",
    "HandoffReport",
    "ReconcileReport",
    "RelayState",
    "ReviewAction",
    "ReviewRecord",
    "Usage",
    "UsageTable",
    "VerbatimCheck",
    "append_records",
    "merge_dicts",
    "merge_usage",
]
