"""The review inbox web app: sign-in, the list, one review, a run's timeline.

Server-rendered (Jinja2, autoescaped) with a small script for the live count, client-side
checks and keyboard shortcuts; every page works without it. Pages authenticate with a
signed session cookie set at sign-in (`relaygraph.serve._inbox_session`); every form
carries the session's CSRF token. Decisions go through the same function as
``POST /reviews/{thread_id}`` (exactly once, under the thread's lease), recorded under
the signed-in reviewer. A client mistake gets a 4xx page that says why.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlencode

import jinja2
from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from relaygraph._errors import RelaygraphError
from relaygraph.serve._auth import Principal
from relaygraph.serve._context import ServerContext, get_context
from relaygraph.serve._errors import detail, status_for
from relaygraph.serve._inbox import (
    AGES,
    ORDERS,
    REASONS,
    InboxQuery,
    acollect,
    age_text,
    select,
    when_text,
)
from relaygraph.serve._inbox_forms import PREFIX
from relaygraph.serve._inbox_review import MovedOn, ReviewView, aload_review
from relaygraph.serve._inbox_session import (
    CSRF_FIELD,
    Session,
    csrf_ok,
    new_session,
    options,
    principal_for_key,
    read_session,
    write_session,
)
from relaygraph.serve._inbox_timeline import atimeline_view
from relaygraph.serve._reviews import InvalidReviewDecision, NotWaitingForReview, adecide
from relaygraph.serve._routes.reviews import resolve_thread
from relaygraph.serve._runner import thread_config
from relaygraph.serve._tenancy import ThreadNotFound, external_thread_id

log = logging.getLogger("relaygraph.serve.inbox")

HERE = Path(__file__).resolve().parent.parent
STATIC = HERE / "static"
STATIC_FILES = {"inbox.css": "text/css", "inbox.js": "text/javascript"}

_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    autoescape=True,  # everything from agents, users and thread ids is escaped
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_env.filters["q"] = lambda value: quote(str(value), safe="")
_env.filters["age"] = age_text
_env.filters["when"] = when_text


def when_iso(ts: float) -> str:
    from relaygraph._clock import iso

    return iso(ts)
templates = Jinja2Templates(env=_env)

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

router = APIRouter(prefix="/inbox", tags=["inbox"], include_in_schema=False)


class _Page(Exception):
    """Stop handling and answer with this response (a redirect or an error page)."""

    def __init__(self, response: Response) -> None:
        self.response = response


def _base(request: Request) -> str:
    return str(request.scope.get("root_path", "")) + "/inbox"


def _render(request: Request, name: str, context: dict[str, Any], status: int = 200,
            session: Session | None = None) -> Response:
    data = {"base": _base(request), "principal": None, "csrf": "", "csrf_field": CSRF_FIELD,
            "refresh_s": options(request).count_refresh_s, "reasons": REASONS,
            "title": "", **context}
    if session is not None:
        data["principal"] = session.principal
        data["csrf"] = session.csrf
    response = templates.TemplateResponse(request, name, data, status_code=status)
    response.headers.update(SECURITY_HEADERS)
    return response


def _error(request: Request, status: int, title: str, message: str,
           session: Session | None = None) -> Response:
    return _render(request, "error.html", {"title": title, "message": message,
                                           "status": status}, status, session)


def _signed_in(request: Request) -> tuple[Session, Principal]:
    session = read_session(request)
    if session is None or session.principal is None:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        nxt = urlencode({"next": target}) if request.method == "GET" else ""
        raise _Page(RedirectResponse(f"{_base(request)}/signin" + (f"?{nxt}" if nxt else ""),
                                     status_code=303))
    return session, session.principal


async def _form(request: Request, session: Session | None) -> Mapping[str, Any]:
    try:
        form = await request.form()
    except Exception as exc:  # noqa: BLE001 - malformed bodies are the client's mistake
        raise _Page(_error(request, 400, "Unreadable form",
                           f"the form data could not be read: {exc}", session)) from None
    if not csrf_ok(session, form.get(CSRF_FIELD)):
        raise _Page(_error(request, 403, "Form expired",
                           "This form is missing its security token or it does not match "
                           "your session (it may be from an old tab or another site). "
                           "Reload the page and try again.", session))
    return form


def _relaygraph_error(request: Request, exc: RelaygraphError, session: Session | None
                      ) -> Response:
    status = status_for(exc)
    if status is None:
        raise exc
    titles = {404: "Not found", 409: "Conflict", 422: "Invalid request",
              503: "Unavailable"}
    return _error(request, status, titles.get(status, "Request refused"), str(detail(exc)),
                  session)


def _broken(request: Request, thread_id: str, exc: Exception, session: Session | None
            ) -> Response:
    """One thread whose state cannot be read: its own page says so; nothing else breaks."""
    log.error("inbox: thread %r cannot be shown", thread_id, exc_info=exc)
    return _error(request, 500, "This thread cannot be shown",
                  f"Its state could not be read ({type(exc).__name__}: {str(exc)[:300]}). "
                  f"Other threads are not affected; an operator can inspect it with "
                  f"`relaygraph threads`.", session)


def _safe_next(value: object, base: str) -> str:
    if isinstance(value, str) and value.startswith(base) and "//" not in value \
            and "\\" not in value and len(value) < 2000:
        return value
    return base


# --------------------------------------------------------------------------- static


@router.get("/static/{name}")
async def static(name: str) -> Response:
    """The inbox's stylesheet and script (shipped in the package; no CDN)."""
    media = STATIC_FILES.get(name)
    if media is None:
        return JSONResponse({"detail": "not found"}, status_code=404)
    return FileResponse(STATIC / name, media_type=media,
                        headers={"Cache-Control": "public, max-age=3600",
                                 "X-Content-Type-Options": "nosniff"})


# --------------------------------------------------------------------------- sign-in


@router.get("/signin")
async def signin_page(request: Request) -> Response:
    """The sign-in form (sets a pre-sign-in session that carries the CSRF token)."""
    session = read_session(request)
    if session is None:
        session = new_session(request)
    nxt = _safe_next(request.query_params.get("next"), _base(request))
    response = _render(request, "signin.html", {"title": "Sign in", "next": nxt,
                                                "error": None}, session=session)
    write_session(request, response, session)
    return response


@router.post("/signin")
async def signin(request: Request) -> Response:
    """Check the API key with the server's authenticator; start a signed session."""
    session = read_session(request)
    try:
        form = await _form(request, session)
    except _Page as page:
        return page.response
    nxt = _safe_next(form.get("next"), _base(request))
    opts = options(request)
    client = request.client.host if request.client else "unknown"
    if opts.signin_blocked(client):
        return _error(request, 429, "Too many attempts",
                      f"Too many failed sign-ins from this address; wait "
                      f"{opts.signin_window:.0f} seconds and try again.", session)
    key = form.get("api_key")
    principal = None
    if isinstance(key, str) and 0 < len(key) <= 1000:
        principal = await principal_for_key(request, key.strip())
    if principal is None:
        assert session is not None
        opts.signin_failed(client)
        return _render(request, "signin.html", {
            "title": "Sign in", "next": nxt,
            "error": "That API key is not valid here. Use the key your administrator gave "
                     "you for your tenant."}, 401, session)
    fresh = new_session(request, principal)
    response = RedirectResponse(nxt, status_code=303)
    write_session(request, response, fresh)
    return response


@router.post("/signout")
async def signout(request: Request) -> Response:
    """End the session."""
    session = read_session(request)
    try:
        await _form(request, session)
    except _Page as page:
        return page.response
    response = RedirectResponse(f"{_base(request)}/signin", status_code=303)
    write_session(request, response, None)
    return response


# --------------------------------------------------------------------------- the list


def _query(request: Request, ctx: ServerContext) -> InboxQuery:
    """The list's query from the query string; a bad value is a 422 page."""
    p = request.query_params
    problems = []

    def pick(name: str, allowed: Any) -> str | None:
        value = p.get(name) or None
        if value is not None and value not in allowed:
            problems.append(f"{name} must be one of {', '.join(sorted(allowed))}; "
                            f"got {value[:60]!r}")
            return None
        return value

    graph = pick("graph", ctx.graphs)
    reason = pick("reason", REASONS)
    age = pick("age", AGES)
    order = pick("order", ORDERS) or "newest"
    agent = p.get("agent") or None
    if agent is not None and len(agent) > 200:
        problems.append("agent is at most 200 characters")
    raw_page = p.get("page") or "1"
    page = int(raw_page) if raw_page.isdigit() and len(raw_page) < 7 else 0
    if page < 1:
        problems.append(f"page must be a positive whole number, got {raw_page[:20]!r}")
    if problems:
        raise _Page(_error(request, 422, "Invalid filter", "; ".join(problems),
                           read_session(request)))
    return InboxQuery(graph, agent, reason, age, order, page)


@router.get("")
async def inbox(request: Request) -> Response:
    """Pending reviews, newest or oldest first, filtered and paginated."""
    try:
        session, principal = _signed_in(request)
        ctx = get_context(request)
        query = _query(request, ctx)
    except _Page as stop:
        return stop.response
    opts = options(request)
    now = opts.clock()
    found = select(await acollect(ctx, principal), query, now=now, page_size=opts.page_size)
    return _render(request, "inbox.html", {
        "title": f"Inbox ({found.waiting})", "page": found, "query": query, "now": now,
        "ages": AGES, "graphs": sorted(ctx.graphs), "orders": ORDERS,
        "link": lambda **kw: "?" + urlencode(query.params(**kw)),
    }, session=session)


@router.get("/count")
async def count(request: Request) -> Response:
    """``{"waiting": n, "gone": [...]}``: the live count, and which listed cards went stale.

    ``?cards=`` names the cards on the page (``thread_id:interrupt_id``, each
    percent-encoded, comma-separated); ``gone`` lists those that no longer wait.
    """
    session = read_session(request)
    if session is None or session.principal is None:
        return JSONResponse({"detail": "not signed in"}, status_code=401)
    ctx = get_context(request)
    cards = await acollect(ctx, session.principal)
    live = {f"{c.thread_id}:{c.interrupt_id}" for c in cards}
    asked = [unquote(c) for c in (request.query_params.get("cards") or "").split(",")
             if c][:500]
    return JSONResponse({"waiting": len(cards), "gone": [c for c in asked if c not in live]},
                        headers={"Cache-Control": "no-store"})


# --------------------------------------------------------------------------- one review


async def _load(request: Request, ctx: ServerContext, principal: Principal, thread_id: str,
                interrupt_id: str | None) -> ReviewView | MovedOn:
    internal, gid = await resolve_thread(ctx, principal, thread_id)
    graph = ctx.graph(gid)
    snapshot = await graph.aget_state(thread_config(internal))
    if (snapshot.config.get("configurable") or {}).get("checkpoint_id") is None:
        raise ThreadNotFound(f"thread {thread_id!r} not found")  # indexed, but no state
    return await aload_review(graph, gid, thread_id, internal, interrupt_id, snapshot)


async def _neighbours(ctx: ServerContext, principal: Principal, thread_id: str,
                      interrupt_id: str) -> tuple[str | None, str | None]:
    cards = sorted(await acollect(ctx, principal),
                   key=lambda c: (c.waiting_since, c.thread_id), reverse=True)
    keys = [(c.thread_id, c.interrupt_id) for c in cards]

    def href(i: int) -> str | None:
        if not 0 <= i < len(keys):
            return None
        t, intr = keys[i]
        return f"reviews/{quote(t, safe='')}?interrupt={quote(intr, safe='')}"

    try:
        at = keys.index((thread_id, interrupt_id))
    except ValueError:
        return href(0), None
    return href(at - 1), href(at + 1)


def _interrupt_param(request: Request, value: object) -> str | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str) or len(value) > 200:
        raise _Page(_error(request, 422, "Invalid request",
                           "interrupt must be an interrupt id (at most 200 characters)",
                           read_session(request)))
    return value


async def _review_page(request: Request, session: Session, principal: Principal,
                       thread_id: str, interrupt_id: str | None, *, status: int = 200,
                       errors: Mapping[str, str] | None = None,
                       posted: Mapping[str, Any] | None = None) -> Response:
    ctx = get_context(request)
    try:
        view = await _load(request, ctx, principal, thread_id, interrupt_id)
    except RelaygraphError as exc:
        return _relaygraph_error(request, exc, session)
    except Exception as exc:  # noqa: BLE001 - see _broken
        return _broken(request, thread_id, exc, session)
    if isinstance(view, MovedOn):
        return _render(request, "moved_on.html", {"title": "Moved on", "gone": view},
                       409 if status != 200 else 200, session)
    errors = dict(errors or {})
    for f in view.fields:
        if errors:
            f.error = errors.get(f.name)
        if posted is not None and isinstance(posted.get(f.input_name), str):
            f.value = posted[f.input_name]
    prev_href, next_href = await _neighbours(ctx, principal, thread_id, view.interrupt_id)
    return _render(request, "review.html", {
        "title": f"Review · {thread_id}", "view": view, "errors": errors,
        "posted": posted or {}, "prev_href": prev_href, "next_href": next_href,
    }, status, session)


@router.get("/reviews/{thread_id}")
async def review(thread_id: str, request: Request) -> Response:
    """One pending review: the transcript with provenance, the verdicts, the typed form."""
    try:
        session, principal = _signed_in(request)
        interrupt_id = _interrupt_param(request, request.query_params.get("interrupt"))
    except _Page as page:
        return page.response
    return await _review_page(request, session, principal, thread_id, interrupt_id)


@router.post("/reviews/{thread_id}")
async def decide(thread_id: str, request: Request) -> Response:
    """Approve, edit or reject; re-shows the page with the reasons when refused."""
    try:
        session, principal = _signed_in(request)
        form = await _form(request, session)
        interrupt_id = _interrupt_param(request, form.get("interrupt_id"))
    except _Page as page:
        return page.response
    ctx = get_context(request)
    try:
        view = await _load(request, ctx, principal, thread_id, interrupt_id)
    except RelaygraphError as exc:
        return _relaygraph_error(request, exc, session)
    except Exception as exc:  # noqa: BLE001 - see _broken
        return _broken(request, thread_id, exc, session)
    if isinstance(view, MovedOn):
        return _render(request, "moved_on.html", {"title": "Moved on", "gone": view}, 409,
                       session)
    decision, errors = _decision(view, form)
    if errors:
        return await _review_page(request, session, principal, thread_id, view.interrupt_id,
                                  status=422, errors=errors, posted=form)
    try:
        await adecide(ctx, view.graph_id, view.internal_id, decision,
                      reviewer=principal.reviewer, interrupt_id=view.interrupt_id)
    except NotWaitingForReview:
        return await _review_page(request, session, principal, thread_id, view.interrupt_id,
                                  status=409)
    except InvalidReviewDecision as exc:
        return await _review_page(request, session, principal, thread_id, view.interrupt_id,
                                  status=422, errors={"*": str(exc)}, posted=form)
    except RelaygraphError as exc:
        return _relaygraph_error(request, exc, session)
    target = f"{_base(request)}/threads/{quote(thread_id, safe='')}?" + urlencode(
        {"decided": decision["action"]})
    return RedirectResponse(target, status_code=303)


def _decision(view: ReviewView, form: Mapping[str, Any]) -> tuple[dict[str, Any],
                                                                   dict[str, str]]:
    """The decision a posted form asks for, or the reasons it is refused."""
    from relaygraph.serve._inbox_forms import parse_form

    action = form.get("action")
    if action not in ("approve", "edit", "reject"):
        return {}, {"*": "choose approve, edit or reject"}
    comment = form.get("comment")
    comment = comment.strip() if isinstance(comment, str) and comment.strip() else None
    if comment is not None and len(comment) > 5000:
        return {}, {"comment": "the comment is at most 5000 characters"}
    if action == "reject":
        if "reject" not in view.actions:
            return {}, {"*": "this review cannot be rejected"}
        reason = form.get("reason")
        if not isinstance(reason, str) or not reason.strip():
            return {}, {"reason": "say why you reject it: the agent gets this as feedback"}
        if len(reason) > 5000:
            return {}, {"reason": "the reason is at most 5000 characters"}
        return {"action": "reject", "reason": reason.strip(), "comment": comment}, {}
    if view.reconcile:
        if action == "approve" and "approve" not in view.actions:
            return {}, {"*": "candidates disagree: decide every conflicting field, or reject"}
        form = _picked(view, form)
    edits, errors = parse_form(view.fields, form, view.value, view.contract)
    if view.reconcile:
        # the reconcile node asks again for a conflict left open: refuse it here instead
        for f in view.fields:
            if f.conflict and f.name not in edits and f.name not in errors:
                errors[f.name] = "decide this conflict: choose a candidate's value or enter one"
            elif f.conflict and f.name in errors and not _posted(form, f.input_name):
                errors[f.name] = "decide this conflict: choose a candidate's value or enter one"
    if errors:
        return {}, errors
    if edits:
        if "edit" not in view.actions:
            return {}, {"*": "this review can only be approved or rejected as it is; "
                             "undo your changes"}
        return {"action": "edit", "edits": edits, "comment": comment}, {}
    if action == "edit" or "approve" not in view.actions:
        what = ("fill in the contract (the handoff produced nothing to approve)"
                if view.value is None else "change at least one field, or approve it as is")
        return {}, {"*": what}
    return {"action": "approve", "comment": comment}, {}


def _posted(form: Mapping[str, Any], name: str) -> bool:
    raw = form.get(name)
    return isinstance(raw, str) and bool(raw.strip())


def _picked(view: ReviewView, form: Mapping[str, Any]) -> Mapping[str, Any]:
    """The form with each conflict left blank filled from the candidate picked for it."""
    out = dict(form)
    for f in view.fields:
        pick = form.get("pick." + f.name)
        if not f.conflict or _posted(form, f.input_name) or not isinstance(pick, str):
            continue
        if pick.isdigit() and int(pick) < len(f.choices):
            out[f.input_name] = f.choices[int(pick)][1]
    return out


# --------------------------------------------------------------------------- timeline


THREAD_STATUSES = ("running", "waiting", "interrupted", "finished", "failed", "error")


@router.get("/threads")
async def threads(request: Request) -> Response:
    """The tenant's threads, most recently updated first, each linking to its timeline."""
    try:
        session, principal = _signed_in(request)
    except _Page as stop:
        return stop.response
    ctx = get_context(request)
    p = request.query_params
    graph, status, cursor = p.get("graph") or None, p.get("status") or None, p.get("cursor")
    problems = []
    if graph is not None and graph not in ctx.graphs:
        problems.append(f"graph must be one of {', '.join(sorted(ctx.graphs))}; got "
                        f"{graph[:60]!r}")
    if status is not None and status not in THREAD_STATUSES:
        problems.append(f"status must be one of {', '.join(THREAD_STATUSES)}; got "
                        f"{status[:60]!r}")
    if cursor is not None and len(cursor) > 2000:
        problems.append("cursor is at most 2000 characters")
    if problems:
        return _error(request, 422, "Invalid filter", "; ".join(problems), session)
    try:
        page = await ctx.threads.apage(principal.tenant, limit=50, cursor=cursor or None,
                                       graph_id=graph, status=status)
    except ValueError as exc:
        return _error(request, 422, "Invalid request", str(exc), session)
    rows = []
    for row in page.rows:
        try:
            tid = external_thread_id(principal, row.thread_id)
        except ThreadNotFound:
            continue
        rows.append({"thread_id": tid, "graph_id": row.graph_id, "status": row.status,
                     "next": list(row.summary.get("next") or []),
                     "updated_at": when_iso(row.updated_at), "review": row.review,
                     "error": row.summary.get("error")})
    keep = {k: v for k, v in (("graph", graph), ("status", status)) if v}
    return _render(request, "threads.html", {
        "title": "Threads", "rows": rows, "graphs": sorted(ctx.graphs), "graph": graph,
        "status": status, "statuses": THREAD_STATUSES, "cursor": cursor,
        "next_cursor": page.next_cursor, "first_params": urlencode(keep),
        "next_params": urlencode({**keep, "cursor": page.next_cursor or ""}),
    }, session=session)


@router.get("/threads/{thread_id}")
async def thread_timeline(thread_id: str, request: Request) -> Response:
    """A run's timeline: steps, handoffs, guard decisions, reviews, cost, the graph drawn."""
    try:
        session, principal = _signed_in(request)
    except _Page as page:
        return page.response
    ctx = get_context(request)
    try:
        internal, gid = await resolve_thread(ctx, principal, thread_id)
        view = await atimeline_view(ctx.graph(gid), gid, thread_id, internal)
    except RelaygraphError as exc:
        return _relaygraph_error(request, exc, session)
    except Exception as exc:  # noqa: BLE001 - see _broken
        return _broken(request, thread_id, exc, session)
    decided = request.query_params.get("decided")
    return _render(request, "timeline.html", {
        "title": f"Timeline · {thread_id}", "tl": view,
        "decided": decided if decided in ("approve", "edit", "reject") else None,
    }, session=session)


# --------------------------------------------------------------------------- trust


@router.get("/trust")
async def trust(request: Request) -> Response:
    """Each governed agent's standing with its autonomy policy, with a reset."""
    from relaygraph.serve._inbox_trust import atrust_rows

    try:
        session, _ = _signed_in(request)
    except _Page as stop:
        return stop.response
    rows = await atrust_rows(get_context(request).graphs)
    # the notice after a reset names an agent of this page, never text from a crafted link
    reset = request.query_params.get("reset")
    listed = {f"{r.standing.agent} · {r.standing.kind}" for r in rows}
    return _render(request, "trust.html", {
        "title": "Trust", "rows": rows,
        "reset": f"{reset} is back under full review." if reset in listed else None,
    }, session=session)


@router.post("/trust/reset")
async def trust_reset(request: Request) -> Response:
    """Reset one agent (and decision kind) to full review."""
    from relaygraph.serve._inbox_trust import areset

    try:
        session, principal = _signed_in(request)
        form = await _form(request, session)
    except _Page as stop:
        return stop.response
    target = form.get("target")
    gid, _, node = target.partition(":") if isinstance(target, str) else ("", "", "")
    standing = await areset(get_context(request).graphs, gid, node, principal.reviewer,
                            options(request).clock())
    if standing is None:
        return _error(request, 404, "Not found",
                      f"no review node with an autonomy policy is called {str(target)[:80]!r}",
                      session)
    return RedirectResponse(f"{_base(request)}/trust?" + urlencode(
        {"reset": f"{standing.agent} · {standing.kind}"}), status_code=303)


# --------------------------------------------------------------------------- anything else


@router.get("/{rest:path}")
async def not_found(rest: str, request: Request) -> Response:
    """Any other address under the inbox (an id holding a slash, a mistyped link): a 404
    page with the way back, not the API's JSON. Registered last, so it matches nothing else.
    """
    if not rest:
        return RedirectResponse(_base(request), status_code=307)
    return _error(request, 404, "Not found",
                  f"There is no inbox page at {request.url.path[:200]!r}. Thread ids never "
                  f"contain a slash.", read_session(request))


__all__ = ["PREFIX", "router"]
