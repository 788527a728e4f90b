"""Binding checks: the values of one entity must be bound together in the source.

``Verbatim`` proves each value was copied from the source, not that the values were
copied from the same record. With two orders in a transcript ("A-1001 was $20.00 and
arrived fine. A-2002 cost $75.50 and arrived broken"), ``order_id="A-1001"`` with
``amount=75.50`` passes every verbatim check: this is referential drift.

A contract declares its groups of fields that describe one entity::

    class RefundCase(Contract):
        binding_groups = (("order_id", "amount", "ordered_on"),)

The first field of a group whose value is an identifier (an ``exact`` value such as
``A-1001`` or an email) is the group's anchor. Every other value of the group is looked
up in the source, and the entity it is bound to is read off the text around it: the
nearest identifier of the anchor's shape (``A-`` followed by digits, an email) in the
same clause, else the same sentence, else within ``window`` characters in the same
message. A value bound to the anchor passes, and the binding is recorded in its
provenance (``provenance["bound_to"]``); a value bound only to another entity fails,
naming that entity, so that the repair loop can fix it.

The default: when ``binding_groups`` is not set, the top-level single-valued
``Verbatim`` fields form one group if there are at least two of them and none uses
``near_field=`` (which already ties a field to its record). A default group only fails
on a competing entity: a value with no identifier around it passes unbound. A declared
group also fails on a value bound to no entity at all. ``binding_groups = ()`` turns the
check off.
"""

from __future__ import annotations

import re
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from relaygraph._errors import ConfigurationError
from relaygraph.nodes._verbatim import _EMAIL, Match, SourceIndex, resolve_kind

if TYPE_CHECKING:
    from relaygraph.nodes._contract import Contract

DEFAULT_WINDOW = 120

# A JSON record ("}, {") and a list item ("; ") are sentences too.
_SENTENCE = re.compile(r"(?<=[.!?])\s+|;\s|\}\s*,?\s*\{|\n+")
_CLAUSE = re.compile(r"(?<=[.!?])\s+|[;,]\s|\s(?:and|but|while|whereas)\s|\}\s*,?\s*\{|\n",
                     re.IGNORECASE)
_DASH_FOLD = str.maketrans({d: "-" for d in "\u2010\u2011\u2012\u2013\u2014\u2212"})


def _is_list(annotation: Any) -> bool:
    for part in (annotation, *typing.get_args(annotation)):
        origin = typing.get_origin(part)
        if origin in (list, tuple, set, frozenset):
            return True
    return False


def validate_groups(cls: type[Contract]) -> None:
    """Raise :class:`ConfigurationError` for a malformed ``binding_groups`` declaration."""
    groups = cls.__dict__.get("binding_groups")
    if groups is None:
        return
    verbatim = cls.verbatim_fields()
    if not isinstance(groups, tuple | list) or not all(isinstance(g, tuple | list)
                                                       for g in groups):
        raise ConfigurationError(
            f"{cls.__name__}.binding_groups must be a tuple of tuples of field names, "
            f"got {groups!r}"
        )
    for group in groups:
        if len(group) < 2:
            raise ConfigurationError(
                f"{cls.__name__}.binding_groups: a group needs at least two fields, "
                f"got {tuple(group)!r}"
            )
        for name in group:
            if name not in cls.model_fields:
                raise ConfigurationError(
                    f"{cls.__name__}.binding_groups names {name!r}, which is no field of "
                    f"{cls.__name__}; use one of {', '.join(cls.model_fields)}"
                )
            if name not in verbatim:
                raise ConfigurationError(
                    f"{cls.__name__}.binding_groups names {name!r}, which is not a "
                    f"Verbatim field; mark it Verbatim() or leave it out of the group"
                )
            if _is_list(cls.model_fields[name].annotation):
                raise ConfigurationError(
                    f"{cls.__name__}.binding_groups names {name!r}, which holds a list; "
                    "a group binds single values of one entity"
                )


def groups_of(cls: type[Contract]) -> tuple[tuple[tuple[str, ...], bool], ...]:
    """The groups checked for ``cls``, each with whether it was declared (strict)."""
    declared = getattr(cls, "binding_groups", None)
    if declared is not None:
        return tuple((tuple(g), True) for g in declared)
    fields = [name for name, marker in cls.verbatim_fields().items()
              if not _is_list(cls.model_fields[name].annotation)]
    markers = cls.verbatim_fields()
    if len(fields) < 2 or any(markers[f].near_field is not None for f in fields):
        return ()
    return ((tuple(fields), False),)


# --------------------------------------------------------------------------- entities


def _entity_pattern(anchor: str) -> re.Pattern[str]:
    """Identifiers of the anchor's shape: ``A-1001`` → ``A-<digits>``, an email → emails."""
    if _EMAIL.fullmatch(anchor):
        return re.compile(r"(?<![\w.+%-])" + _EMAIL.pattern)
    body = "".join(r"\d+" if part[0].isdigit() else re.escape(part)
                   for part in re.findall(r"\d+|\D+", anchor.translate(_DASH_FOLD)))
    body = body.replace(re.escape("-"), "[-\u2010-\u2014\u2212]")
    return re.compile(r"(?<![\w@])(?<!\w[-./])" + body + r"(?![\w@]|[-./]\w)", re.IGNORECASE)


def _norm(text: str) -> str:
    return text.translate(_DASH_FOLD).casefold()


def _spans(pattern: re.Pattern[str], text: str) -> list[tuple[int, int]]:
    bounds = [0]
    for m in pattern.finditer(text):
        bounds.extend((m.start(), m.end()))
    bounds.append(len(text))
    return [(bounds[i], bounds[i + 1]) for i in range(0, len(bounds), 2)]


def _enclosing(spans: list[tuple[int, int]], pos: int) -> tuple[int, int]:
    for s, e in spans:
        if s <= pos < e:
            return s, e
    return 0, 0


@dataclass(frozen=True)
class Binding:
    """The entity a value occurrence is bound to, and how tightly."""

    entity: str
    scope: str  # "clause", "sentence" or "window"
    match: Match


def bind(index: SourceIndex, match: Match, entities: re.Pattern[str],
         window: int) -> Binding | None:
    """The entity nearest to ``match`` in the tightest scope that holds one."""
    text = index.texts[match.message]
    found = [(m.start(), m.end(), m.group(0)) for m in entities.finditer(text)]
    found = [f for f in found if not (f[0] < match.end and match.start < f[1])]
    if not found:
        return None
    scopes = [("clause", _enclosing(_spans(_CLAUSE, text), match.start)),
              ("sentence", _enclosing(_spans(_SENTENCE, text), match.start)),
              ("window", (max(0, match.start - window), match.end + window))]
    for scope, (lo, hi) in scopes:
        inside = [f for f in found if lo <= f[0] and f[1] <= hi]
        if scope == "window":
            # Across sentences, "It cost $20" refers back to the last entity named.
            before = [f for f in inside if f[1] <= match.start]
            inside = before or inside
        if inside:
            def distance(f: tuple[int, int, str]) -> tuple[int, int]:
                gap = match.start - f[1] if f[1] <= match.start else f[0] - match.end
                return gap, 0 if f[1] <= match.start else 1  # ties go to the preceding one
            s, _, entity = min(inside, key=distance)
            return Binding(entity, scope, match)
    return None


# --------------------------------------------------------------------------- checking


@dataclass
class GroupResult:
    """Per-field outcome of one group: provenance additions and failure reasons."""

    bound: dict[str, dict[str, Any]]
    errors: dict[str, str]


def check_group(index: SourceIndex, owner: Contract, group: tuple[str, ...], strict: bool,
                prefix: str = "") -> GroupResult:
    """Check that the group's values in ``owner`` are bound to one entity in the source."""
    markers = type(owner).verbatim_fields()
    result = GroupResult({}, {})
    values = {name: getattr(owner, name) for name in group if getattr(owner, name) is not None}
    anchor_name = next((n for n in group if n in values
                        and resolve_kind(values[n], markers[n]) == "exact"), None)
    if anchor_name is None:
        return result  # no identifier to bind to (nothing to compare entities by)
    anchor = str(values[anchor_name]).strip()
    entities = _entity_pattern(anchor)
    if entities.fullmatch(anchor) is None:  # pragma: no cover - the shape is built from it
        return result
    for name in group:
        if name == anchor_name or name not in values:
            continue
        marker = markers[name]
        window = max(marker.window, DEFAULT_WINDOW)
        competing: list[Binding] = []
        bound: Binding | None = None
        occurrences = index.find_all(values[name], marker)
        if not occurrences:
            continue  # the verbatim check reports the missing value itself
        for match in occurrences:
            b = bind(index, match, entities, window)
            if b is None:
                continue
            if _norm(b.entity) == _norm(anchor):
                bound = b
                break
            competing.append(b)
        path = f"{prefix}{name}"
        if bound is not None:
            result.bound[path] = {"field": anchor_name, "value": anchor,
                                  "scope": bound.scope, "message": bound.match.message}
            continue
        shown = occurrences[0].text
        if competing:
            other = competing[0]
            others = ", ".join(dict.fromkeys(b.entity for b in competing))
            result.errors[path] = (
                f"{shown!r} appears in the source, but bound to {others}, not to "
                f"{anchor_name}={anchor!r} (message {other.match.message}: "
                f"{_snippet(index, other)!r}); give the {name} the source states for "
                f"{anchor}, or set {anchor_name} to {other.entity!r} if that is the entity "
                "meant"
            )
        elif strict:
            result.errors[path] = (
                f"{shown!r} appears in the source, but not bound to {anchor_name}="
                f"{anchor!r} (not in the same sentence or within {window} characters); "
                f"give the {name} the source states for {anchor}"
            )
    return result


def _snippet(index: SourceIndex, b: Binding) -> str:
    text = index.texts[b.match.message]
    lo, hi = _enclosing(_spans(_SENTENCE, text), b.match.start)
    lo, hi = max(lo, b.match.start - 80), min(hi, b.match.end + 80)
    return " ".join(text[lo:hi].split())


def iter_groups(contract: Contract, prefix: str = ""
                ) -> Iterator[tuple[Contract, tuple[str, ...], bool, str]]:
    """Every ``(model, group, strict, prefix)`` in a contract and its nested contracts."""
    from relaygraph.nodes._contract import Contract

    for group, strict in groups_of(type(contract)):
        yield contract, group, strict, prefix
    for name in type(contract).model_fields:
        value = getattr(contract, name)
        if isinstance(value, Contract):
            yield from iter_groups(value, f"{prefix}{name}.")
        elif isinstance(value, list | tuple):
            for i, item in enumerate(value):
                if isinstance(item, Contract):
                    yield from iter_groups(item, f"{prefix}{name}[{i}].")


def check_bindings(index: SourceIndex, contract: Contract) -> GroupResult:
    """Check every group of ``contract`` (and of its nested contracts) against the source."""
    out = GroupResult({}, {})
    for owner, group, strict, prefix in iter_groups(contract):
        res = check_group(index, owner, group, strict, prefix)
        out.bound.update(res.bound)
        out.errors.update(res.errors)
    return out

