"""A contract as a typed HTML form, generated from its pydantic JSON schema, and back.

`form_fields` turns the schema into inputs (enums as selects, decimals, integers and dates
as validated text/date inputs, nested data as JSON). `parse_form` turns the posted strings
back into edits and checks them field by field, then against the contract itself, so the
server refuses exactly what the browser's script refuses, and more.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

FieldKind = Literal["text", "textarea", "decimal", "integer", "number", "boolean", "date",
                    "datetime", "enum", "json"]

PREFIX = "f."
"""Form inputs for contract fields are named ``f.<field>``."""

_DECIMAL = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)")
_INTEGER = re.compile(r"[+-]?\d+")


@dataclass
class FormField:
    """One input of the contract form.

    Attributes:
        name: the contract field.
        label, help: shown next to the input (title and description from the schema).
        kind: how the input is drawn and checked.
        required: the contract needs a value.
        nullable: an empty input means ``null``.
        options: allowed values of an enum (as strings).
        value: the current value as the input shows it.
        minimum, maximum, exclusive_minimum, exclusive_maximum: numeric bounds.
        min_length, max_length, pattern: text constraints.
        error: why the last posted value was refused.
        verified: where a handoff found this value in the source (``"message 2"``).
        conflict: candidates disagree on this field (a ``reconcile()`` review): it starts
            empty and must be decided.
        choices: for a conflict, ``(source, value as the input shows it)`` per candidate.
    """

    name: str
    label: str
    kind: FieldKind
    help: str = ""
    required: bool = False
    nullable: bool = False
    options: list[str] = field(default_factory=list)
    value: str = ""
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: float | None = None
    exclusive_maximum: float | None = None
    min_length: int | None = None
    max_length: int | None = None
    pattern: str | None = None
    error: str | None = None
    verified: str | None = None
    conflict: bool = False
    choices: list[tuple[str, str]] = field(default_factory=list)

    @property
    def input_name(self) -> str:
        return PREFIX + self.name


def _resolve(schema: Mapping[str, Any], node: Mapping[str, Any]) -> Mapping[str, Any]:
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        target = (schema.get("$defs") or {}).get(ref.split("/")[-1])
        if isinstance(target, Mapping):
            return {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    all_of = node.get("allOf")
    if isinstance(all_of, list) and len(all_of) == 1 and isinstance(all_of[0], Mapping):
        return {**_resolve(schema, all_of[0]), **{k: v for k, v in node.items()
                                                  if k != "allOf"}}
    return node


def _kind(schema: Mapping[str, Any], prop: Mapping[str, Any]) -> tuple[FieldKind, bool,
                                                                        Mapping[str, Any]]:
    """``(kind, nullable, the schema node that describes the value)``."""
    prop = _resolve(schema, prop)
    nullable = False
    variants = prop.get("anyOf") or prop.get("oneOf")
    if isinstance(variants, list):
        kept = []
        for v in variants:
            v = _resolve(schema, v)
            if v.get("type") == "null":
                nullable = True
            else:
                kept.append(v)
        types = sorted(str(v.get("type")) for v in kept)
        if types == ["number", "string"] and not any(v.get("format") for v in kept):
            return "decimal", nullable, {**prop, **{k: v for v in kept for k, v in v.items()
                                                    if k not in ("type",)}}
        if len(kept) == 1:
            inner, inner_null, node = _kind(schema, kept[0])
            merged = {**node, **{k: v for k, v in prop.items() if k in ("title",
                                                                        "description")}}
            return inner, nullable or inner_null, merged
        return "json", nullable, prop
    if "enum" in prop or "const" in prop:
        return "enum", nullable, prop
    typ = prop.get("type")
    if isinstance(typ, list):
        nullable = "null" in typ
        rest = [t for t in typ if t != "null"]
        typ = rest[0] if len(rest) == 1 else None
    if typ == "string":
        fmt = prop.get("format")
        if fmt == "date":
            return "date", nullable, prop
        if fmt == "date-time":
            return "datetime", nullable, prop
        if fmt == "decimal":
            return "decimal", nullable, prop
        return "text", nullable, prop
    if typ == "integer":
        return "integer", nullable, prop
    if typ == "number":
        return "number", nullable, prop
    if typ == "boolean":
        return "boolean", nullable, prop
    return "json", nullable, prop


def shown(kind: FieldKind, value: Any) -> str:
    """``value`` as an input of ``kind`` shows it (and posts it back)."""
    return _shown(kind, value)


def _shown(kind: FieldKind, value: Any) -> str:
    if value is None:
        return ""
    if kind == "json":
        return json.dumps(value, ensure_ascii=False, indent=1, default=str)
    if kind == "boolean":
        return "true" if value else "false"
    return str(value)


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) \
        else None


def form_fields(contract: type[BaseModel] | None, value: Any) -> list[FormField]:
    """The form for ``contract`` filled with ``value`` (JSON data of the output under review).

    Without a contract, a mapping value gets one JSON field per key; anything else none.
    """
    current = value if isinstance(value, Mapping) else {}
    if contract is None:
        return [FormField(str(k), str(k), "json", value=_shown("json", v))
                for k, v in current.items()]
    schema = contract.model_json_schema()
    required = set(schema.get("required") or [])
    out = []
    for name, prop in (schema.get("properties") or {}).items():
        if not isinstance(prop, Mapping):
            continue
        kind, nullable, node = _kind(schema, prop)
        options: list[str] = []
        if kind == "enum":
            raw = node.get("enum") if "enum" in node else [node.get("const")]
            raw = list(raw) if isinstance(raw, list) else []
            options = [str(o) for o in raw if o is not None]
            nullable = nullable or None in raw
        shown = _shown(kind, current.get(name))
        if kind == "text" and (len(shown) > 60 or "\n" in shown
                               or (node.get("maxLength") or 0) > 200):
            kind = "textarea"
        out.append(FormField(
            name=name, label=str(prop.get("title") or node.get("title") or name),
            help=str(prop.get("description") or node.get("description") or ""), kind=kind,
            required=name in required, nullable=nullable, options=options, value=shown,
            minimum=_num(node.get("minimum")), maximum=_num(node.get("maximum")),
            exclusive_minimum=_num(node.get("exclusiveMinimum")),
            exclusive_maximum=_num(node.get("exclusiveMaximum")),
            min_length=node.get("minLength") if isinstance(node.get("minLength"), int) else None,
            max_length=node.get("maxLength") if isinstance(node.get("maxLength"), int) else None,
            pattern=node.get("pattern") if isinstance(node.get("pattern"), str) else None,
        ))
    return out


class _Refused(ValueError):
    pass


def _bounds(f: FormField, n: float | Decimal) -> None:
    x = float(n)
    if f.minimum is not None and x < f.minimum:
        raise _Refused(f"must be at least {f.minimum:g}")
    if f.maximum is not None and x > f.maximum:
        raise _Refused(f"must be at most {f.maximum:g}")
    if f.exclusive_minimum is not None and x <= f.exclusive_minimum:
        raise _Refused(f"must be greater than {f.exclusive_minimum:g}")
    if f.exclusive_maximum is not None and x >= f.exclusive_maximum:
        raise _Refused(f"must be less than {f.exclusive_maximum:g}")


def _convert(f: FormField, raw: str) -> Any:
    """The posted string as the value the contract receives. Raises `_Refused`."""
    text = raw.strip() if f.kind not in ("textarea", "text", "json") else raw
    if not text.strip():
        if f.nullable:
            return None
        if f.kind in ("text", "textarea") and not f.required:
            return ""
        raise _Refused("a value is required")
    if f.kind in ("text", "textarea"):
        if f.min_length is not None and len(text) < f.min_length:
            raise _Refused(f"must be at least {f.min_length} characters")
        if f.max_length is not None and len(text) > f.max_length:
            raise _Refused(f"must be at most {f.max_length} characters")
        return text
    if f.kind == "decimal":
        if not _DECIMAL.fullmatch(text):
            raise _Refused(f"enter a decimal number such as 12.40, not {text[:40]!r}")
        try:
            d = Decimal(text)
        except InvalidOperation:  # pragma: no cover - the pattern admits only numbers
            raise _Refused(f"enter a decimal number such as 12.40, not {text[:40]!r}") from None
        _bounds(f, d)
        return text
    if f.kind == "integer":
        if not _INTEGER.fullmatch(text):
            raise _Refused(f"enter a whole number, not {text[:40]!r}")
        try:
            i = int(text)
        except ValueError:  # more digits than Python converts from text
            limit = sys.get_int_max_str_digits()
            raise _Refused(f"enter a whole number of at most {limit} digits") from None
        _bounds(f, i)
        return i
    if f.kind == "number":
        try:
            x = float(text)
        except ValueError:
            raise _Refused(f"enter a number, not {text[:40]!r}") from None
        if not math.isfinite(x):
            raise _Refused("enter a finite number")
        _bounds(f, x)
        return x
    if f.kind == "boolean":
        if text not in ("true", "false"):
            raise _Refused("choose true or false")
        return text == "true"
    if f.kind == "date":
        try:
            return date.fromisoformat(text).isoformat()
        except ValueError:
            raise _Refused(f"enter a date as YYYY-MM-DD, not {text[:40]!r}") from None
    if f.kind == "datetime":
        try:
            return datetime.fromisoformat(text).isoformat()
        except ValueError:
            raise _Refused(f"enter a date and time as YYYY-MM-DDTHH:MM, not {text[:40]!r}"
                           ) from None
    if f.kind == "enum":
        if text not in f.options:
            raise _Refused(f"choose one of {', '.join(f.options)}")
        return text
    try:
        return json.loads(text)
    except ValueError as exc:
        raise _Refused(f"not valid JSON: {exc}") from None


def _same(f: FormField, new: Any, old: Any) -> bool:
    if f.kind == "decimal" and new is not None and old is not None:
        try:
            return Decimal(str(new)) == Decimal(str(old))
        except InvalidOperation:
            return False
    if f.kind in ("number", "integer") and isinstance(old, int | float) \
            and isinstance(new, int | float):
        return float(new) == float(old)
    return bool(new == old)


def parse_form(fields: list[FormField], form: Mapping[str, Any], current: Any,
               contract: type[BaseModel] | None) -> tuple[dict[str, Any], dict[str, str]]:
    """``(edits, errors)`` from posted form data.

    ``edits`` holds only fields whose value changed (every filled field when there is no
    current value, e.g. after a failed handoff). ``errors`` maps field → why it was
    refused (``"*"`` for the contract as a whole); when it is non-empty, nothing is sent.
    """
    base = dict(current) if isinstance(current, Mapping) else {}
    edits: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for f in fields:
        raw = form.get(f.input_name)
        if raw is None:
            continue
        if not isinstance(raw, str):
            errors[f.name] = "expected text"
            continue
        if len(raw) > 100_000:
            errors[f.name] = "too long"
            continue
        try:
            new = _convert(f, raw)
        except _Refused as exc:
            errors[f.name] = str(exc)
            continue
        if f.name not in base:
            if new is not None and new != "":
                edits[f.name] = new
        elif not _same(f, new, base.get(f.name)):
            edits[f.name] = new
    if errors or contract is None or not edits:
        return edits, errors
    try:
        contract.model_validate({**base, **edits})
    except ValidationError as exc:
        for err in exc.errors():
            loc = err.get("loc") or ()
            key = str(loc[0]) if loc else "*"
            if key not in {f.name for f in fields}:
                key = "*"
            msg = str(err.get("msg"))
            errors[key] = f"{errors[key]}; {msg}" if key in errors else msg
    return edits, errors
