"""Validation of the identifiers that become primary-key columns.

Every identifier is checked before any SQL runs, so a value that cannot be stored and
found again exactly is refused with a message that says why, instead of being truncated,
case-folded or rejected by the driver halfway through a transaction.
"""

from __future__ import annotations

import re
from typing import Any

from relaygraph._sql import MAX_KEY_CHARS
from relaygraph.checkpointers._errors import InvalidFilterError, InvalidKeyError

_FILTER_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,127}$")


def check_key(value: Any, what: str, limit: int = MAX_KEY_CHARS) -> str:
    """Return ``value`` as a storable key string or raise :class:`InvalidKeyError`."""
    if type(value) is str and len(value) <= limit and value.isascii() and "\x00" not in value:
        return value  # the common case (ASCII is valid UTF-8), checked on every put
    if isinstance(value, bytes | bytearray):
        raise InvalidKeyError(f"{what} must be a string, got bytes {bytes(value)[:40]!r}")
    s = value if isinstance(value, str) else str(value)
    if len(s) > limit:
        raise InvalidKeyError(
            f"{what} is {len(s)} characters long; the limit is {limit}. "
            f"Use a shorter id (for example a hash of this one)."
        )
    if "\x00" in s:
        raise InvalidKeyError(
            f"{what} contains a NUL character (\\x00), which PostgreSQL cannot store: {s[:40]!r}"
        )
    try:
        s.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidKeyError(f"{what} is not valid unicode (lone surrogate): {s[:40]!r}") from exc
    return s


def check_keys(values: Any, what: str, call: str) -> list[str]:
    """``check_key`` for each of a sequence of ids; a bare string is refused, not taken
    as the sequence of its characters (``prune("case-42")`` pruned threads "c", "a", ...)."""
    if isinstance(values, str | bytes | bytearray):
        raise InvalidKeyError(
            f"{what}s must be a list of ids, got the string {values[:40]!r}; "
            f"call {call}([{values[:40]!r}])")
    return [check_key(v, what) for v in values]


def check_filter(filter: dict[str, Any] | None) -> dict[str, Any]:
    """Validate ``list(filter=…)``: keys must be plain identifiers."""
    if not filter:
        return {}
    if not isinstance(filter, dict):
        raise InvalidFilterError(f"filter must be a dict, got {type(filter).__name__}")
    for key in filter:
        if not isinstance(key, str) or not _FILTER_KEY.match(key):
            raise InvalidFilterError(
                f"metadata filter key {key!r} is not allowed: keys must match "
                f"{_FILTER_KEY.pattern} (letters, digits, '_', '.', '-')"
            )
    return filter
