"""The Verbatim matcher: text, exact ids/emails, numbers and dates."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

import pytest

from relaygraph import ConfigurationError
from relaygraph.nodes import Verbatim
from relaygraph.nodes._verbatim import SourceIndex, parse_date, parse_number, resolve_kind

SOURCE = [
    "Hi, my order A-10234 arrived broken. I paid $1,234.50 on March 15, 2024.",
    'lookup_order({"order_id": "A-10234"})',
    '{"order_id":"A-10234","total":1234.5,"shipping":12.40,"placed":"2024-03-15",'
    '"email":"Jo.Doe@Example.com","phone":"555-0142","eta":"10:30"}',
    "The “Nimbus   2” rain jacket — size M. Ticket TCK-77 was opened 04/07/2024.",
]
V = Verbatim()


@pytest.fixture
def index() -> SourceIndex:
    return SourceIndex(list(SOURCE))


@pytest.mark.parametrize("value", [
    Decimal("1234.5"), Decimal("1234.50"), 1234.5, "1,234.50", "$1,234.50", "1234.50",
    12.4, "12.40", Decimal("12.4"),
])
def test_numbers_match_as_numbers(index: SourceIndex, value: object) -> None:
    result = index.check(value, V)
    assert result.passed, result.reason
    assert result.kind == "number"


@pytest.mark.parametrize("value", [
    Decimal("1243.50"), 1234.05, 123.45, "12.41", 10234,  # 10234 only exists inside A-10234
    2024, 15,  # parts of dates
    555, 142, 30,  # phone and time parts
])
def test_changed_or_embedded_numbers_fail(index: SourceIndex, value: object) -> None:
    result = index.check(value, Verbatim(kind="number"))
    assert not result.passed
    assert "does not appear" in result.reason


def test_number_provenance_points_at_the_written_form(index: SourceIndex) -> None:
    m = index.check(Decimal("1234.5"), V).match
    assert m is not None
    assert (m.message, m.text) == (0, "$1,234.50")
    assert SOURCE[0][m.start:m.end] == "$1,234.50"


@pytest.mark.parametrize("value", [
    date(2024, 3, 15), "2024-03-15", "March 15, 2024", "15 March 2024", "Mar. 15 2024",
    "03/15/2024", datetime(2024, 3, 15, 9, 0), "15th of March, 2024",
])
def test_dates_match_across_formats(index: SourceIndex, value: object) -> None:
    result = index.check(value, V)
    assert result.passed, result.reason
    assert result.kind == "date"


def test_ambiguous_dates_follow_dayfirst(index: SourceIndex) -> None:
    assert index.check(date(2024, 4, 7), V).passed  # 04/07/2024 read month first
    assert not index.check(date(2024, 7, 4), V).passed
    assert index.check(date(2024, 7, 4), Verbatim(dayfirst=True)).passed
    assert not index.check(date(2024, 4, 7), Verbatim(dayfirst=True)).passed


@pytest.mark.parametrize("value", [date(2024, 3, 16), "2024-03-14", date(2023, 3, 15)])
def test_shifted_dates_fail(index: SourceIndex, value: object) -> None:
    assert not index.check(value, V).passed


@pytest.mark.parametrize("value,ok", [
    ("A-10234", True), ("a-10234", True), ("A-1023", False), ("A-102345", False),
    ("A-10243", False), ("jo.doe@example.com", True), ("JO.DOE@EXAMPLE.COM", True),
    ("o.doe@example.com", False), ("jo.doe@example.co", False), ("jo.doe@exampel.com", False),
    ("TCK-77", True), ("TCK-7", False),
])
def test_ids_and_emails_exact_modulo_case(index: SourceIndex, value: str, ok: bool) -> None:
    result = index.check(value, V)
    assert result.kind == "exact"
    assert result.passed is ok, result.reason


@pytest.mark.parametrize("value,ok", [
    ('"Nimbus 2" rain jacket', True), ("nimbus   2\" RAIN\njacket", True),
    ("nimbus 2 rain jacket", False), ("Nimbus 3", False),
    ("my order", True), ("y order", False), ("rain jacket - size m", True),
])
def test_text_ignores_case_whitespace_and_typography(index: SourceIndex, value: str,
                                                    ok: bool) -> None:
    result = index.check(value, Verbatim(kind="text"))
    assert result.passed is ok, result.reason


def test_resolve_kind_auto() -> None:
    assert resolve_kind("jo@x.io", V) == "exact"
    assert resolve_kind("$12.40", V) == "number"
    assert resolve_kind("2024-03-15", V) == "date"
    assert resolve_kind("INV-2024-0042", V) == "exact"
    assert resolve_kind("broken zipper", V) == "text"
    assert resolve_kind(Decimal("1"), V) == "number"
    assert resolve_kind("12.40", Verbatim(kind="text")) == "text"


def test_parsers() -> None:
    assert parse_number("$1,234.50") == Decimal("1234.50")
    assert parse_number("-12.4") == Decimal("-12.4")
    assert parse_number("A-1") is None
    assert parse_date("Sept 3, 2025") == date(2025, 9, 3)
    assert parse_date("31/01/2025") == date(2025, 1, 31)
    assert parse_date("not a date") is None


def test_empty_and_unparseable_values_fail(index: SourceIndex) -> None:
    assert not index.check("   ", Verbatim(kind="text")).passed
    assert "not a number" in index.check("lots", Verbatim(kind="number")).reason
    assert "not a date" in index.check("soon", Verbatim(kind="date")).reason


def test_bad_kind_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="kind must be one of"):
        Verbatim(kind="fuzzy")  # type: ignore[arg-type]


def test_megabyte_source_is_scanned_once_and_fast() -> None:
    filler = "Customer: still waiting, order status unknown, call me at 10:30. " * 16000
    index = SourceIndex([filler, "Refund R-5521 of $88.10 approved on 2025-02-01."])
    assert len(filler) > 1_000_000
    assert index.check("R-5521", V).match.message == 1  # type: ignore[union-attr]
    assert index.check(Decimal("88.1"), V).passed
    assert index.check(date(2025, 2, 1), V).passed
    assert not index.check(Decimal("88.01"), V).passed


def test_near_requires_context_words() -> None:
    index = SourceIndex([
        '{"placed_at": "2024-12-07", "status": "delivered"}',
        '{"events": [{"date": "2024-12-08", "event": "picked up"}]}',
    ])
    plain = Verbatim()
    placed = Verbatim(near=("placed", "ordered"))
    assert index.check(date(2024, 12, 8), plain).passed  # present, so plain passes
    result = index.check(date(2024, 12, 8), placed)
    assert not result.passed
    assert "appears in the source, but not near 'placed'/'ordered'" in result.reason
    assert index.check(date(2024, 12, 7), placed).passed
    assert "does not appear in the source (near" in index.check(date(2020, 1, 1),
                                                                placed).reason
    assert Verbatim(near="placed").near == ("placed",)
    with pytest.raises(ConfigurationError, match="near"):
        Verbatim(near=("",))
    with pytest.raises(ConfigurationError, match="window"):
        Verbatim(window=0)


def test_exact_values_ending_in_punctuation_keep_boundaries() -> None:
    index = SourceIndex(["replacement SWT-245-L confirmed"])
    assert index.check("SWT-245-L", V).passed
    assert not index.check("SWT-245-", V).passed
    assert not index.check("-245-L", V).passed


def test_non_ascii_values_match_json_escaped_tool_output() -> None:
    index = SourceIndex(['{"customer_name": "Tom\\u00e1s Kowalski"}'])
    assert index.check("Tomás Kowalski", Verbatim(kind="text")).passed
    assert index.check("tomás kowalski", Verbatim(kind="text")).passed


@pytest.mark.parametrize("text", ["due the 3rd of May, 2025", "due 3 May 2025", "May 3, 2025",
                                  "2025-05-03", "05/03/2025", "2025/5/3"])
def test_each_date_format_alone(text: str) -> None:
    assert SourceIndex([text]).check(date(2025, 5, 3), V).passed


def test_near_field_ties_a_value_to_its_record() -> None:
    index = SourceIndex([
        '{"order_id": "W609949", "placed_at": "2024-12-02", "total": "253.89"}',
        '{"orders": [{"order_id": "W6536138", "placed_at": "2024-02-12"}]}',
    ])
    marker = Verbatim(near_field="order_id")
    assert index.check(date(2024, 12, 2), marker, {"order_id": "W609949"}).passed
    other = index.check(date(2024, 2, 12), marker, {"order_id": "W609949"})
    assert not other.passed
    assert "appears in the source, but not near order_id='W609949'" in other.reason
    # the prefix of another id does not anchor
    assert not index.check(date(2024, 2, 12), marker, {"order_id": "W653613"}).passed
    empty = index.check(date(2024, 12, 2), marker, {"order_id": None})
    assert not empty.passed and "without order_id" in empty.reason


def test_near_field_must_name_a_sibling() -> None:
    from typing import Annotated

    from relaygraph.nodes import Contract

    with pytest.raises(ConfigurationError, match="names no field"):
        class Bad(Contract):
            placed: Annotated[date, Verbatim(near_field="order")]
