"""The ``Verbatim()`` field marker and the matcher that checks values against a source.

A field annotated ``Annotated[str, Verbatim()]`` must appear in the handoff source as
written. "As written" depends on the kind of value:

* ``text``: whitespace runs and letter case are ignored, curly quotes and dashes match
  their ASCII forms, and the match must not start or end inside a word. Non-ASCII
  values also match their JSON-escaped form (``Tom\u00e1s``), as tool results write them.
* ``exact`` (emails, order ids, DOIs, anything without spaces that contains a digit):
  the same characters modulo case, not glued to a longer identifier
  (``A-1001`` does not match inside ``A-10012`` or ``A-1001-2``).
* ``number``: compared as numbers. ``12.4`` matches ``12.40``; ``Decimal("1234.5")``
  matches ``$1,234.50``; currency signs and thousands separators are ignored. Digits
  that belong to an id, a date, a time or a phone number (``A-1001``, ``2024-03-15``,
  ``10:30``) are not numbers. Not supported: number words, ``1.5k``, ``1.234,50``.
* ``date``: compared as dates across ISO (``2024-03-15``), ``2024/03/15``,
  ``03/15/2024`` (month first unless ``dayfirst=True``; unambiguous when a part is
  greater than 12), ``March 15, 2024``, ``Mar. 15 2024``, ``15 March 2024`` and
  ``15th of March, 2024``. A year is required. ``datetime`` values compare by date.

``Verbatim(kind="auto")`` (the default) picks the kind from the value: numbers and
``Decimal`` → number; ``date``/``datetime`` → date; strings that are an email, a date
or an amount → exact/date/number; other strings without whitespace that contain a
digit → exact; everything else → text.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from enum import Enum
from typing import Any, Literal

VerbatimKind = Literal["auto", "text", "exact", "number", "date"]
_KINDS = ("auto", "text", "exact", "number", "date")


@dataclass(frozen=True)
class Verbatim:
    """Marks a contract field whose value must appear in the handoff source.

    Use it inside ``Annotated``::

        class RefundCase(Contract):
            order_id: Annotated[str, Verbatim()]
            amount: Annotated[Decimal, Verbatim()]
            ordered_on: Annotated[date | None, Verbatim(dayfirst=True)] = None

    A ``None`` value (an optional field left empty) is not checked. A list value is
    checked element by element.

    Verbatim proves a value was copied from the source, not that it was copied from the
    right place: an order date shifted by a day passes if the shipping date happens to
    be that day. When the source holds several values of the same kind, give ``near``:
    the match then only counts with one of those words close by::

        ordered_on: Annotated[date, Verbatim(near=("placed", "ordered"))]

    When the source lists several records (this order and the customer's past orders),
    ``near_field`` ties a value to the record it belongs to: the match only counts
    within ``window`` characters of the value of that sibling field::

        order_id: Annotated[str, Verbatim()]
        ordered_on: Annotated[date, Verbatim(near_field="order_id")]

    Attributes:
        kind: How to compare; ``"auto"`` picks from the value (see the module docs).
        dayfirst: Read ambiguous ``01/02/2024`` dates as day/month/year.
        near: Words (case-insensitive) of which one must occur within ``window``
            characters before or after the match, in the same message.
        near_field: A sibling field (same model) whose value must occur within
            ``window`` characters of the match; the check fails while it is empty.
        window: Characters around the match searched for ``near`` / ``near_field``.
    """

    kind: VerbatimKind = "auto"
    dayfirst: bool = False
    near: tuple[str, ...] = ()
    near_field: str | None = None
    window: int = 60

    def __post_init__(self) -> None:
        from relaygraph._errors import ConfigurationError

        if self.kind not in _KINDS:
            raise ConfigurationError(
                f"Verbatim kind must be one of {', '.join(_KINDS)}, got {self.kind!r}"
            )
        if isinstance(self.near, str):
            object.__setattr__(self, "near", (self.near,))
        if not all(isinstance(w, str) and w.strip() for w in self.near):
            raise ConfigurationError(f"Verbatim near must be non-empty words, got {self.near!r}")
        if self.window < 1:
            raise ConfigurationError(f"Verbatim window must be >= 1, got {self.window}")


@dataclass(frozen=True)
class Match:
    """Where a value was found: message index and character span in its text."""

    message: int
    start: int
    end: int
    text: str

    def as_provenance(self) -> dict[str, Any]:
        """The provenance dict stored in ``VerbatimCheck``."""
        return {"message": self.message, "start": self.start, "end": self.end,
                "text": self.text}


@dataclass(frozen=True)
class CheckResult:
    """The outcome of checking one value."""

    passed: bool
    kind: str
    value: str
    match: Match | None = None
    reason: str = ""


# --------------------------------------------------------------------------- patterns

_EMAIL = re.compile(r"[\w.+%-]+@[\w-]+(?:\.[\w-]+)+")
_NUM = re.compile(
    r"""
    (?<![\w./\-])(?<!\d:)          # not glued to a word, id, date, time or decimal
    (?P<sign>[-\u2212+](?=[$€£¥\d]))?
    (?P<cur>[$€£¥]\s?)?
    (?P<int>\d{1,3}(?:,\d{3})+|\d+)
    (?P<frac>\.\d+)?
    (?!\w|[./:\-]\d)
    """,
    re.VERBOSE,
)
_MONTHS = {
    "jan": 1, "feb": 2, "mar": 3, "apr": 4, "may": 5, "jun": 6,
    "jul": 7, "aug": 8, "sep": 9, "oct": 10, "nov": 11, "dec": 12,
}
_MON = (r"(?P<mon>jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|"
        r"aug(?:ust)?|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?")
_ORD = r"(?:st|nd|rd|th)?"
_DATE_PATTERNS = [
    ("ymd", re.compile(r"(?<![\d/.-])(?P<y>\d{4})[-/.](?P<a>\d{1,2})[-/.](?P<b>\d{1,2})(?!\d)")),
    ("xyy", re.compile(r"(?<![\d/.-])(?P<a>\d{1,2})[-/.](?P<b>\d{1,2})[-/.](?P<y>\d{4}|\d{2})"
                       r"(?![\d/.-]\d|\d)")),
    ("mdy", re.compile(r"(?<![\w])" + _MON + rf"\s+(?P<d>\d{{1,2}}){_ORD},?\s+(?P<y>\d{{4}})"
                       r"(?!\d)", re.IGNORECASE)),
    ("dmy", re.compile(rf"(?<![\w])(?P<d>\d{{1,2}}){_ORD}\s+(?:of\s+)?" + _MON +
                       r",?\s+(?P<y>\d{4})(?!\d)", re.IGNORECASE)),
]
_NUMERIC_DATE_HINT = re.compile(r"\d[-/.]\d")
_MONTH_HINT = re.compile(r"(?i)(?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\.?\s+\d"
                         r"|\d(?:st|nd|rd|th)?\s+(?:of\s+)?(?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)")
_DASHES = "-\u2010\u2011\u2012\u2013\u2014\u2212"
_CHAR_CLASSES = {
    "'": "['\u2018\u2019\u02bc]",
    '"': '["\u201c\u201d]',
    **{d: f"[{re.escape(_DASHES)}]" for d in _DASHES},
}


def parse_number(text: str) -> Decimal | None:
    """Parse ``text`` as one number or amount (``"$1,234.50"``, ``"-12.4"``), else None."""
    m = _NUM.fullmatch(text.strip())
    if m is None:
        return None
    return _number_of(m)


def _number_of(m: re.Match[str]) -> Decimal | None:
    raw = m.group("int").replace(",", "") + (m.group("frac") or "")
    try:
        value = Decimal(raw)
    except InvalidOperation:  # pragma: no cover - the regex only admits digits
        return None
    if m.group("sign") in ("-", "\u2212"):
        value = -value
    return value


def _date_of(kind: str, m: re.Match[str], dayfirst: bool) -> date | None:
    try:
        y = int(m.group("y"))
        if y < 100:
            y += 2000
        if kind == "ymd":
            return date(y, int(m.group("a")), int(m.group("b")))
        if kind == "xyy":
            a, b = int(m.group("a")), int(m.group("b"))
            if a > 12 or (dayfirst and b <= 12):
                return date(y, b, a)
            return date(y, a, b)
        mon = _MONTHS[m.group("mon").lower()[:3]]
        return date(y, mon, int(m.group("d")))
    except (ValueError, KeyError):
        return None


def parse_date(text: str, dayfirst: bool = False) -> date | None:
    """Parse ``text`` as exactly one date in a supported format, else None."""
    s = text.strip()
    for kind, pattern in _DATE_PATTERNS:
        m = pattern.fullmatch(s)
        if m is not None:
            return _date_of(kind, m, dayfirst)
    try:
        return datetime.fromisoformat(s).date()
    except ValueError:
        return None


def resolve_kind(value: Any, marker: Verbatim) -> str:
    """The comparison kind for ``value`` under ``marker`` (never ``"auto"``)."""
    if marker.kind != "auto":
        return marker.kind
    if isinstance(value, bool):
        return "exact"
    if isinstance(value, int | float | Decimal):
        return "number"
    if isinstance(value, date):
        return "date"
    s = str(value).strip()
    if _EMAIL.fullmatch(s):
        return "exact"
    if parse_date(s, marker.dayfirst) is not None:
        return "date"
    if parse_number(s) is not None:
        return "number"
    if not any(ch.isspace() for ch in s) and any(ch.isdigit() for ch in s):
        return "exact"
    return "text"


def _text_pattern(value: str, exact: bool) -> re.Pattern[str]:
    if exact:
        body = "".join(_CHAR_CLASSES.get(ch, re.escape(ch)) for ch in value)
    else:
        words = value.split()
        body = r"\s+".join(
            "".join(_CHAR_CLASSES.get(ch, re.escape(ch)) for ch in w) for w in words
        )
    head = tail = ""
    if value[:1].isalnum() or value[:1] == "_":
        head = r"(?<![\w@])(?<!\w[-./])" if exact else r"(?<!\w)"
    elif exact:  # "-245" must not match inside "SWT-245"
        head = r"(?<!\w)"
    if value[-1:].isalnum() or value[-1:] == "_":
        tail = r"(?![\w@]|[-./]\w)" if exact else r"(?!\w)"
    elif exact:  # "SWT-245-" must not match inside "SWT-245-L"
        tail = r"(?!\w)"
    return re.compile(head + body + tail, re.IGNORECASE)


@dataclass
class SourceIndex:
    """The texts of a handoff source, with lazily built number and date indexes.

    Build one per handoff and reuse it for every field and every repair attempt:
    scanning a 1 MB transcript happens once.

    Args:
        texts: One string per source message (see ``message_text``).
    """

    texts: list[str]
    _numbers: list[tuple[Decimal, int, int, int]] | None = field(default=None, repr=False)
    _dates: dict[bool, list[tuple[date, int, int, int]]] = field(default_factory=dict,
                                                                  repr=False)

    def numbers(self) -> list[tuple[Decimal, int, int, int]]:
        """Every number in the source as ``(value, message, start, end)``."""
        if self._numbers is None:
            # Digits that are part of a date ("March 15, 2024") are not numbers.
            date_spans: dict[int, list[tuple[int, int]]] = {}
            for _, i, s, e in self.dates(False):
                date_spans.setdefault(i, []).append((s, e))
            out = []
            for i, text in enumerate(self.texts):
                spans = date_spans.get(i, [])
                for m in _NUM.finditer(text):
                    if spans and any(s < m.end() and m.start() < e for s, e in spans):
                        continue
                    n = _number_of(m)
                    if n is not None:
                        out.append((n, i, m.start(), m.end()))
            self._numbers = out
        return self._numbers

    def dates(self, dayfirst: bool) -> list[tuple[date, int, int, int]]:
        """Every date in the source as ``(value, message, start, end)``."""
        if dayfirst not in self._dates:
            out = []
            for i, text in enumerate(self.texts):
                numeric = _NUMERIC_DATE_HINT.search(text) is not None
                named = _MONTH_HINT.search(text) is not None
                for kind, pattern in _DATE_PATTERNS:
                    if not (numeric if kind in ("ymd", "xyy") else named):
                        continue  # cheap pre-scan: most messages hold no date at all
                    for m in pattern.finditer(text):
                        d = _date_of(kind, m, dayfirst)
                        if d is not None:
                            out.append((d, i, m.start(), m.end()))
            self._dates[dayfirst] = out
        return self._dates[dayfirst]

    def _match(self, i: int, start: int, end: int) -> Match:
        return Match(i, start, end, self.texts[i][start:end])

    def _in_context(self, marker: Verbatim, i: int, start: int, end: int,
                    anchor: re.Pattern[str] | None) -> bool:
        if not marker.near and anchor is None:
            return True
        text = self.texts[i]
        around = text[max(0, start - marker.window):end + marker.window]
        if marker.near:
            folded = around.casefold()
            if not any(w.casefold() in folded for w in marker.near):
                return False
        return anchor is None or anchor.search(around) is not None

    @staticmethod
    def _missing(marker: Verbatim, what: str, seen: bool, anchor_value: Any) -> str:
        context = []
        if marker.near:
            context.append("/".join(repr(w) for w in marker.near))
        if marker.near_field is not None:
            context.append(f"{marker.near_field}={anchor_value!r}")
        if not context:
            return f"{what} does not appear in the source"
        where = " and ".join(context)
        if seen:
            return f"{what} appears in the source, but not near {where}"
        return f"{what} does not appear in the source (near {where})"

    def find_all(self, value: Any, marker: Verbatim) -> list[Match]:
        """Every span where ``value`` is written in the source, ignoring ``near``.

        Used by the binding check, which must see every occurrence of a value to tell
        which entity the source binds it to.
        """
        if isinstance(value, Enum):
            value = value.value
        kind = resolve_kind(value, marker)
        if kind == "number":
            target = (Decimal(str(value)) if isinstance(value, int | float | Decimal)
                      and not isinstance(value, bool) else parse_number(str(value)))
            return [self._match(i, s, e) for n, i, s, e in self.numbers() if n == target]
        if kind == "date":
            if isinstance(value, datetime):
                target_d: date | None = value.date()
            elif isinstance(value, date):
                target_d = value
            else:
                target_d = parse_date(str(value), marker.dayfirst)
            return [self._match(i, s, e) for d, i, s, e in self.dates(marker.dayfirst)
                    if d == target_d]
        text = str(value).strip()
        if not text:
            return []
        pattern = _text_pattern(text, exact=kind == "exact")
        return [self._match(i, m.start(), m.end())
                for i, source_text in enumerate(self.texts)
                for m in pattern.finditer(source_text)]

    def check(self, value: Any, marker: Verbatim, siblings: Any = None) -> CheckResult:
        """Check one scalar value against the source.

        Args:
            value: The field value (str, number, date, enum...).
            marker: The field's :class:`Verbatim` marker.
            siblings: The model (or mapping) holding the field, for ``near_field``.

        Returns:
            A :class:`CheckResult` with the first matching span, or the reason it failed.
        """
        if isinstance(value, Enum):
            value = value.value
        kind = resolve_kind(value, marker)
        shown = value.isoformat() if isinstance(value, date) else str(value)
        anchor: re.Pattern[str] | None = None
        anchor_value: Any = None
        if marker.near_field is not None:
            anchor_value = (siblings.get(marker.near_field) if isinstance(siblings, dict)
                            else getattr(siblings, marker.near_field, None))
            if anchor_value is None or not str(anchor_value).strip():
                return CheckResult(False, kind, shown, reason=(
                    f"cannot be checked without {marker.near_field}, which is empty"))
            anchor = _text_pattern(str(anchor_value).strip(), exact=True)
        if kind == "number":
            target = (Decimal(str(value)) if isinstance(value, int | float | Decimal)
                      and not isinstance(value, bool) else parse_number(str(value)))
            if target is None:
                return CheckResult(False, kind, shown, reason=f"{shown!r} is not a number")
            seen = False
            for n, i, s, e in self.numbers():
                if n == target:
                    seen = True
                    if self._in_context(marker, i, s, e, anchor):
                        return CheckResult(True, kind, shown, self._match(i, s, e))
            return CheckResult(False, kind, shown, reason=self._missing(
                marker, f"the number {shown}", seen, anchor_value))
        if kind == "date":
            if isinstance(value, datetime):
                target_d: date | None = value.date()
            elif isinstance(value, date):
                target_d = value
            else:
                target_d = parse_date(str(value), marker.dayfirst)
            if target_d is None:
                return CheckResult(False, kind, shown, reason=f"{shown!r} is not a date")
            seen = False
            for d, i, s, e in self.dates(marker.dayfirst):
                if d == target_d:
                    seen = True
                    if self._in_context(marker, i, s, e, anchor):
                        return CheckResult(True, kind, shown, self._match(i, s, e))
            return CheckResult(False, kind, shown, reason=self._missing(
                marker, f"the date {target_d.isoformat()}", seen, anchor_value))
        text = str(value).strip()
        if not text:
            return CheckResult(False, kind, shown, reason="the value is empty")
        patterns = [_text_pattern(text, exact=kind == "exact")]
        if not text.isascii():  # tool results are often JSON with \u escapes
            patterns.append(_text_pattern(json.dumps(text)[1:-1], exact=kind == "exact"))
        seen = False
        for i, source_text in enumerate(self.texts):
            for pattern in patterns:
                for m in pattern.finditer(source_text):
                    seen = True
                    if self._in_context(marker, i, m.start(), m.end(), anchor):
                        return CheckResult(True, kind, shown,
                                           self._match(i, m.start(), m.end()))
        how = "exactly (modulo case)" if kind == "exact" else "(ignoring case and spacing)"
        return CheckResult(False, kind, shown,
                           reason=self._missing(marker, f"{text!r}", seen, anchor_value)
                           + f" {how}")
