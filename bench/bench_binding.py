"""Binding benchmark: referential drift caught on generated multi-entity transcripts.

    python bench/bench_binding.py [--cases 400] [--seed 7] [--show-misses]

Each case is a transcript naming two or three orders (multi-order), customers
(multi-customer) or order dates (multi-date), written as chat turns, one-line records or
a tool's JSON result. For every entity the case yields the clean contract (all values of
that entity) and, for every field other than the anchor, a planted swap: that field
takes another entity's value. Every value of a swap is still written in the source, so
only the binding check can catch it.

Reported: planted swaps caught (the handoff fails on the swapped field; target >= 95%)
and clean handoffs wrongly failed (target 0). ``tests/nodes/test_binding.py`` asserts
both on a smaller run.
"""

from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from typing import Annotated, Any

from relaygraph.nodes import Contract, Verbatim
from relaygraph.nodes._binding import check_bindings
from relaygraph.nodes._verbatim import SourceIndex


class OrderCase(Contract):
    order_id: Annotated[str, Verbatim()]
    amount: Annotated[Decimal, Verbatim()]
    ordered_on: Annotated[date, Verbatim()]


class CustomerCase(Contract):
    email: Annotated[str, Verbatim()]
    order_id: Annotated[str, Verbatim()]
    amount: Annotated[Decimal, Verbatim()]


@dataclass
class Case:
    kind: str
    template: str
    contract: type[Contract]
    source: list[str]
    entities: list[dict[str, Any]]


def _money(d: Decimal) -> str:
    return f"${d:,.2f}"


def _when(d: date, style: int) -> str:
    return [d.isoformat(), d.strftime("%B %d, %Y").replace(" 0", " "),
            d.strftime("%d %b %Y").lstrip("0"), d.strftime("%m/%d/%Y")][style]


_ORDER_TEMPLATES = [
    ("chat", lambda es, st: [" ".join(
        f"{e['order_id']} was {_money(e['amount'])}, ordered {_when(e['ordered_on'], st)}, "
        f"and {random_state(e)}." for e in es) + f" Please refund {es[-1]['order_id']}."]),
    ("turns", lambda es, st: [
        f"I placed order {e['order_id']} on {_when(e['ordered_on'], st)} and paid "
        f"{_money(e['amount'])} for it." for e in es]),
    ("value-first", lambda es, st: [" ".join(
        f"On {_when(e['ordered_on'], st)} I paid {_money(e['amount'])} for {e['order_id']}."
        for e in es)]),
    ("one-sentence", lambda es, st: ["I paid " + " and ".join(
        f"{_money(e['amount'])} for {e['order_id']} on {_when(e['ordered_on'], st)}"
        for e in es) + "."]),
    ("follow-up", lambda es, st: [" ".join(
        f"Order {e['order_id']} {random_state(e)}. It cost {_money(e['amount'])} and was "
        f"placed {_when(e['ordered_on'], st)}." for e in es)]),
    ("lines", lambda es, st: ["Your recent orders:\n" + "\n".join(
        f"- {e['order_id']}: {_money(e['amount'])}, placed {_when(e['ordered_on'], st)}"
        for e in es)]),
    ("tool-json", lambda es, st: ["Let me look those up.", "[" + ", ".join(
        f'{{"order_id": "{e["order_id"]}", "total": {e["amount"]}, '
        f'"placed": "{e["ordered_on"].isoformat()}"}}' for e in es) + "]"]),
    ("agent-summary", lambda es, st: [
        "Hi, I need help with my orders.",
        "Orders " + "; ".join(
            f"{e['order_id']} ({_money(e['amount'])}, {_when(e['ordered_on'], st)})"
            for e in es) + " are on your account."]),
]

_CUSTOMER_TEMPLATES = [
    ("chat", lambda es: [" ".join(
        f"Customer {e['email']} bought {e['order_id']} for {_money(e['amount'])}."
        for e in es)]),
    ("turns", lambda es: [
        f"From {e['email']}: my order {e['order_id']} cost {_money(e['amount'])} "
        "and never arrived." for e in es]),
    ("tool-json", lambda es: ["[" + ", ".join(
        f'{{"email": "{e["email"]}", "order": "{e["order_id"]}", "total": {e["amount"]}}}'
        for e in es) + "]"]),
    ("lines", lambda es: ["Open tickets:\n" + "\n".join(
        f"{e['email']} | {e['order_id']} | {_money(e['amount'])}" for e in es)]),
]

_STATES = ["arrived fine", "arrived broken", "never arrived", "was the wrong size"]


def random_state(e: dict[str, Any]) -> str:
    return _STATES[int(e["amount"]) % len(_STATES)]


def generate(n: int, seed: int) -> Iterator[Case]:
    """``n`` cases, drawn deterministically from ``seed``."""
    rng = random.Random(seed)
    names = ["jo", "al", "mia", "sam", "lee", "ana", "raj", "kim"]
    domains = ["example.com", "mail.example.org", "shop.test"]
    for i in range(n):
        count = rng.choice([2, 2, 3])
        ids = rng.sample(range(1000, 9999), count)
        prefix = rng.choice(["A-", "ORD-", "#", "A"])
        prefix = "A-" if prefix == "#" else prefix
        amounts = [Decimal(rng.randrange(500, 99999)) / 100 for _ in range(count)]
        base = date(2024, 1, 1) + timedelta(days=rng.randrange(0, 700))
        dates = [base + timedelta(days=rng.randrange(1, 40) * (k + 1)) for k in range(count)]
        kind = ["multi-order", "multi-customer", "multi-date"][i % 3]
        if kind == "multi-customer":
            who = rng.sample(names, count)
            entities = [{"email": f"{w}@{rng.choice(domains)}", "order_id": f"{prefix}{o}",
                         "amount": a} for w, o, a in zip(who, ids, amounts, strict=True)]
            template, build = rng.choice(_CUSTOMER_TEMPLATES)
            yield Case(kind, template, CustomerCase, build(entities), entities)
            continue
        if kind == "multi-date":  # the same amount twice: only the dates tell them apart
            amounts = [amounts[0]] * count
        entities = [{"order_id": f"{prefix}{o}", "amount": a, "ordered_on": d}
                    for o, a, d in zip(ids, amounts, dates, strict=True)]
        template, obuild = rng.choice(_ORDER_TEMPLATES)
        yield Case(kind, template, OrderCase, obuild(entities, rng.randrange(4)), entities)


def failed_fields(case: Case, values: dict[str, Any]) -> set[str]:
    """The fields a handoff of ``values`` fails on: verbatim checks, then bindings."""
    index = SourceIndex(case.source)
    contract = case.contract.model_validate(values)
    failed = {path for path, marker, value, owner in contract.iter_verbatim_with_owner()
              if not index.check(value, marker, owner).passed}
    if failed:
        return failed
    return set(check_bindings(index, contract).errors)


def run(n: int, seed: int, show_misses: bool = False) -> dict[str, Any]:
    """Measure the binding check on ``n`` generated cases."""
    planted = caught = clean = wrongly_failed = 0
    by_kind: dict[str, list[int]] = {}
    for case in generate(n, seed):
        anchor = next(iter(case.contract.model_fields))
        for k, entity in enumerate(case.entities):
            clean += 1
            bad = failed_fields(case, entity)
            if bad:
                wrongly_failed += 1
                if show_misses:
                    print(f"CLEAN FAILED {case.kind}/{case.template} {bad}: {case.source}")
            for name in case.contract.model_fields:
                if name == anchor:
                    continue
                for j, other in enumerate(case.entities):
                    if j == k or other[name] == entity[name]:
                        continue
                    planted += 1
                    got = failed_fields(case, {**entity, name: other[name]})
                    stats = by_kind.setdefault(case.kind, [0, 0])
                    stats[1] += 1
                    if name in got:
                        caught += 1
                        stats[0] += 1
                    elif show_misses:
                        print(f"MISSED {case.kind}/{case.template} {name}: {case.source}")
    return {"planted": planted, "caught": caught, "clean": clean,
            "wrongly_failed": wrongly_failed,
            "by_kind": {k: {"planted": v[1], "caught": v[0]} for k, v in by_kind.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--cases", type=int, default=400)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--show-misses", action="store_true")
    args = parser.parse_args(argv)
    r = run(args.cases, args.seed, args.show_misses)
    print(f"cases: {args.cases} (seed {args.seed})")
    print(f"planted swaps caught: {r['caught']}/{r['planted']} "
          f"({100 * r['caught'] / max(r['planted'], 1):.1f}%)")
    for kind, v in sorted(r["by_kind"].items()):
        print(f"  {kind}: {v['caught']}/{v['planted']}")
    print(f"clean handoffs wrongly failed: {r['wrongly_failed']}/{r['clean']}")
    ok = r["caught"] >= 0.95 * r["planted"] and r["wrongly_failed"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
