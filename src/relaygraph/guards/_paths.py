"""Dotted paths into graph state (``"case.confidence"``), read at run time and checked
against a state schema at build time."""

from __future__ import annotations

import dataclasses
import re
import types
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Union, get_args, get_origin, get_type_hints

from relaygraph._errors import ConfigurationError

_SEGMENT = re.compile(r"^(?:[A-Za-z_][A-Za-z0-9_]*|-?[0-9]+)$")


class PathError(LookupError):
    """A dotted path could not be followed in the current state."""


def parse_path(path: str, *, what: str = "path") -> tuple[str, ...]:
    """Split and validate a dotted path; raises `ConfigurationError` on bad syntax."""
    if not isinstance(path, str) or not path.strip():
        raise ConfigurationError(
            f"{what} must be a non-empty dotted path such as 'case.confidence', got {path!r}"
        )
    parts = tuple(path.split("."))
    for part in parts:
        if not _SEGMENT.match(part):
            raise ConfigurationError(
                f"{what} {path!r} has an invalid segment {part!r}: use identifiers or "
                "list indexes separated by dots, e.g. 'case.confidence' or 'samples.0'"
            )
    return parts


def resolve(state: Any, parts: Sequence[str]) -> Any:
    """Follow ``parts`` through mappings, sequences (integer segments) and attributes."""
    cur = state
    for i, part in enumerate(parts):
        where = ".".join(parts[:i]) or "state"
        if cur is None:
            raise PathError(f"{where} is None, so {'.'.join(parts)!r} cannot be read")
        if isinstance(cur, Mapping):
            if part not in cur:
                raise PathError(f"{part!r} is missing from {where}")
            cur = cur[part]
        elif isinstance(cur, Sequence) and not isinstance(cur, str | bytes) and _is_int(part):
            try:
                cur = cur[int(part)]
            except IndexError:
                raise PathError(f"{where} has no item {part} (length {len(cur)})") from None
        else:
            try:
                cur = getattr(cur, part)
            except AttributeError:
                raise PathError(
                    f"{where} ({type(cur).__name__}) has no field {part!r}"
                ) from None
    return cur


def _is_int(s: str) -> bool:
    return s.lstrip("-").isdigit()


def _fields_of(tp: Any) -> dict[str, Any] | None:
    """Declared fields of a TypedDict, pydantic model or dataclass; None when unknown."""
    if isinstance(tp, type):
        model_fields = getattr(tp, "model_fields", None)
        if isinstance(model_fields, dict):
            return {k: f.annotation for k, f in model_fields.items()}
        if dataclasses.is_dataclass(tp):
            try:
                return get_type_hints(tp, include_extras=True)
            except Exception:  # noqa: BLE001 - unresolvable hints: cannot check
                return {f.name: Any for f in dataclasses.fields(tp)}
        if hasattr(tp, "__required_keys__"):  # TypedDict
            try:
                return get_type_hints(tp, include_extras=True)
            except Exception:  # noqa: BLE001
                return dict(getattr(tp, "__annotations__", {}))
    return None


def _unwrap(tp: Any) -> list[Any]:
    """The concrete alternatives of a hint (Annotated and Optional removed)."""
    origin = get_origin(tp)
    if origin is Annotated:
        return _unwrap(get_args(tp)[0])
    if origin is Union or origin is types.UnionType:
        out: list[Any] = []
        for arg in get_args(tp):
            if arg is not type(None):
                out.extend(_unwrap(arg))
        return out
    return [tp]


def check_path(schema: Any, parts: Sequence[str]) -> str | None:
    """Check ``parts`` against a state schema; returns an error message or None.

    Only what the schema declares is checked: once a hint is opaque (``Any``, ``dict``,
    an unannotated class) the rest of the path is accepted.
    """
    candidates = [schema]
    for i, part in enumerate(parts):
        nxt: list[Any] = []
        opaque = False
        known: set[str] = set()
        for tp in candidates:
            for alt in _unwrap(tp):
                fields = _fields_of(alt)
                if fields is not None:
                    known.update(fields)
                    if part in fields:
                        nxt.append(fields[part])
                    continue
                origin = get_origin(alt) or alt
                if isinstance(origin, type) and issubclass(origin, list | tuple) and _is_int(part):
                    args = get_args(alt)
                    nxt.append(args[0] if args else Any)
                    continue
                opaque = True
        if opaque:
            return None
        if not nxt:
            where = ".".join(parts[:i]) or "the state schema"
            hint = f"; known fields: {', '.join(sorted(known))}" if known else ""
            return f"{part!r} is not a field of {where}{hint}"
        candidates = nxt
    return None
