"""Binding checks: a contract's values must describe the same entity in the source."""

from __future__ import annotations

import importlib.util
import sys
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import pytest
from langchain_core.messages import HumanMessage

from relaygraph import ConfigurationError
from relaygraph.nodes import Contract, HandoffError, Verbatim, handoff
from relaygraph.nodes._binding import check_bindings, groups_of
from relaygraph.nodes._verbatim import SourceIndex

TWO_ORDERS = ("A-1001 was $20.00 and arrived fine. A-2002 cost $75.50 and arrived broken; "
              "please refund A-2002")


class Refund(Contract):
    order_id: Annotated[str, Verbatim()]
    amount: Annotated[Decimal, Verbatim()]
    summary: str = ""


class DeclaredRefund(Contract):
    binding_groups = (("order_id", "amount", "ordered_on"),)
    order_id: Annotated[str, Verbatim()]
    amount: Annotated[Decimal, Verbatim()]
    ordered_on: Annotated[date | None, Verbatim()] = None


class Unbound(Contract):
    binding_groups = ()
    order_id: Annotated[str, Verbatim()]
    amount: Annotated[Decimal, Verbatim()]


class Customer(Contract):
    email: Annotated[str, Verbatim()]
    order_id: Annotated[str, Verbatim()]


def _run(contract: type[Contract], source: list[str], outputs: list[dict[str, Any]]
         ) -> tuple[dict[str, Any], list[Any]]:
    seen: list[Any] = []

    def compressor(messages: Any, contract_type: Any, feedback: Any) -> dict[str, Any]:
        seen.append(feedback)
        return outputs[min(len(seen) - 1, len(outputs) - 1)]

    node = handoff(contract, source="messages", target="case", compressor=compressor,
                   max_repairs=len(outputs) - 1)
    state = {"messages": [HumanMessage(content=t) for t in source]}
    return node.invoke(state), seen


def test_the_two_order_swap_fails_naming_the_competing_order() -> None:
    with pytest.raises(HandoffError) as err:
        _run(Refund, [TWO_ORDERS], [{"order_id": "A-1001", "amount": "75.50"}])
    report = err.value.report
    reason = report["verbatim"]["amount"]["reason"]
    assert "A-2002" in reason and "order_id='A-1001'" in reason
    assert not report["verbatim"]["amount"]["passed"]
    assert report["verbatim"]["order_id"]["passed"]


@pytest.mark.parametrize("pair", [("A-2002", "75.50"), ("A-1001", "20.00")])
def test_the_right_pairs_pass_with_the_binding_in_the_provenance(pair: tuple[str, str]) -> None:
    out, _ = _run(Refund, [TWO_ORDERS], [{"order_id": pair[0], "amount": pair[1]}])
    assert out["case"].order_id == pair[0]
    bound = out["handoffs"][-1]["verbatim"]["amount"]["provenance"]["bound_to"]
    assert bound == {"field": "order_id", "value": pair[0], "scope": "clause", "message": 0}


def test_the_feedback_lets_the_repair_fix_the_swap() -> None:
    out, seen = _run(Refund, [TWO_ORDERS], [{"order_id": "A-1001", "amount": "75.50"},
                                            {"order_id": "A-2002", "amount": "75.50"}])
    assert out["case"].order_id == "A-2002"
    assert "A-2002" in str(seen[1])


def test_a_swapped_date_in_a_tool_record_list_fails() -> None:
    source = ['[{"order_id": "A-1001", "total": 20.0, "placed": "2024-03-01"}, '
              '{"order_id": "A-2002", "total": 75.5, "placed": "2024-03-05"}]']
    with pytest.raises(HandoffError) as err:
        _run(DeclaredRefund, source,
             [{"order_id": "A-2002", "amount": "75.5", "ordered_on": "2024-03-01"}])
    assert "A-1001" in err.value.report["verbatim"]["ordered_on"]["reason"]
    out, _ = _run(DeclaredRefund, source,
                  [{"order_id": "A-2002", "amount": "75.5", "ordered_on": "2024-03-05"}])
    assert out["case"].ordered_on == date(2024, 3, 5)


def test_a_swapped_customer_email_fails() -> None:
    source = ["Customer jo@example.com placed order A-1001. Customer al@example.org "
              "placed order A-2002 and wants a refund."]
    index = SourceIndex(source)
    bad = check_bindings(index, Customer(email="al@example.org", order_id="A-1001"))
    assert "jo@example.com" in bad.errors["order_id"]
    good = check_bindings(index, Customer(email="al@example.org", order_id="A-2002"))
    assert good.errors == {} and good.bound["order_id"]["value"] == "al@example.org"


def test_default_groups_pass_values_with_no_entity_around_them() -> None:
    source = ["My order is A-1001.", "Something else entirely.", "I paid 20.00 dollars."]
    assert check_bindings(SourceIndex(source), Refund(order_id="A-1001", amount="20")).errors == {}


def test_declared_groups_fail_values_bound_to_no_entity() -> None:
    source = ["My order is A-1001.", "Something else entirely.", "I paid 20.00 dollars."]
    res = check_bindings(SourceIndex(source), DeclaredRefund(order_id="A-1001", amount="20"))
    assert "not bound to order_id='A-1001'" in res.errors["amount"]


def test_groups_default_and_opt_out() -> None:
    assert groups_of(Refund) == ((("order_id", "amount"), False),)
    assert groups_of(Unbound) == ()
    assert check_bindings(SourceIndex([TWO_ORDERS]),
                          Unbound(order_id="A-1001", amount="75.50")).errors == {}

    class Near(Contract):
        order_id: Annotated[str, Verbatim()]
        amount: Annotated[Decimal, Verbatim(near_field="order_id")]

    assert groups_of(Near) == ()


def test_nested_contracts_are_checked_with_their_path() -> None:
    class Case(Contract):
        refunds: list[Refund]

    res = check_bindings(SourceIndex([TWO_ORDERS]), Case(refunds=[
        Refund(order_id="A-2002", amount="75.50"), Refund(order_id="A-1001", amount="75.50")]))
    assert list(res.errors) == ["refunds[1].amount"]


@pytest.mark.parametrize(("groups", "message"), [
    ((("order_id", "amout"),), "names 'amout', which is no field of Bad"),
    ((("order_id", "summary"),), "'summary', which is not a Verbatim field"),
    ((("order_id",),), "at least two fields"),
    (("order_id",), "must be a tuple of tuples"),
])
def test_bad_group_declarations_fail_at_class_definition(groups: Any, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        class Bad(Contract):
            binding_groups = groups
            order_id: Annotated[str, Verbatim()]
            amount: Annotated[Decimal, Verbatim()]
            summary: str = ""


def test_the_generated_corpus_meets_its_targets() -> None:
    path = Path(__file__).resolve().parents[2] / "bench" / "bench_binding.py"
    spec = importlib.util.spec_from_file_location("bench_binding", path)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    sys.modules["bench_binding"] = bench
    spec.loader.exec_module(bench)
    r = bench.run(120, seed=3)
    assert r["planted"] > 500 and set(r["by_kind"]) == {
        "multi-order", "multi-customer", "multi-date"}
    assert r["caught"] >= 0.95 * r["planted"], r
    assert r["wrongly_failed"] == 0, r
