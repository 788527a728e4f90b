"""One review as the review page shows it, read from the thread's real state.

The page shows the handoff source with each verbatim-checked field highlighted at the span
the handoff recorded, a field that failed marked at what the source actually says, the
guard's verdict or the handoff's failure and repairs, the autonomy policy's standing for
this agent and decision kind, and the contract as a typed form.

A ``reconcile()`` conflict is shown side by side instead: per conflicting field, each
candidate's value and, when it recorded one, its provenance for that field; the form holds
the agreed fields and leaves the conflicts to decide.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

from pydantic import BaseModel

from relaygraph.nodes._reconcile import ReconcileNode
from relaygraph.nodes._review import HumanReview, pending_reviews
from relaygraph.nodes._tokens import message_text
from relaygraph.nodes._verbatim import SourceIndex, Verbatim, parse_date, parse_number, resolve_kind
from relaygraph.serve._inbox import classify
from relaygraph.serve._inbox_forms import FormField, form_fields, shown


@dataclass(frozen=True)
class Segment:
    """A run of transcript text; ``mark`` is ``ok`` / ``fail`` for a highlighted field."""

    text: str
    mark: str | None = None
    field: str | None = None
    title: str | None = None


@dataclass(frozen=True)
class Message:
    index: int
    role: str
    name: str | None
    segments: list[Segment]


@dataclass(frozen=True)
class Fact:
    """One verbatim-checked contract field.

    Attributes:
        path: the field (``amount``, ``items.0.sku``).
        value: the contract's value.
        passed: found in the source as written.
        reason: why it failed.
        message, start, end: where it was found (or, for a failure, where the source says
            something close: ``says``).
        says: for a failure, what the source actually says there.
    """

    path: str
    value: str
    passed: bool
    reason: str = ""
    message: int | None = None
    start: int | None = None
    end: int | None = None
    says: str | None = None

    @property
    def anchor(self) -> str:
        return "fact-" + re.sub(r"[^A-Za-z0-9_-]", "-", self.path)


@dataclass(frozen=True)
class Standing:
    """The autonomy policy's view of this agent and decision kind."""

    agent: str
    kind: str
    reviews: int
    approvals: int
    consecutive: int
    lower_bound: float
    target: float
    min_approvals: int
    rate: float
    to_sampling: int | None
    """Consecutive approvals still needed before reviews are sampled (None: unreachable)."""
    reset_reason: str | None = None

    @property
    def sampling(self) -> bool:
        return self.to_sampling == 0


@dataclass(frozen=True)
class Cell:
    """One candidate's value for one field of a reconcile conflict.

    Attributes:
        source: the candidate's name (``alpha``).
        value: the value as text (JSON for anything but a string).
        items: a list of plain values, one line each (None: show ``value``).
        provenance: what the candidate recorded for this field (a quote, a span), if any.
    """

    source: str
    value: str
    items: list[str] | None = None
    provenance: str | None = None


@dataclass(frozen=True)
class CandidateHead:
    """A column of the conflict table: the candidate and its provenance as a whole."""

    source: str
    provenance: str | None = None


@dataclass(frozen=True)
class Conflict:
    """One row of the conflict table: a field and each candidate's value, in column order."""

    field: str
    label: str
    cells: list[Cell]

    @property
    def anchor(self) -> str:
        return "conflict-" + re.sub(r"[^A-Za-z0-9_-]", "-", self.field)


@dataclass
class ReviewView:
    """Everything the review page shows (and the decision handler needs)."""

    thread_id: str
    internal_id: str
    graph_id: str
    interrupt_id: str
    node: str
    request: dict[str, Any]
    reason: str
    why: str
    actions: list[str]
    contract: type[BaseModel] | None
    value: Any
    fields: list[FormField]
    transcript: list[Message] = field(default_factory=list)
    transcript_label: str = ""
    facts: list[Fact] = field(default_factory=list)
    handoff: dict[str, Any] | None = None
    guard: dict[str, Any] | None = None
    standing: Standing | None = None
    policy: str = ""
    candidates: list[CandidateHead] = field(default_factory=list)
    """For a reconcile review: the candidates, one column each."""
    conflicts: list[Conflict] = field(default_factory=list)
    """For a reconcile review: the conflicting fields, side by side."""
    agreed: list[tuple[str, str]] = field(default_factory=list)
    """For a reconcile review: ``(field, value)`` where every candidate agrees."""
    next_nodes: dict[str, str] = field(default_factory=dict)
    """Where the run goes after each action the reviewer may take, where the node says."""

    @property
    def reconcile(self) -> bool:
        return bool(self.conflicts)


@dataclass(frozen=True)
class MovedOn:
    """The review a card pointed at is no longer waiting: what happened instead."""

    thread_id: str
    graph_id: str
    message: str
    status: str
    heading: str = "This review has moved on"
    waiting: bool = False
    """Another review of the thread is waiting now (the page links to it)."""


# --------------------------------------------------------------------------- the source


def _handoff_report(state: Mapping[str, Any], contract: str | None) -> dict[str, Any] | None:
    reports = [r for r in state.get("handoffs") or [] if isinstance(r, Mapping)]
    if contract is not None:
        for report in reversed(reports):
            if report.get("contract") == contract:
                return dict(report)
    return dict(reports[-1]) if reports else None


def _passages(state: Mapping[str, Any], report: Mapping[str, Any] | None
              ) -> tuple[list[tuple[str, str | None, str]], str]:
    """``([(role, name, text)], label)``: the handoff's archived source, else the messages."""
    ref_key = (report or {}).get("source_ref")
    sources = state.get("handoff_sources")
    if ref_key and isinstance(sources, Mapping):
        for target, ref in sources.items():
            if isinstance(ref, Mapping) and ref.get("key") == ref_key and ref.get("passages"):
                return ([(str(p.get("role", "")), p.get("name"), str(p.get("text", "")))
                         for p in ref["passages"]],
                        f"As handed to {report.get('node') or 'the handoff'}, archived under "
                        f"handoff_sources[{str(target)!r}]" if report else "")
    messages = state.get("messages")
    if isinstance(messages, Sequence) and not isinstance(messages, str):
        out = []
        for m in messages:
            role = str(getattr(m, "type", None) or (m.get("role") if isinstance(m, Mapping)
                                                   else "message"))
            name = getattr(m, "name", None)
            out.append((role, name if isinstance(name, str) else None, message_text(m)))
        return out, "The thread's messages (the handoff's archived source is not in state)"
    return [], ""


_TOKEN = re.compile(r"[\w@.+$€£-]+")
_IDLIKE = re.compile(r"(?=[\w-]*\d)(?=[\w-]*[A-Za-z])[\w-]{3,}")


def _closest(index: SourceIndex, value: str, path: str) -> tuple[int, int, int] | None:
    """``(message, start, end)`` of what the source says closest to a failed value."""
    marker = Verbatim()
    kind = resolve_kind(value, marker)
    if kind == "number":
        target = parse_number(value)
        if target is not None and index.numbers():
            near = min(index.numbers(), key=lambda n: abs(n[0] - target))
            scale = max(abs(target), Decimal(1))
            if abs(near[0] - target) / scale <= Decimal("0.5"):
                return near[1], near[2], near[3]
        return None
    if kind == "date":
        d = parse_date(value)
        dates = index.dates(False)
        if d is not None and dates:
            best_d = min(dates, key=lambda x: abs((x[0] - d).days) if isinstance(x[0], date)
                         else 10**6)
            return best_d[1], best_d[2], best_d[3]
        return None
    best: tuple[float, int, int, int] | None = None
    want = value.casefold()
    for i, text in enumerate(index.texts):
        for m in _TOKEN.finditer(text):
            ratio = difflib.SequenceMatcher(None, want, m.group(0).casefold()).ratio()
            if ratio >= 0.6 and (best is None or ratio > best[0]):
                best = (ratio, i, m.start(), m.end())
    if best is not None:
        return best[1], best[2], best[3]
    if path.rsplit(".", 1)[-1].endswith("id"):
        # an id the compressor could not read ("unknown"): point at the id-like tokens
        for i, text in enumerate(index.texts):
            found = _IDLIKE.search(text)
            if found is not None and not _DATE_LIKE.fullmatch(found.group(0)):
                return i, found.start(), found.end()
    return None


_DATE_LIKE = re.compile(r"\d{4}-\d{1,2}-\d{1,2}")


def _facts(report: Mapping[str, Any] | None, texts: list[str]) -> list[Fact]:
    if not report:
        return []
    index = SourceIndex(texts)
    out = []
    raw_checks = report.get("verbatim")
    checks: Mapping[str, Any] = raw_checks if isinstance(raw_checks, Mapping) else {}
    for path, check in checks.items():
        if not isinstance(check, Mapping):
            continue
        value = str(check.get("value", ""))
        prov = check.get("provenance") if isinstance(check.get("provenance"), Mapping) else None
        if check.get("passed") and prov is not None:
            out.append(Fact(str(path), value, True, message=_int(prov.get("message")),
                            start=_int(prov.get("start")), end=_int(prov.get("end"))))
            continue
        where = _closest(index, value, str(path)) if texts else None
        if where is None:
            out.append(Fact(str(path), value, False, str(check.get("reason") or "")))
        else:
            i, s, e = where
            out.append(Fact(str(path), value, False, str(check.get("reason") or ""), i, s, e,
                            texts[i][s:e]))
    # fields that failed before any verbatim check (missing, wrong type): from the draft
    raw_draft = report.get("draft")
    draft: Mapping[str, Any] = raw_draft if isinstance(raw_draft, Mapping) else {}
    for path in report.get("failed_fields") or []:
        if path in checks or path == "*":
            continue
        drafted = draft.get(path)
        shown = "—" if drafted is None else str(drafted)
        where = _closest(index, shown, str(path)) if texts and drafted is not None else None
        if where is None and texts and str(path).endswith("id"):
            where = _closest(index, "unknown", str(path))
        if where is None:
            out.append(Fact(str(path), shown, False, _field_problem(report, str(path))))
        else:
            i, s, e = where
            out.append(Fact(str(path), shown, False, _field_problem(report, str(path)), i, s, e,
                            texts[i][s:e]))
    return out


def _field_problem(report: Mapping[str, Any], path: str) -> str:
    failure = str(report.get("failure") or "")
    for part in failure.split("; "):
        part = part.split(". ", 1)[-1] if part.startswith(str(report.get("contract"))) else part
        if part.startswith(f"{path}: "):
            return part[len(path) + 2:]
    return "failed"


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _segments(text: str, spans: list[tuple[int, int, str, str, str]]) -> list[Segment]:
    """Split ``text`` at non-overlapping ``(start, end, mark, field, title)`` spans."""
    out: list[Segment] = []
    pos = 0
    for start, end, mark, name, title in sorted(spans):
        start, end = max(start, pos), min(end, len(text))
        if end <= start:
            continue  # overlaps a span already drawn, or out of range
        if start > pos:
            out.append(Segment(text[pos:start]))
        out.append(Segment(text[start:end], mark, name, title))
        pos = end
    if pos < len(text):
        out.append(Segment(text[pos:]))
    return out


def _transcript(passages: list[tuple[str, str | None, str]], facts: list[Fact]
                ) -> list[Message]:
    spans: dict[int, list[tuple[int, int, str, str, str]]] = {}
    for f in facts:
        if f.message is None or f.start is None or f.end is None:
            continue
        if f.passed:
            title = f"{f.path} = {f.value} (verified here)"
        else:
            title = f"{f.path}: the contract says {f.value!r}; the source says {f.says!r}"
        spans.setdefault(f.message, []).append(
            (f.start, f.end, "ok" if f.passed else "fail", f.path, title))
    return [Message(i, role, name, _segments(text, spans.get(i, [])))
            for i, (role, name, text) in enumerate(passages)]


# --------------------------------------------------------------------------- the policy


def review_node(graph: Any, name: str) -> HumanReview | None:
    """The ``HumanReview`` behind a graph node, if it is one."""
    spec = (getattr(getattr(graph, "builder", None), "nodes", None) or {}).get(name)
    runnable = getattr(spec, "runnable", None)
    return runnable if isinstance(runnable, HumanReview) else None


def reconcile_node(graph: Any, name: str) -> ReconcileNode | None:
    """The ``reconcile()`` node behind a graph node, if it is one."""
    spec = (getattr(getattr(graph, "builder", None), "nodes", None) or {}).get(name)
    runnable = getattr(spec, "runnable", None)
    return runnable if isinstance(runnable, ReconcileNode) else None


def _to_sampling(policy: Any, approvals: int, reviews: int, consecutive: int) -> int | None:
    from relaygraph.nodes._autonomy import wilson_lower_bound

    need = max(0, policy.min_approvals - consecutive)
    for extra in range(need, 10_001):
        if wilson_lower_bound(approvals + extra, reviews + extra,
                              policy.confidence) >= policy.target:
            return extra
    return None


async def astanding(graph: Any, node: str, agent: str, kind: str) -> Standing | None:
    """The policy's standing for ``agent``/``kind`` at review node ``node`` (None: no policy)."""
    from relaygraph.nodes._autonomy import wilson_lower_bound

    review = review_node(graph, node)
    policy = getattr(review, "policy", None)
    if policy is None:
        return None
    stats = await policy.astats(agent, kind)
    lb = wilson_lower_bound(stats.approvals, stats.reviews, policy.confidence)
    to_go = _to_sampling(policy, stats.approvals, stats.reviews, stats.consecutive)
    rate = 1.0
    if to_go == 0:
        rate = max(policy.floor,
                   policy.decay ** (stats.consecutive - policy.min_approvals + 1))
    return Standing(agent, kind, stats.reviews, stats.approvals, stats.consecutive, lb,
                    policy.target, policy.min_approvals, rate, to_go, stats.reset_reason)


# --------------------------------------------------------------------------- loading


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


def _prov_text(value: Any) -> str | None:
    """Provenance as one line of text: a quote as it is, a mapping as ``key: value; ...``."""
    if value is None or value == {} or value == []:
        return None
    if isinstance(value, Mapping):
        parts = [f"{k}: {_prov_text(v) or '—'}" for k, v in value.items()]
        return "; ".join(parts) or None
    if isinstance(value, list):
        return ", ".join(_prov_text(v) or "—" for v in value) or None
    return _text(value)


def _field_prov(prov: Any, name: str) -> Any:
    """What a candidate's provenance says about one field: ``prov[field]``, or the field
    under ``fields`` / ``verbatim`` (a handoff's verbatim checks: the check's span)."""
    if not isinstance(prov, Mapping):
        return None
    if name in prov:
        return prov[name]
    for key in ("fields", "verbatim"):
        inner = prov.get(key)
        if isinstance(inner, Mapping) and name in inner:
            found = inner[name]
            if isinstance(found, Mapping) and isinstance(found.get("provenance"), Mapping):
                return found["provenance"]
            return found
    return None


def _reconcile_view(request: Mapping[str, Any], contract: type[BaseModel] | None
                    ) -> tuple[list[CandidateHead], list[Conflict], list[tuple[str, str]]]:
    """The candidates, the conflicts side by side and the agreed fields of a reconcile."""
    prov = request.get("provenance")
    raw = prov.get("conflicts") if isinstance(prov, Mapping) else None
    if not isinstance(raw, Mapping) or not raw:
        return [], [], []
    listed = prov.get("candidates") if isinstance(prov, Mapping) else None
    heads_raw = [c for c in listed or [] if isinstance(c, Mapping)] \
        if isinstance(listed, list) else []
    names = set(raw)
    field_names = set(contract.model_fields) if contract is not None else set()
    heads: list[CandidateHead] = []
    for c in heads_raw:
        whole = c.get("provenance")
        if isinstance(whole, Mapping):
            # what is about one field is shown in that field's row, not in the header
            whole = {k: v for k, v in whole.items()
                     if k not in names and k not in field_names
                     and k not in ("fields", "verbatim")}
        heads.append(CandidateHead(str(c.get("source") or f"candidate {len(heads)}"),
                                   _prov_text(whole)))
    conflicts = []
    for name, entries in raw.items():
        rows = [e for e in entries if isinstance(e, Mapping)] \
            if isinstance(entries, list) else []
        cells = []
        for i, e in enumerate(rows):
            value = e.get("value")
            items = [_text(v) for v in value] if isinstance(value, list) and all(
                not isinstance(v, Mapping | list) for v in value) else None
            source = str(e.get("source") or (heads[i].source if i < len(heads)
                                             else f"candidate {i}"))
            cells.append(Cell(source, _text(value), items,
                              _prov_text(_field_prov(e.get("provenance"), str(name)))))
        for i in range(len(cells), len(heads)):
            cells.append(Cell(heads[i].source, "—"))
        if not heads:
            heads = [CandidateHead(c.source) for c in cells]
        label = str(name)
        if contract is not None and str(name) in contract.model_fields:
            label = contract.model_fields[str(name)].title or label
        conflicts.append(Conflict(str(name), label, cells))
    value = request.get("value")
    agreed = [(str(k), _text(v)) for k, v in value.items() if k not in names] \
        if isinstance(value, Mapping) else []
    return heads, conflicts, agreed


def _dump(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return value


async def aload_review(graph: Any, graph_id: str, thread_id: str, internal_id: str,
                       interrupt_id: str | None, snapshot: Any) -> ReviewView | MovedOn:
    """The review page for ``interrupt_id`` (the only pending review when None)."""
    pending = pending_reviews(snapshot)
    chosen = None
    for intr_id, task, request in pending:
        if interrupt_id is None or intr_id == interrupt_id:
            chosen = (intr_id, task, request)
            break
    if chosen is None:
        return moved_on(graph_id, thread_id, snapshot)
    intr_id, task, request = chosen
    state = snapshot.values if isinstance(snapshot.values, Mapping) else {}
    node = review_node(graph, task)
    value = state.get(node.subject) if node is not None else request.get("value")
    contract = node.contract_for(value) if node is not None else None
    shown_value = _dump(value) if value is not None else request.get("value")
    merging = reconcile_node(graph, task) if node is None else None
    is_reconcile = request.get("decision_kind") == "reconcile" and isinstance(
        request.get("provenance"), Mapping) and "conflicts" in request["provenance"]
    if is_reconcile and merging is not None:
        contract = merging.contract
    heads: list[CandidateHead] = []
    conflicts: list[Conflict] = []
    agreed: list[tuple[str, str]] = []
    if is_reconcile:
        heads, conflicts, agreed = _reconcile_view(request, contract)
    report = None if is_reconcile else _handoff_report(
        state, request.get("contract") if request.get("provenance") is not None else None)
    passages, label = _passages(state, report)
    facts = _facts(report, [p[2] for p in passages])
    form_value = shown_value
    failed = bool(report and report.get("failure")) and shown_value is None
    if failed and isinstance((report or {}).get("draft"), Mapping):
        # start from the compressor's last draft: the reviewer fixes what failed
        draft = dict(report["draft"])  # type: ignore[index]
        form_value = {k: v for k, v in draft.items()
                      if contract is None or k in contract.model_fields}
    fields = form_fields(contract, form_value)
    by_field = {c.field: c for c in conflicts}
    for f in fields:
        conflict = by_field.get(f.name)
        if conflict is not None:
            f.conflict, f.value = True, ""
            raw = request["provenance"]["conflicts"].get(f.name) or []
            f.choices = [(c.source, shown(f.kind, e.get("value") if isinstance(e, Mapping)
                                          else None))
                         for c, e in zip(conflict.cells, raw, strict=False)]
    if failed:
        problems = {f.path: f.reason or "failed" for f in facts if not f.passed}
        for f in fields:
            if f.name in problems:
                f.error = f"the handoff could not verify this value: {problems[f.name]}"
    verified = {f.path: f for f in facts if f.passed}
    for f in fields:
        fact = verified.get(f.name)
        if fact is not None and _equal(fact.value, f.value):
            f.verified = f"found in message {fact.message}"
    reason, why = classify(request, graph)
    guard = None
    log = [g for g in state.get("guard_log") or [] if isinstance(g, Mapping)]
    if log:
        guard = dict(log[-1])
    standing = await astanding(graph, task, str(request.get("agent") or ""),
                               str(request.get("decision_kind") or "default"))
    handoff = None
    if report is not None:
        handoff = {k: report.get(k) for k in ("contract", "node", "failure", "failed_fields",
                                              "repairs", "ratio", "source_tokens",
                                              "brief_tokens", "compressor", "at")}
    return ReviewView(
        thread_id=thread_id, internal_id=internal_id, graph_id=graph_id,
        interrupt_id=intr_id, node=task, request=request, reason=reason, why=why,
        actions=[a for a in request.get("actions") or ["approve", "edit", "reject"]
                 if a in ("approve", "edit", "reject")],
        contract=contract, value=shown_value, fields=fields, transcript=_transcript(
            passages, facts), transcript_label=label, facts=facts, handoff=handoff,
        guard=guard, standing=standing, policy=str(request.get("policy_reason") or ""),
        candidates=heads, conflicts=conflicts, agreed=agreed,
        next_nodes=_next_nodes(node))


def _next_nodes(node: HumanReview | None) -> dict[str, str]:
    """``{action: node}`` for the routes a review node names (its graph's edges decide the rest)."""
    if node is None:
        return {}
    routes = {"approve": node.on_approve, "edit": node.on_edit, "reject": node.on_reject}
    return {a: r for a, r in routes.items() if a in node.actions and r is not None}


def _equal(a: str, b: str) -> bool:
    if a == b:
        return True
    na, nb = parse_number(a), parse_number(b)
    return na is not None and na == nb


def moved_on(graph_id: str, thread_id: str, snapshot: Any) -> MovedOn:
    """What a stale card says: who decided, or where the thread is now."""
    state = snapshot.values if isinstance(snapshot.values, Mapping) else {}
    reviews = [r for r in state.get("reviews") or [] if isinstance(r, Mapping)]
    last = reviews[-1] if reviews else None
    waiting = bool(snapshot.next) and bool(pending_reviews(snapshot))
    if snapshot.next:
        status = "waiting" if waiting else "running"
        where = f"it is now at {', '.join(snapshot.next)}"
    else:
        status, where = "finished", "the run has finished"
    if last is not None and last.get("decision") != "skipped":
        who = last.get("reviewer") or "someone"
        message = (f"This review was already decided: {last.get('decision')} by {who} at "
                   f"{last.get('at')}. The thread moved on; {where}.")
    elif last is None and not waiting:
        return MovedOn(thread_id, graph_id, f"This thread has had no review; {where}.",
                       status, heading="No review is waiting on this thread")
    else:
        message = f"This review is no longer waiting: the thread moved on; {where}."
    return MovedOn(thread_id, graph_id, message, status, waiting=waiting)
