"""Thread ids as clients see them and as the saver stores them.

A client names threads freely within its tenant; the server stores them as
``"{tenant}/{thread_id}"``. The tenant always comes from the authenticated `Principal`,
never from the request, and ``/`` is refused in client ids, so no client id can reach
another tenant's namespace.
"""

from __future__ import annotations

from relaygraph._errors import RelaygraphError
from relaygraph.serve._auth import Principal
from relaygraph.serve._errors import NotFound

MAX_THREAD_ID_CHARS = 128
"""Longest client thread id. With the tenant prefix it stays within the saver's 255."""

SEPARATOR = "/"


class InvalidThreadId(RelaygraphError, ValueError):
    """A client-supplied thread id the server refuses (answered with 422)."""


class ThreadNotFound(NotFound):
    """No such thread for this tenant (answered with 404, also for other tenants' threads)."""


def check_thread_id(thread_id: object) -> str:
    """Validate a client thread id and return it.

    Raises:
        InvalidThreadId: not a string, empty, longer than 128 characters, or holding
            ``/``, NUL or other control characters, or lone surrogates.
    """
    if not isinstance(thread_id, str):
        raise InvalidThreadId(f"thread_id must be a string, got {type(thread_id).__name__}")
    if not thread_id:
        raise InvalidThreadId("thread_id must not be empty")
    if len(thread_id) > MAX_THREAD_ID_CHARS:
        raise InvalidThreadId(
            f"thread_id is at most {MAX_THREAD_ID_CHARS} characters, got {len(thread_id)}")
    if SEPARATOR in thread_id:
        raise InvalidThreadId(f"thread_id must not contain '/', got {thread_id[:40]!r}")
    for ch in thread_id:
        code = ord(ch)
        if code < 0x20 or code == 0x7F:
            raise InvalidThreadId(
                f"thread_id must not contain control characters (found U+{code:04X})")
        if 0xD800 <= code <= 0xDFFF:
            raise InvalidThreadId(
                f"thread_id must be valid Unicode text (found a lone surrogate U+{code:04X})")
    return thread_id


def internal_thread_id(principal: Principal, thread_id: str) -> str:
    """The saver's thread id for a client's thread id in the caller's tenant."""
    return f"{principal.tenant}{SEPARATOR}{check_thread_id(thread_id)}"


def tenant_prefix(principal: Principal) -> str:
    """The prefix every internal thread id of the caller's tenant starts with."""
    return f"{principal.tenant}{SEPARATOR}"


def owns(principal: Principal, internal: str) -> bool:
    """Whether an internal thread id is in the caller's tenant."""
    return internal.startswith(tenant_prefix(principal))


def external_thread_id(principal: Principal, internal: str) -> str:
    """The client's thread id for an internal one.

    Raises:
        ThreadNotFound: the thread is in another tenant (so callers answer 404, as if the
            thread did not exist).
    """
    prefix = tenant_prefix(principal)
    if not internal.startswith(prefix):
        raise ThreadNotFound("thread not found")
    return internal[len(prefix):]
