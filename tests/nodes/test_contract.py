"""Contract: the base model, Verbatim walking, briefs and the strict msgpack allowlist."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from datetime import date
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import pytest
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from pydantic import Field, ValidationError

import relaygraph
from relaygraph import ConfigurationError
from relaygraph.nodes import Contract, Verbatim, contract_allowlist, contract_serializer


class Priority(Enum):
    LOW = "low"
    HIGH = "high"


class Finding(Contract):
    claim: str
    figure: Annotated[Decimal | None, Verbatim()] = None
    source: Annotated[str, Verbatim()]


class Brief(Contract):
    """A research brief."""

    question: str = Field(description="what was asked")
    sources: Annotated[list[str], Verbatim()] = []
    findings: list[Finding] = []
    lead: Finding | None = None
    priority: Priority = Priority.LOW
    due: Annotated[date | None, Verbatim()] = None


def test_extra_fields_are_forbidden() -> None:
    with pytest.raises(ValidationError, match="extra"):
        Brief(question="q", confidence=0.9)  # type: ignore[call-arg]


def test_verbatim_on_bool_or_model_is_rejected_at_class_definition() -> None:
    with pytest.raises(ConfigurationError, match="cannot check a bool"):
        class Bad(Contract):
            urgent: Annotated[bool, Verbatim()]
    with pytest.raises(ConfigurationError, match="model-typed field"):
        class Bad2(Contract):
            finding: Annotated[Finding, Verbatim()]


def test_iter_verbatim_walks_lists_and_nested_models() -> None:
    brief = Brief(
        question="q", sources=["doi:10.1/abc", "arXiv:2401.00001"],
        findings=[Finding(claim="c", figure=Decimal("12.4"), source="doi:10.1/abc"),
                  Finding(claim="d", source="arXiv:2401.00001")],
        lead=Finding(claim="e", figure=Decimal("3"), source="x-1"),
        due=date(2025, 1, 31),
    )
    paths = [p for p, _, _ in brief.iter_verbatim()]
    assert paths == ["sources[0]", "sources[1]", "findings[0].figure", "findings[0].source",
                     "findings[1].source", "lead.figure", "lead.source", "due"]
    assert Brief.verbatim_fields().keys() == {"sources", "due"}


def test_to_brief_is_compact_and_skips_empty_fields() -> None:
    brief = Brief(question="What  changed\tin Q3?", sources=["S-1", "S-2"],
                  findings=[Finding(claim="revenue up", figure=Decimal("12.40"), source="S-1")],
                  priority=Priority.HIGH)
    text = brief.to_brief()
    assert text.splitlines() == [
        "[Brief]",
        "question: What changed in Q3?",
        "sources: S-1; S-2",
        "findings:",
        "  - claim: revenue up; figure: 12.40; source: S-1",
        "priority: high",
    ]
    assert "lead" not in text and "due" not in text
    assert brief.filled_fields() == ["question", "sources", "findings", "priority"]


def test_allowlist_includes_nested_models_and_enums() -> None:
    entries = contract_allowlist(Brief)
    mod = __name__
    assert entries == tuple(sorted([(mod, "Brief"), (mod, "Finding"), (mod, "Priority")]))


def test_allowlist_rejects_classes_that_cannot_be_rebuilt() -> None:
    class Local(Contract):
        x: int

    with pytest.raises(ConfigurationError, match="Define it at module level"):
        contract_allowlist(Local)
    with pytest.raises(ConfigurationError, match="at least one"):
        contract_allowlist()
    with pytest.raises(ConfigurationError, match="takes classes"):
        contract_allowlist(Brief(question="q"))  # type: ignore[arg-type]


CONTRACT_MODULE = '''
from datetime import date
from decimal import Decimal
from enum import Enum
from typing import Annotated
from relaygraph.nodes import Contract, Verbatim

class Kind(Enum):
    REFUND = "refund"
    EXCHANGE = "exchange"

class Item(Contract):
    sku: Annotated[str, Verbatim()]
    qty: int

class RefundCase(Contract):
    order_id: Annotated[str, Verbatim()]
    amount: Annotated[Decimal, Verbatim()]
    ordered_on: Annotated[date | None, Verbatim()] = None
    kind: Kind = Kind.REFUND
    items: list[Item] = []
    summary: str
'''

LOADER = '''
import json, sys
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from relaygraph.nodes import contract_allowlist
import rg_contracts_under_test as m
mode = sys.argv[2]
allow = contract_allowlist(m.RefundCase) if mode == "allowlisted" else None
serde = JsonPlusSerializer(allowed_msgpack_modules=allow)
type_, data = json.loads(open(sys.argv[1]).read())
value = serde.loads_typed((type_, bytes.fromhex(data)))
case = value["case"]
if isinstance(case, dict):
    print(json.dumps({"class": "builtins.dict", "is_refund_case": False}))
    raise SystemExit(0)
print(json.dumps({
    "class": type(case).__module__ + "." + type(case).__qualname__,
    "is_refund_case": isinstance(case, m.RefundCase),
    "kind": type(getattr(case, "kind", None)).__name__,
    "item": type((getattr(case, "items", None) or [None])[0]).__name__,
    "amount": repr(getattr(case, "amount", None)),
    "ordered_on": repr(getattr(case, "ordered_on", None)),
}))
'''


def _load_in_new_process(tmp_path: Path, payload: Path, mode: str) -> dict[str, Any]:
    script = tmp_path / "load.py"
    script.write_text(textwrap.dedent(LOADER))
    # the child imports the same relaygraph as this process, plus the module under test
    src = str(Path(relaygraph.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), src])}
    env.pop("LANGGRAPH_STRICT_MSGPACK", None)
    out = subprocess.run([sys.executable, str(script), str(payload), mode], env=env,
                         capture_output=True, text=True, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_contracts_survive_strict_msgpack_after_a_restart(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "rg_contracts_under_test.py").write_text(CONTRACT_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    import rg_contracts_under_test as m  # type: ignore[import-not-found]

    case = m.RefundCase(order_id="A-10234", amount=Decimal("1234.50"),
                        ordered_on=date(2024, 3, 15), kind=m.Kind.EXCHANGE,
                        items=[m.Item(sku="SKU-1", qty=2)], summary="broken zipper")
    serde = contract_serializer(m.RefundCase)
    assert isinstance(serde, JsonPlusSerializer)
    type_, data = serde.dumps_typed({"case": case})
    payload = tmp_path / "checkpoint.json"
    payload.write_text(json.dumps([type_, data.hex()]))

    # Same process, strict serializer with the allowlist: the class comes back.
    assert serde.loads_typed((type_, data))["case"] == case

    got = _load_in_new_process(tmp_path, payload, "allowlisted")
    assert got == {
        "class": "rg_contracts_under_test.RefundCase", "is_refund_case": True,
        "kind": "Kind", "item": "Item", "amount": "Decimal('1234.50')",
        "ordered_on": "datetime.date(2024, 3, 15)",
    }
    # Without the allowlist, strict mode silently hands back raw data: this is what the
    # allowlist prevents, and why the check above looks at the class.
    blocked = _load_in_new_process(tmp_path, payload, "strict-default")
    assert blocked["class"] == "builtins.dict"
    assert blocked["is_refund_case"] is False
