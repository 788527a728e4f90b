"""The review inbox's list: a tenant's pending reviews as cards, filtered and paginated.

Cards come from the server's thread index (one small row per thread, kept by the server
whenever a run starts, pauses or resumes), so the list never decodes checkpoint state.
The review page (`relaygraph.serve._inbox_review`) reads the real state and is the one
that notices a card whose thread has moved on.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from relaygraph.serve._auth import Principal
from relaygraph.serve._reviews import is_review_request
from relaygraph.serve._tenancy import external_thread_id, owns

log = logging.getLogger("relaygraph.serve.inbox")

Reason = Literal["guard_escalation", "failed_handoff", "agents_disagree", "policy_sample",
                 "full_review"]
REASONS: dict[str, str] = {
    "guard_escalation": "guard escalation",
    "failed_handoff": "failed handoff",
    "agents_disagree": "agents disagree",
    "policy_sample": "policy sample",
    "full_review": "full review",
}
"""Why a review is waiting, by filter key."""

AGES: dict[str, tuple[str, float, float]] = {
    "lt1h": ("under an hour", 0.0, 3600.0),
    "1h-1d": ("1 hour to 1 day", 3600.0, 86400.0),
    "gt1d": ("over a day", 86400.0, math.inf),
    "gt7d": ("over a week", 7 * 86400.0, math.inf),
}
"""How long a review has waited, by filter key: ``(label, at least, less than)`` seconds."""

ORDERS = ("newest", "oldest")

SCAN_LIMIT = 10_000
"""The most index rows one listing reads (pending reviews of one tenant)."""


@dataclass(frozen=True)
class Card:
    """One pending review as the inbox lists it.

    Attributes:
        thread_id: the client's thread id (tenant prefix removed).
        interrupt_id: the interrupt the decision answers.
        graph_id: the graph that ran the thread.
        node: the review node.
        agent, kind: the agent under review and the decision kind (autonomy policy keys).
        contract: the contract class under review, if any.
        reason: a `REASONS` key; ``why`` says it in words (the guard's reason, the
            handoff failure, or the policy's reason).
        waiting_since: epoch seconds of the index row's last update.
        preview: the output under review (JSON data); `fields` shows a few of its keys.
        attempt: 2+ when an earlier answer was refused.
    """

    thread_id: str
    interrupt_id: str
    graph_id: str | None
    node: str
    agent: str
    kind: str
    contract: str | None
    reason: str
    why: str
    waiting_since: float
    preview: Any = field(default=None, repr=False)
    attempt: int = 1

    @property
    def reason_label(self) -> str:
        return REASONS.get(self.reason, self.reason)

    @property
    def fields(self) -> list[tuple[str, str]]:
        """A few ``(name, value)`` pairs of the output under review (only drawn cards)."""
        return _fields(self.preview)


def _short(value: Any, width: int = 80) -> str:
    text = value if isinstance(value, str) else ("—" if value is None else str(value))
    return text if len(text) <= width else text[: width - 1] + "…"


def _routes_into(graph: Any, node: str) -> tuple[bool, bool]:
    """``(a guard escalates to node, a handoff fails over to node)`` in ``graph``."""
    nodes = getattr(getattr(graph, "builder", None), "nodes", None) or {}
    guard = handoff = False
    for spec in nodes.values():
        runnable = getattr(spec, "runnable", None)
        if getattr(runnable, "on_escalate", None) == node:
            guard = True
        if getattr(runnable, "on_failure", None) == node and hasattr(runnable, "contract"):
            handoff = True
    return guard, handoff


def classify(request: Mapping[str, Any], graph: Any = None,
             routes: dict[tuple[int, str], tuple[bool, bool]] | None = None) -> tuple[str, str]:
    """``(reason key, why in words)`` for a review request.

    A failed handoff shows the handoff's own failure text (``order_id 'unknown' does not
    appear in the source``); a guard escalation the guard's score, threshold and reason;
    a `reconcile()` conflict the fields the agents disagree on; anything else is a review
    the autonomy policy asked for, with its reason: a sample once the agent has earned
    autonomy, a full review before that.
    """
    handoff = request.get("handoff") if isinstance(request.get("handoff"), Mapping) else None
    failure = (handoff or {}).get("failure")
    node = str(request.get("node") or "")
    if graph is None:
        by_guard, by_handoff = True, True
    elif routes is None:
        by_guard, by_handoff = _routes_into(graph, node)
    else:  # one graph walk per (graph, node) for a whole listing
        key = (id(graph), node)
        if key not in routes:
            routes[key] = _routes_into(graph, node)
        by_guard, by_handoff = routes[key]
    if failure and by_handoff:
        return "failed_handoff", str(failure)
    if request.get("guard_route") == "escalate" and by_guard:
        score = request.get("confidence")
        why = str(request.get("guard_reason") or "")
        if isinstance(score, int | float) and "score" not in why:
            why = f"score {score:.2f}" + (f"; {why}" if why else "")
        return "guard_escalation", f"{request.get('guard') or 'guard'} escalated" + (
            f": {why}" if why else "")
    policy = str(request.get("policy_reason") or "review requested")
    if request.get("decision_kind") == "reconcile":  # reconcile() could not settle a conflict
        return "agents_disagree", policy.removeprefix("reconcile: ")
    shown = policy.removeprefix("review: ")
    # the autonomy policy's reasons start "review: sampled ..." once the agent has earned
    # sampling, "review: full review ..." (or "no autonomy policy") before that
    if policy.startswith("review: sampled"):
        return "policy_sample", shown
    return "full_review", shown


def _fields(value: Any, limit: int = 4) -> list[tuple[str, str]]:
    if isinstance(value, Mapping):
        return [(str(k), _short(v, 60)) for k, v in list(value.items())[:limit]]
    if value is None:
        return []
    return [("value", _short(value, 120))]


def cards_from_row(principal: Principal, internal_id: str, graph_id: str | None,
                   updated_at: float, summary: Mapping[str, Any],
                   graphs: Mapping[str, Any],
                   routes: dict[tuple[int, str], tuple[bool, bool]] | None = None
                   ) -> list[Card]:
    """The cards of one thread-index row (one per pending review interrupt)."""
    if not owns(principal, internal_id):
        return []
    out = []
    for intr in summary.get("interrupts") or []:
        if not isinstance(intr, Mapping):
            continue
        value = intr.get("value")
        if not is_review_request(value) or not isinstance(value, Mapping):
            continue
        reason, why = classify(value, graphs.get(graph_id or ""), routes)
        out.append(Card(
            thread_id=external_thread_id(principal, internal_id),
            interrupt_id=str(intr.get("id") or ""),
            graph_id=graph_id,
            node=str(value.get("node") or intr.get("node") or ""),
            agent=str(value.get("agent") or ""),
            kind=str(value.get("decision_kind") or "default"),
            contract=value.get("contract") if isinstance(value.get("contract"), str) else None,
            reason=reason, why=why, waiting_since=float(updated_at),
            preview=value.get("value"),
            attempt=int(value.get("attempt") or 1) if str(value.get("attempt") or "1"
                                                          ).isdigit() else 1,
        ))
    return out


async def acollect(ctx: Any, principal: Principal) -> list[Card]:
    """Every pending review of the caller's tenant, newest first."""
    index = getattr(ctx, "threads", None)
    cards: list[Card] = []
    if index is None:
        return cards
    cursor: str | None = None
    seen = 0
    routes: dict[tuple[int, str], tuple[bool, bool]] = {}
    while seen < SCAN_LIMIT:
        page = await index.apage(principal.tenant, limit=500, cursor=cursor,
                                 review_only=True)
        for row in page.rows:
            try:
                cards.extend(cards_from_row(principal, row.thread_id, row.graph_id,
                                            row.updated_at, row.summary, ctx.graphs, routes))
            except Exception:  # noqa: BLE001 - one odd row must not take the list down
                log.warning("inbox: cannot list thread %s", row.thread_id, exc_info=True)
        seen += len(page.rows)
        cursor = page.next_cursor
        if not cursor:
            break
    return cards


@dataclass(frozen=True)
class InboxQuery:
    """The list's filters, order and page (all from the query string, all validated)."""

    graph: str | None = None
    agent: str | None = None
    reason: str | None = None
    age: str | None = None
    order: str = "newest"
    page: int = 1

    def params(self, **changes: Any) -> dict[str, str]:
        """Query parameters for a link to this query with ``changes``."""
        data = {"graph": self.graph, "agent": self.agent, "reason": self.reason,
                "age": self.age, "order": self.order, "page": self.page, **changes}
        return {k: str(v) for k, v in data.items()
                if v not in (None, "") and not (k == "order" and v == "newest")
                and not (k == "page" and v == 1)}


@dataclass(frozen=True)
class InboxPage:
    """One page of the filtered list, with what the filter menus offer."""

    cards: list[Card]
    total: int
    waiting: int
    page: int
    pages: int
    graphs: list[str]
    agents: list[str]


def select(cards: Iterable[Card], query: InboxQuery, *, now: float, page_size: int
           ) -> InboxPage:
    """Filter, order and paginate ``cards``."""
    every = list(cards)
    agents = sorted({c.agent for c in every if c.agent})
    graphs = sorted({c.graph_id for c in every if c.graph_id})
    chosen = [c for c in every
              if (query.graph is None or c.graph_id == query.graph)
              and (query.agent is None or c.agent == query.agent)
              and (query.reason is None or c.reason == query.reason)]
    if query.age is not None:
        _, lo, hi = AGES[query.age]
        chosen = [c for c in chosen if lo <= now - c.waiting_since < hi]
    chosen.sort(key=lambda c: (c.waiting_since, c.thread_id, c.interrupt_id),
                reverse=query.order == "newest")
    pages = max(1, math.ceil(len(chosen) / page_size))
    page = min(query.page, pages)
    start = (page - 1) * page_size
    return InboxPage(chosen[start:start + page_size], len(chosen), len(every), page, pages,
                     graphs, agents)


def when_text(value: object) -> str:
    """An ISO-8601 time as ``2026-01-01 12:00:05 UTC`` (anything else as it is)."""
    from datetime import UTC, datetime

    if not isinstance(value, str):
        return "" if value is None else str(value)
    try:
        stamp = datetime.fromisoformat(value)
    except ValueError:
        return value
    if stamp.tzinfo is not None:
        stamp = stamp.astimezone(UTC)
    return stamp.strftime("%Y-%m-%d %H:%M:%S") + (" UTC" if stamp.tzinfo else "")


def age_text(seconds: float) -> str:
    """``"3 min"``, ``"2 h"``, ``"5 d"``: how long something has waited."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return "just now"
    if seconds < 3600:
        return f"{int(seconds // 60)} min"
    if seconds < 86400:
        return f"{int(seconds // 3600)} h"
    return f"{int(seconds // 86400)} d"
