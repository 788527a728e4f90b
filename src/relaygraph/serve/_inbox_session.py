"""Browser sessions for the review inbox: a signed cookie and a CSRF token per session.

A reviewer signs in with their API key; the key goes through the app's own authenticator
(the same one the JSON API uses) and is never stored. The cookie holds the principal it
returned, a CSRF token and the time it was issued, signed with the session secret
(``itsdangerous``), so a tampered or expired cookie is simply not a session.

The secret is ``RELAYGRAPH_SESSION_SECRET`` (or ``InboxOptions.session_secret``). Without
it, workers that share ``RELAYGRAPH_API_KEYS`` derive the same secret from those keys (so a
session signed by one worker is valid on the others, and rotating the keys ends every
session); with neither, each process makes up a random one.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from fastapi.responses import Response
from itsdangerous import BadSignature, URLSafeTimedSerializer

from relaygraph.serve._auth import Principal

SESSION_SECRET_ENV = "RELAYGRAPH_SESSION_SECRET"
COOKIE = "relaygraph_inbox"
CSRF_FIELD = "csrf_token"


@dataclass
class InboxOptions:
    """Settings of the review inbox; put one on ``app.state.relaygraph_inbox`` to override.

    Attributes:
        session_secret: signs session cookies (default: ``RELAYGRAPH_SESSION_SECRET``, else
            a random secret per process).
        session_max_age: seconds a sign-in lasts.
        page_size: reviews per inbox page.
        count_refresh_s: how often the inbox page refreshes its waiting count.
        clock: seconds since the epoch (injected in tests).
        secure_cookie: mark the cookie ``Secure`` (default: when the request is HTTPS).
        signin_failures: failed sign-ins one client may make per ``signin_window`` seconds
            before it gets 429 (keys are long, but guessing should still be slow).
    """

    session_secret: str = field(default_factory=lambda: default_secret())
    session_max_age: int = 12 * 3600
    page_size: int = 20
    count_refresh_s: int = 15
    clock: Callable[[], float] = time.time
    secure_cookie: bool | None = None
    signin_failures: int = 10
    signin_window: float = 60.0
    _failures: dict[str, list[float]] = field(default_factory=dict, repr=False, init=False)

    def signin_blocked(self, client: str) -> bool:
        """Whether ``client`` has used up its failed sign-ins for now."""
        now = self.clock()
        recent = [t for t in self._failures.get(client, []) if now - t < self.signin_window]
        if recent:
            self._failures[client] = recent
        else:
            self._failures.pop(client, None)
        return len(recent) >= self.signin_failures

    def signin_failed(self, client: str) -> None:
        """Count one failed sign-in of ``client``."""
        if len(self._failures) > 10_000:  # bounded memory under a spray of addresses
            self._failures.clear()
        self._failures.setdefault(client, []).append(self.clock())


def default_secret() -> str:
    """``RELAYGRAPH_SESSION_SECRET``, else one derived from ``RELAYGRAPH_API_KEYS``, else random."""
    from relaygraph.serve._auth import API_KEYS_ENV

    explicit = os.environ.get(SESSION_SECRET_ENV)
    if explicit:
        return explicit
    keys = os.environ.get(API_KEYS_ENV, "").strip()
    if keys:
        return hmac.new(keys.encode(), b"relaygraph-inbox-session", hashlib.sha256).hexdigest()
    return secrets.token_urlsafe(32)


def options(request: Request) -> InboxOptions:
    """The app's inbox options (created on first use)."""
    state = request.app.state
    opts = getattr(state, "relaygraph_inbox", None)
    if not isinstance(opts, InboxOptions):
        opts = InboxOptions()
        state.relaygraph_inbox = opts
    return opts


@dataclass(frozen=True)
class Session:
    """What the cookie says: a CSRF token and, once signed in, who it is."""

    csrf: str
    principal: Principal | None = None
    issued: float = 0.0


def _serializer(opts: InboxOptions) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(opts.session_secret, salt="relaygraph-inbox-session")


def read_session(request: Request) -> Session | None:
    """The request's session, or None (no cookie, bad signature, expired, malformed)."""
    raw = request.cookies.get(COOKIE)
    if not raw or len(raw) > 4096:
        return None
    opts = options(request)
    try:
        data = _serializer(opts).loads(raw, max_age=opts.session_max_age)
    except BadSignature:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("csrf"), str):
        return None
    principal = None
    who = data.get("p")
    if isinstance(who, list) and len(who) == 2 and all(isinstance(x, str) for x in who):
        try:
            principal = Principal(who[0], who[1])
        except Exception:  # noqa: BLE001 - a cookie naming an invalid tenant is no session
            return None
    issued = data.get("t")
    return Session(data["csrf"], principal, float(issued) if isinstance(issued, int | float)
                   else 0.0)


def new_session(request: Request, principal: Principal | None = None) -> Session:
    """A fresh session with a new CSRF token (rotated at every sign-in)."""
    return Session(secrets.token_urlsafe(24), principal, options(request).clock())


def write_session(request: Request, response: Response, session: Session | None) -> None:
    """Set (or, with None, clear) the session cookie on ``response``."""
    opts = options(request)
    secure = (request.url.scheme == "https") if opts.secure_cookie is None \
        else opts.secure_cookie
    if session is None:
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="lax", secure=secure)
        return
    data: dict[str, Any] = {"csrf": session.csrf, "t": session.issued}
    if session.principal is not None:
        data["p"] = [session.principal.tenant, session.principal.reviewer]
    response.set_cookie(COOKIE, _serializer(opts).dumps(data), max_age=opts.session_max_age,
                        path="/", httponly=True, samesite="lax", secure=secure)


def csrf_ok(session: Session | None, sent: object) -> bool:
    """Whether a form's CSRF token matches the session's (constant time)."""
    if session is None or not isinstance(sent, str) or not sent:
        return False
    return hmac.compare_digest(session.csrf.encode(), sent.encode("utf-8", "surrogateescape"))


async def principal_for_key(request: Request, api_key: str) -> Principal | None:
    """Run the app's authenticator on ``api_key`` as if it came in the ``x-api-key`` header."""
    from relaygraph.serve._auth import authenticate

    scope = dict(request.scope)
    scope["headers"] = [(b"x-api-key", api_key.encode("utf-8", "surrogateescape"))]
    scope["state"] = {}
    return await authenticate(Request(scope))
