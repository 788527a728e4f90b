"""``reconcile()``: one contract out of N candidates that may disagree.

Parallel agents (a fan-out with ``Send``) or N samples of one agent each produce a
contract; the candidates collect in a list channel. ``reconcile()`` compares them field
by field:

* ``Verbatim`` fields by their normalized values (``$1,234.50`` equals ``1234.5``,
  ``March 15, 2024`` equals ``2024-03-15``, ids modulo case), as the handoff check reads
  them;
* numbers within ``tolerance`` (absolute);
* text with ``comparer`` (default: equal modulo case and whitespace);
* anything else by its JSON form.

Fields where every candidate agrees are merged as they are. Conflicting fields follow the
policy: ``"majority"`` (a strict majority wins, the overruled values are recorded as
dissent; without a majority the conflict goes to a human), a judge (a callable or chat
model that sees the conflicting fields and the candidates' sources), or ``"review"`` (a
human sees the conflict side by side, with each candidate's provenance, in the same
request shape as :class:`HumanReview`, so the inbox lists it). Every run appends a
:class:`~relaygraph.state.ReconcileReport` to ``reconciles``.
"""

from __future__ import annotations

import inspect
import json
import re
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import HumanMessage
from langchain_core.runnables import Runnable, RunnableConfig, ensure_config
from langgraph.types import Command, interrupt
from pydantic import BaseModel, ValidationError

from relaygraph._clock import Clock, now_iso, system_clock
from relaygraph._errors import ConfigurationError, RelaygraphError
from relaygraph._graph import RoutingNode, declare_destinations
from relaygraph.nodes._contract import Contract
from relaygraph.nodes._review import (
    EditDecision,
    ReviewRequest,
    apply_edits,
    parse_decision,
)
from relaygraph.nodes._verbatim import Verbatim, parse_date, parse_number, resolve_kind
from relaygraph.state import ReconcileReport

__all__ = ["Judge", "ReconcileError", "ReconcileNode", "ReconcileReport", "reconcile"]

Comparer = Callable[[str, str], bool]
#: ``judge(request) -> {field: chosen value}``; ``request`` has ``contract``, ``fields``
#: (``field -> [{"source", "value"}]``) and ``sources`` (``source -> provenance``).
Judge = Callable[[dict[str, Any]], Mapping[str, Any]]
PolicyName = Literal["majority", "review"]


class ReconcileError(RelaygraphError):
    """Candidates that cannot be reconciled (none, or of different contract types)."""


def _default_comparer(a: str, b: str) -> bool:
    return " ".join(a.split()).casefold() == " ".join(b.split()).casefold()


def _norm_verbatim(value: Any, marker: Verbatim) -> Any:
    """The value as the verbatim check reads it (so equal facts compare equal)."""
    if value is None:
        return None
    if isinstance(value, list | tuple):
        return tuple(_norm_verbatim(v, marker) for v in value)
    kind = resolve_kind(value, marker)
    if kind == "number":
        if isinstance(value, int | float | Decimal) and not isinstance(value, bool):
            return ("number", Decimal(str(value)).normalize())
        parsed = parse_number(str(value))
        return ("number", parsed.normalize()) if parsed is not None else str(value)
    if kind == "date":
        if isinstance(value, datetime):
            return ("date", value.date())
        if isinstance(value, date):
            return ("date", value)
        parsed_date = parse_date(str(value), marker.dayfirst)
        return ("date", parsed_date) if parsed_date is not None else str(value)
    text = re.sub(r"\s+", " ", str(value)).strip().casefold()
    return (kind, text.translate(_FOLD))


_FOLD = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"',
                       "\u2013": "-", "\u2014": "-", "\u2212": "-"})


def _json(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    try:
        return json.loads(json.dumps(value, default=str))
    except (TypeError, ValueError):
        return str(value)


def _element_markers(contract: type[Contract]) -> dict[str, Verbatim]:
    """``list[Annotated[str, Verbatim()]]`` fields: the marker of their elements."""
    out = {}
    for name, info in contract.model_fields.items():
        for arg in typing.get_args(info.annotation):
            if typing.get_origin(arg) is typing.Annotated:
                marker = next((m for m in arg.__metadata__ if isinstance(m, Verbatim)), None)
                if marker is not None:
                    out[name] = marker
    return out


@dataclass(frozen=True)
class _Candidate:
    source: str
    contract: Contract
    provenance: Any


@dataclass(frozen=True)
class _Pending:
    """Conflicts waiting for the judge."""

    node: str
    cands: list[_Candidate]
    merged: dict[str, Any]
    base: dict[str, Any]
    request: dict[str, Any]


class ReconcileNode(RoutingNode, Runnable[Any, Command]):
    """The node ``reconcile()`` returns; see :func:`reconcile`."""

    def __init__(self, contract: type[Contract], *, source: str, target: str,
                 policy: PolicyName | Judge | BaseChatModel = "majority",
                 tolerance: float = 0.0, comparer: Comparer | None = None,
                 on_success: str | None = None, on_conflict: str | None = None,
                 name: str = "reconcile", clock: Clock = system_clock) -> None:
        if not (isinstance(contract, type) and issubclass(contract, Contract)):
            raise ConfigurationError(
                f"reconcile contract must be a Contract subclass, got {contract!r}")
        for label, key in (("source", source), ("target", target)):
            if not isinstance(key, str) or not key:
                raise ConfigurationError(
                    f"reconcile {label} must be a non-empty state key, got {key!r}")
        if isinstance(policy, str):
            if policy not in ("majority", "review"):
                raise ConfigurationError(
                    f"reconcile policy must be 'majority', 'review', a judge callable or "
                    f"a chat model, got {policy!r}")
        elif not (isinstance(policy, BaseChatModel) or callable(policy)):
            raise ConfigurationError(
                f"reconcile policy must be 'majority', 'review', a judge callable or a "
                f"chat model, got {type(policy).__name__}")
        if isinstance(tolerance, bool) or not isinstance(tolerance, int | float) \
                or tolerance < 0:
            raise ConfigurationError(
                f"reconcile tolerance must be a number >= 0, got {tolerance!r}")
        if comparer is not None and not callable(comparer):
            raise ConfigurationError(
                f"reconcile comparer must be a callable (a, b) -> bool, got {comparer!r}")
        self.contract = contract
        self.source = source
        self.target = target
        self.policy = policy
        self.tolerance = Decimal(str(tolerance))
        self.comparer: Comparer = comparer or _default_comparer
        self.on_success = on_success
        self.on_conflict = on_conflict
        self.name = name
        self.clock = clock
        self._markers = {**_element_markers(contract), **contract.verbatim_fields()}
        #: the nodes this node can route to; ``StateGraph.add_node`` reads them, so
        #: ``compile()`` rejects a route that names no node
        self.destinations = declare_destinations(self, (on_success, on_conflict))

    def __repr__(self) -> str:
        return (f"ReconcileNode({self.contract.__name__}, source={self.source!r}, "
                f"target={self.target!r}, policy={self._policy_name()!r})")

    def _policy_name(self) -> str:
        return self.policy if isinstance(self.policy, str) else "judge"

    # -- candidates

    def _candidates(self, raw: Any) -> list[_Candidate]:
        if raw is None:
            raw = []
        if not isinstance(raw, Sequence) or isinstance(raw, str | bytes):
            raise ReconcileError(
                f"state[{self.source!r}] must be a list of candidates, got {type(raw).__name__}")
        if not raw:
            raise ReconcileError(
                f"reconcile needs at least one candidate in state[{self.source!r}], got 0; "
                "check that the fan-out wrote its outputs there")
        out = []
        for i, item in enumerate(raw):
            source, prov, value = f"candidate {i}", None, item
            if isinstance(item, Mapping) and "contract" in item:
                source = str(item.get("source") or source)
                prov = item.get("provenance")
                value = item["contract"]
            if isinstance(value, Mapping):
                try:
                    value = self.contract.model_validate(value)
                except ValidationError as exc:
                    raise ReconcileError(
                        f"candidate {i} ({source}) is not a valid {self.contract.__name__}: "
                        f"{exc.error_count()} error(s)") from exc
            if type(value) is not self.contract:
                raise ReconcileError(
                    f"candidate {i} ({source}) is a {type(value).__name__}, expected "
                    f"{self.contract.__name__}; reconcile compares one contract type")
            out.append(_Candidate(source, value, _json(prov)))
        return out

    # -- comparison

    def _same(self, field: str, a: Any, b: Any) -> bool:
        marker = self._markers.get(field)
        if marker is not None:
            return bool(_norm_verbatim(a, marker) == _norm_verbatim(b, marker))
        if isinstance(a, bool) or isinstance(b, bool):
            return a is b
        if isinstance(a, int | float | Decimal) and isinstance(b, int | float | Decimal):
            return abs(Decimal(str(a)) - Decimal(str(b))) <= self.tolerance
        if isinstance(a, str) and isinstance(b, str):
            return bool(self.comparer(a, b))
        return bool(_json(a) == _json(b))

    def _groups(self, field: str, cands: list[_Candidate]) -> list[list[int]]:
        groups: list[list[int]] = []
        for i, c in enumerate(cands):
            value = getattr(c.contract, field)
            for g in groups:
                if self._same(field, getattr(cands[g[0]].contract, field), value):
                    g.append(i)
                    break
            else:
                groups.append([i])
        return sorted(groups, key=len, reverse=True)

    # -- the node

    def _report(self, node: str, cands: list[_Candidate], **kw: Any) -> ReconcileReport:
        report = ReconcileReport(
            node=node, contract=self.contract.__name__, candidates=len(cands),
            sources=[c.source for c in cands], agreement={}, conflicts=[],
            resolution="failed", dissent={}, failure=None, at=now_iso(self.clock))
        report.update(kw)  # type: ignore[typeddict-item]
        return report

    def _fail(self, node: str, message: str, cands: list[_Candidate] | None = None,
              base: dict[str, Any] | None = None) -> Command:
        if self.on_conflict is None:
            raise ReconcileError(f"{node}: {message}")
        report = self._report(node, cands or [], **(base or {}), failure=message)
        return Command(goto=self.on_conflict, update={"reconciles": [report]})

    def _conflict_view(self, field: str, cands: list[_Candidate]) -> list[dict[str, Any]]:
        return [{"source": c.source, "value": _json(getattr(c.contract, field)),
                 "provenance": c.provenance} for c in cands]

    @staticmethod
    def _judge_prompt(request: dict[str, Any]) -> list[HumanMessage]:
        return [HumanMessage(
            f"Agents disagree on some fields of a {request['contract']}. For each field, "
            "pick the correct value. Answer with one JSON object mapping each field to "
            "its value.\n" + json.dumps(request, indent=2, default=str))]

    @staticmethod
    def _judge_reply(reply: Any) -> Any:
        text = str(reply.content)
        m = re.search(r"\{.*\}", text, re.S)
        try:
            return json.loads(m.group(0) if m else text)
        except ValueError as exc:
            raise ReconcileError(f"the judge model's answer is not JSON: {text[:200]!r}"
                                 ) from exc

    def _judge(self, request: dict[str, Any], config: RunnableConfig) -> Any:
        if isinstance(self.policy, BaseChatModel):
            return self._judge_reply(self.policy.invoke(self._judge_prompt(request), config))
        assert callable(self.policy)
        chosen = self.policy(request)
        if inspect.isawaitable(chosen):
            close = getattr(chosen, "close", None)
            if close is not None:
                close()
            raise ReconcileError("an async judge needs an async run (ainvoke/astream)")
        return chosen

    async def _ajudge(self, request: dict[str, Any], config: RunnableConfig) -> Any:
        if isinstance(self.policy, BaseChatModel):
            reply = await self.policy.ainvoke(self._judge_prompt(request), config)
            return self._judge_reply(reply)
        assert callable(self.policy)
        chosen = self.policy(request)
        return await chosen if inspect.isawaitable(chosen) else chosen

    def _review(self, node: str, merged: dict[str, Any], conflicts: dict[str, Any],
                cands: list[_Candidate], reason: str
                ) -> tuple[str, dict[str, Any], Any, dict[str, Any]]:
        value = {k: (None if k in conflicts else _json(v)) for k, v in merged.items()}
        request = ReviewRequest(
            node=node, subject=self.target, agent=node, decision_kind="reconcile",
            contract=self.contract.__name__, value=value,
            provenance={"conflicts": conflicts,
                        "candidates": [{"source": c.source, "provenance": c.provenance}
                                       for c in cands]},
            actions=["edit", "reject"], policy_reason=reason)
        payload = request.model_dump(mode="json")
        while True:
            raw = interrupt(payload)
            try:
                decision = parse_decision(raw, ["edit", "reject"])
                root = decision.root
                who = {"reviewer": root.reviewer, "comment": root.comment}
                if isinstance(root, EditDecision):
                    undecided = [f for f in conflicts if f not in root.edits]
                    if undecided:
                        raise ReconcileError(f"decide every conflicting field; missing "
                                             f"{undecided}")
                    new = self.contract.model_validate(
                        apply_edits(value, root.edits, self.contract))
                    return "edit", dict(root.edits), new, who
                return "reject", {}, getattr(root, "reason", None), who
            except (ReconcileError, ValueError) as exc:
                payload = {**request.model_dump(mode="json"), "error": str(exc),
                           "previous": _json(raw), "attempt": payload.get("attempt", 1) + 1}

    def _prepare(self, state: Any, config: RunnableConfig) -> Command | _Pending:
        """Compare the candidates; a Command when done, else the judge's request."""
        node = str((config.get("metadata") or {}).get("langgraph_node") or self.name)
        get = state.get if isinstance(state, Mapping) else lambda k: getattr(state, k, None)
        try:
            cands = self._candidates(get(self.source))
        except ReconcileError as exc:
            return self._fail(node, str(exc))

        merged: dict[str, Any] = {}
        agreement: dict[str, float] = {}
        conflicts: dict[str, list[list[int]]] = {}
        for field in self.contract.model_fields:
            groups = self._groups(field, cands)
            agreement[field] = round(len(groups[0]) / len(cands), 4)
            merged[field] = getattr(cands[groups[0][0]].contract, field)
            if len(groups) > 1:
                conflicts[field] = groups

        dissent = {f: [{"source": cands[i].source,
                        "value": _json(getattr(cands[i].contract, f))}
                       for g in groups[1:] for i in g]
                   for f, groups in conflicts.items()}
        base = {"agreement": agreement, "conflicts": list(conflicts), "dissent": dissent}
        if not conflicts:
            return self._success(node, cands, merged, base, "agreed", None)

        policy = self._policy_name()
        if policy == "majority":
            undecided = [f for f, g in conflicts.items() if len(g[0]) * 2 <= len(cands)]
            if not undecided:
                return self._success(node, cands, merged, base, "majority", None)
            reason = f"reconcile: no majority on {', '.join(undecided)}"
        elif policy == "judge":
            request = {"contract": self.contract.__name__,
                       "fields": {f: [{"source": c.source, "value":
                                       _json(getattr(c.contract, f))} for c in cands]
                                  for f in conflicts},
                       "sources": {c.source: c.provenance for c in cands}}
            return _Pending(node, cands, merged, base, request)
        else:
            reason = f"reconcile: candidates disagree on {', '.join(conflicts)}"

        view = {f: self._conflict_view(f, cands) for f in conflicts}
        action, edits, result, who = self._review(node, merged, view, cands, reason)
        base = {**base, **who}
        if action == "reject":
            report = self._report(node, cands, **base, resolution="review",
                                  failure=f"rejected by reviewer: {result}")
            if self.on_conflict is None:
                raise ReconcileError(f"{node}: conflict rejected by reviewer: {result}")
            return Command(goto=self.on_conflict, update={"reconciles": [report]})
        return self._finish(node, cands, result, base, "review", _json(edits))

    def _success(self, node: str, cands: list[_Candidate], merged: dict[str, Any],
                 base: dict[str, Any], resolution: str, decisions: Any) -> Command:
        try:
            value = self.contract.model_validate(merged)
        except ValidationError as exc:
            return self._fail(node, f"the merged {self.contract.__name__} is invalid: {exc}",
                              cands, base)
        return self._finish(node, cands, value, base, resolution, decisions)

    def _finish(self, node: str, cands: list[_Candidate], value: Any, base: dict[str, Any],
                resolution: str, decisions: Any) -> Command:
        if decisions is not None:
            # a judge or a reviewer decided: dissent is every value overruled by that decision
            base = {**base, "dissent": {
                f: [{"source": c.source, "value": _json(getattr(c.contract, f))}
                    for c in cands
                    if not self._same(f, getattr(c.contract, f), getattr(value, f))]
                for f in base["conflicts"]}}
        report = self._report(node, cands, **base, resolution=resolution)
        if decisions is not None:
            report["decisions"] = decisions
        update = {self.target: value, "reconciles": [report]}
        return Command(goto=self.on_success, update=update) if self.on_success \
            else Command(update=update)

    def _judged(self, p: _Pending, chosen: Any) -> Command:
        if not isinstance(chosen, Mapping):
            return self._fail(p.node, f"the judge must return a field -> value mapping, got "
                                      f"{type(chosen).__name__}", p.cands, p.base)
        fields = list(p.request["fields"])
        missing = [f for f in fields if f not in chosen]
        if missing:
            return self._fail(p.node, f"the judge left conflicting fields undecided: "
                                      f"{missing}", p.cands, p.base)
        merged = {**p.merged, **{f: chosen[f] for f in fields}}
        return self._success(p.node, p.cands, merged, p.base, "judge",
                             {f: _json(chosen[f]) for f in fields})

    def invoke(self, input: Any, config: RunnableConfig | None = None,
               **kwargs: Any) -> Command:
        """Run the node (sync)."""
        state, config = input, ensure_config(config)
        pending = self._prepare(state, config)
        if isinstance(pending, Command):
            return pending
        try:
            chosen = self._judge(pending.request, config)
        except ReconcileError as exc:
            return self._fail(pending.node, str(exc), pending.cands, pending.base)
        return self._judged(pending, chosen)

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None,
                      **kwargs: Any) -> Command:
        """Run the node (async); the judge may be async."""
        state, config = input, ensure_config(config)
        pending = self._prepare(state, config)
        if isinstance(pending, Command):
            return pending
        try:
            chosen = await self._ajudge(pending.request, config)
        except ReconcileError as exc:
            return self._fail(pending.node, str(exc), pending.cands, pending.base)
        return self._judged(pending, chosen)


def reconcile(contract: type[Contract], *, source: str, target: str,
              policy: PolicyName | Judge | BaseChatModel = "majority",
              tolerance: float = 0.0, comparer: Comparer | None = None,
              on_success: str | None = None, on_conflict: str | None = None,
              name: str = "reconcile", clock: Clock = system_clock) -> ReconcileNode:
    """A node that merges N candidate contracts from ``state[source]`` into ``state[target]``.

    Each candidate is a contract instance (or its dict), or ``{"source": name,
    "contract": ..., "provenance": ...}`` so that reports and reviewers can tell who said
    what.

    Args:
        contract: the contract every candidate must be an instance of.
        source: the state key holding the list of candidates.
        target: the state key the merged contract is written to.
        policy: ``"majority"`` (strict majority per field; no majority → human review),
            ``"review"`` (every conflict to a human), or a judge: a callable
            ``request -> {field: value}`` or a chat model answering JSON.
        tolerance: absolute difference under which two numbers agree.
        comparer: ``(a, b) -> bool`` for text fields (default: case and whitespace
            insensitive equality).
        on_success: the node to go to with the merged contract.
        on_conflict: the node to go to on a failure (no candidates, mixed contract types,
            a reviewer's rejection). Without it, such a failure raises ``ReconcileError``.

    Example::

        builder.add_node("merge", reconcile(ResearchBrief, source="drafts",
                                            target="brief", on_success="writer",
                                            on_conflict="halt"))
    """
    return ReconcileNode(contract, source=source, target=target, policy=policy,
                         tolerance=tolerance, comparer=comparer, on_success=on_success,
                         on_conflict=on_conflict, name=name, clock=clock)
