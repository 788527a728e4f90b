"""Who is calling: API keys (``x-api-key``) or a pluggable authenticator, and tenants.

Every route that touches threads depends on `require_principal`; the tenant it returns
namespaces thread ids (see `relaygraph.serve._tenancy`) and the reviewer name is what a
review decision records. Keys come from ``RELAYGRAPH_API_KEYS`` (``tenant:key,...`` or
``tenant:reviewer:key,...``) or the config file; none are built in.
"""

from __future__ import annotations

import hmac
import inspect
import os
import re
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import Protocol

from fastapi import HTTPException, Request

from relaygraph._errors import ConfigurationError

API_KEYS_ENV = "RELAYGRAPH_API_KEYS"
"""``tenant:key`` (or ``tenant:reviewer:key``) entries, comma-separated."""

_NAME = re.compile(r"[A-Za-z0-9_.@-]{1,64}")
_MIN_KEY_CHARS = 16


@dataclass(frozen=True)
class Principal:
    """An authenticated caller.

    Attributes:
        tenant: the tenant whose threads the caller sees, runs and reviews.
        reviewer: the name recorded on the review decisions the caller submits.
    """

    tenant: str
    reviewer: str

    def __post_init__(self) -> None:
        check_tenant(self.tenant)
        if not self.reviewer or len(self.reviewer) > 200:
            raise ConfigurationError(f"reviewer names are 1-200 characters, got {self.reviewer!r}")


def check_tenant(tenant: str) -> str:
    """A tenant name: 1-64 letters, digits, ``_ . @ -``."""
    if not isinstance(tenant, str) or not _NAME.fullmatch(tenant):
        raise ConfigurationError(
            f"tenant names are 1-64 letters, digits or '_.@-', got {tenant!r}")
    return tenant


class Authenticator(Protocol):
    """Maps a request to a `Principal`, or None when it is not authenticated.

    May be sync or async. Bring OIDC or your own scheme by passing any such callable as
    ``create_app(..., auth=...)``; it can read headers, cookies or the client address.
    """

    def __call__(self, request: Request) -> Principal | None | Awaitable[Principal | None]:
        ...


def parse_api_keys(spec: str) -> dict[str, Principal]:
    """Parse ``tenant:key,...`` (or ``tenant:reviewer:key``) into ``{key: Principal}``.

    Raises:
        ConfigurationError: a malformed entry, a short key or a key listed twice.
    """
    keys: dict[str, Principal] = {}
    for raw in spec.split(","):
        entry = raw.strip()
        if not entry:
            continue
        parts = entry.split(":")
        if len(parts) == 2:
            tenant, key = parts
            reviewer = tenant
        elif len(parts) == 3:
            tenant, reviewer, key = parts
        else:
            raise ConfigurationError(
                f"{API_KEYS_ENV} entries are 'tenant:key' or 'tenant:reviewer:key', got an "
                f"entry with {len(parts)} part(s) starting {entry.split(':')[0]!r}")
        add_key(keys, key.strip(), Principal(tenant.strip(), reviewer.strip()))
    return keys


def add_key(keys: dict[str, Principal], key: str, principal: Principal) -> None:
    """Add one key, refusing short or repeated keys (a repeat would make tenants ambiguous)."""
    if len(key) < _MIN_KEY_CHARS:
        raise ConfigurationError(
            f"API keys must be at least {_MIN_KEY_CHARS} characters; the key for tenant "
            f"{principal.tenant!r} has {len(key)}")
    if key in keys:
        raise ConfigurationError(f"an API key is listed twice (tenants {keys[key].tenant!r} "
                                 f"and {principal.tenant!r})")
    keys[key] = principal


def keys_from_env(environ: Mapping[str, str] | None = None) -> dict[str, Principal]:
    """The keys in ``RELAYGRAPH_API_KEYS`` (empty if unset)."""
    env = os.environ if environ is None else environ
    return parse_api_keys(env.get(API_KEYS_ENV, ""))


def api_key_authenticator(keys: Mapping[str, Principal]) -> Authenticator:
    """Authenticate by the ``x-api-key`` header (or ``Authorization: Bearer <key>``).

    Every configured key is compared with `hmac.compare_digest`, so the time taken does not
    depend on how much of a key matched, nor on which key matched.

    Raises:
        ConfigurationError: no keys (serving without auth must be asked for explicitly).
    """
    if not keys:
        raise ConfigurationError(
            f"no API keys are configured: set {API_KEYS_ENV}='tenant:key,...' or list keys "
            f"in the config file's [auth] section")
    table = [(k.encode("utf-8"), p) for k, p in keys.items()]

    def authenticate(request: Request) -> Principal | None:
        sent = request.headers.get("x-api-key")
        if sent is None:
            auth = request.headers.get("authorization", "")
            if auth[:7].lower() == "bearer ":
                sent = auth[7:].strip()
        if not sent:
            return None
        given = sent.encode("utf-8", "surrogateescape")
        found: Principal | None = None
        for key, principal in table:  # no early exit: constant time over the key set
            if hmac.compare_digest(given, key):
                found = principal
        return found

    return authenticate


def anonymous_authenticator(tenant: str = "default", reviewer: str = "anonymous"
                            ) -> Authenticator:
    """Everyone is one tenant: only for local development (``auth.anonymous = true``)."""
    principal = Principal(tenant, reviewer)

    def authenticate(request: Request) -> Principal:
        return principal

    return authenticate


async def authenticate(request: Request) -> Principal | None:
    """Run the app's authenticator on a request (sync or async)."""
    from relaygraph.serve._context import get_context

    result = get_context(request).auth(request)
    if inspect.isawaitable(result):
        result = await result
    if result is not None and not isinstance(result, Principal):
        raise TypeError(f"the authenticator must return a Principal or None, got "
                        f"{type(result).__name__}")
    return result


async def require_principal(request: Request) -> Principal:
    """FastAPI dependency: the authenticated caller, or 401."""
    cached = getattr(request.state, "principal", None)
    if isinstance(cached, Principal):
        return cached
    principal = await authenticate(request)
    if principal is None:
        raise HTTPException(401, "missing or invalid API key: send it in the x-api-key header",
                            headers={"WWW-Authenticate": "ApiKey"})
    request.state.principal = principal
    return principal


_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def same_origin(request: Request) -> bool:
    """Whether a browser request comes from a page of this server (a CSRF check).

    Safe methods always pass; others need ``Sec-Fetch-Site: same-origin`` or an
    ``Origin`` equal to this server's, which a page of another site cannot forge.
    """
    if request.method in _SAFE_METHODS:
        return True
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site == "same-origin"
    origin = request.headers.get("origin")
    host = request.headers.get("host")
    return origin is not None and host is not None and origin in (
        f"http://{host}", f"https://{host}")


async def require_principal_or_session(request: Request) -> Principal:
    """Like `require_principal`, also accepting a signed-in inbox session (a browser).

    For the LangServe playground, which cannot send an ``x-api-key`` header: a reviewer
    signed in at ``/inbox/signin`` runs the playground as themself. A request that relies
    on the cookie must come from this server's own pages (`same_origin`).
    """
    cached = getattr(request.state, "principal", None)
    if isinstance(cached, Principal):
        return cached
    principal = await authenticate(request)
    if principal is None:
        try:
            from relaygraph.serve._inbox_session import read_session
        except ImportError:  # the inbox is not installed
            read_session = None  # type: ignore[assignment]
        session = read_session(request) if read_session is not None else None
        if session is not None and session.principal is not None and same_origin(request):
            principal = session.principal
    if principal is None:
        raise HTTPException(401, "missing or invalid API key: send it in the x-api-key header "
                                 "(or sign in at /inbox/signin to use the playground)",
                            headers={"WWW-Authenticate": "ApiKey"})
    request.state.principal = principal
    return principal
