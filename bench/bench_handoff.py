"""Handoff benchmark: fact retention, compression and distortion catching on the corpus.

    python bench/bench_handoff.py [--corpus bench/handoff_corpus/corpus.json] [--per-case]

For every transcript in the corpus, a deterministic extractive compressor (rules and
regular expressions over the transcript; it never reads the annotations) fills the
transcript's contract through ``handoff()``. The script measures

* facts kept: the share of annotated critical facts that the brief (the text the next
  agent receives) still states, compared as numbers/dates/ids like Verbatim does;
* compression: brief tokens / source tokens (median and max);
* distortions caught: for each annotated amount, id, date and email, two realistic
  distortions (digit transposition, +10%, a changed digit, a dropped character, a day
  off, day/month swapped, a swapped letter, a changed domain) are planted in the
  compressor's output and the handoff must route to ``on_failure`` naming that field.

Targets (asserted by tests/nodes/test_handoff_corpus.py): 100% facts kept, median ratio
<= 25%, 100% distortions caught.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import statistics
import sys
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "handoff_corpus"))

from contracts import CONTRACTS, ResearchBrief, SupportCasePlain  # noqa: E402
from langchain_core.messages import (  # noqa: E402
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)

from relaygraph.nodes import Verbatim, handoff, render_brief  # noqa: E402
from relaygraph.nodes._verbatim import SourceIndex, parse_date, parse_number  # noqa: E402

CORPUS = HERE / "handoff_corpus" / "corpus.json"
EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
AMOUNT = re.compile(r"\$\d[\d,]*(?:\.\d+)?")
PAPER_ID = re.compile(r"(?:arXiv:\d{4}\.\d{4,5}|10\.\d{4,9}/[^\s,;]+)")
KIND = {"id": "exact", "email": "exact", "amount": "number", "date": "date", "text": "text"}


# ---------------------------------------------------------------------------- corpus

def to_messages(raw: list[dict[str, Any]]) -> list[BaseMessage]:
    """Corpus JSON messages → LangChain messages."""
    out: list[BaseMessage] = []
    for m in raw:
        if m["role"] == "human":
            out.append(HumanMessage(m["content"]))
        elif m["role"] == "system":
            out.append(SystemMessage(m["content"]))
        elif m["role"] == "tool":
            out.append(ToolMessage(m["content"], tool_call_id=m["tool_call_id"], name=m["name"]))
        else:
            out.append(AIMessage(m["content"], tool_calls=[
                {"name": c["name"], "args": c["args"], "id": c["id"]}
                for c in m.get("tool_calls", [])]))
    return out


def load_corpus(path: Path = CORPUS) -> list[dict[str, Any]]:
    return json.loads(path.read_text())["transcripts"]


# ---------------------------------------------------------------------------- compressor

class Transcript:
    """Read-only views over a transcript that the extraction rules use."""

    def __init__(self, messages: list[BaseMessage]) -> None:
        self.messages = messages
        self.calls: list[tuple[str, dict[str, Any], Any]] = []  # (tool, args, parsed result)
        pending: dict[str, tuple[str, dict[str, Any]]] = {}
        for m in messages:
            if isinstance(m, AIMessage):
                for c in m.tool_calls:
                    pending[c["id"] or ""] = (c["name"], c["args"])
            elif isinstance(m, ToolMessage) and m.tool_call_id in pending:
                name, args = pending.pop(m.tool_call_id)
                try:
                    result = json.loads(str(m.content))
                except ValueError:
                    result = str(m.content)
                self.calls.append((name, args, result))
        self.human = [str(m.content) for m in messages if isinstance(m, HumanMessage)]
        self.ai = [str(m.content) for m in messages
                   if isinstance(m, AIMessage) and str(m.content).strip()]

    def last_call(self, tool: str, where: Any = None) -> tuple[dict[str, Any], Any] | None:
        for name, args, result in reversed(self.calls):
            if name == tool and (where is None or where(args, result)):
                return args, result
        return None

    def used(self, tool: str) -> bool:
        return any(name == tool for name, _, _ in self.calls)


def _first_sentence(text: str, words: int = 30) -> str:
    sentence = re.split(r"(?<=[.!?])\s", text.strip())[0]
    return " ".join(sentence.split()[:words])


def extract_support(t: Transcript) -> dict[str, Any]:
    out: dict[str, Any] = {}
    emails = [e for h in t.human for e in EMAIL.findall(h)]
    out["customer_email"] = emails[-1] if emails else None  # the customer's latest word
    issue = next((h for h in t.human if len(h.split()) > 5), t.human[0] if t.human else "")
    out["issue"] = _first_sentence(issue)
    ok_identity = t.last_call("verify_identity", lambda a, r: isinstance(r, dict)
                              and r.get("verified"))
    if ok_identity and ok_identity[1].get("name"):
        out["customer_name"] = ok_identity[1]["name"]
    if t.used("get_invoice") or t.used("list_invoices"):
        out["case_type"] = "billing"
        inv = t.last_call("get_invoice")
        if inv:
            out["invoice_id"] = inv[0]["invoice_id"]
            out["amount"] = inv[1]["amount"]
        for h in t.human:
            m = re.search(r"(?:should have paid|on \w+ at)\s+(\$[\d,]+\.\d{2})", h)
            if m:
                out["expected_amount"] = m.group(1).lstrip("$").replace(",", "")
        return out
    out["case_type"] = "exchange" if t.used("check_inventory") else "refund"
    order = t.last_call("lookup_order")
    if order:
        args, result = order
        out["order_id"] = args["order_id"]
        out["order_date"] = result.get("placed_at")
        out.setdefault("customer_name", result.get("customer_name"))
        said = " ".join(t.human).casefold()
        items = result.get("items", [])
        item = next((i for i in items if i["name"].casefold() in said), items[0] if items
                    else None)
        if item is not None:
            out["product"] = item["name"]
            out["amount"] = item["line_total"]
    stock = t.last_call("check_inventory", lambda a, r: isinstance(r, dict) and r.get("in_stock"))
    if stock:
        out["replacement_sku"] = stock[1]["sku"]
    return out


def extract_research(t: Transcript) -> dict[str, Any]:
    out: dict[str, Any] = {"sources": [], "key_figures": []}
    first = t.human[0] if t.human else ""
    m = re.search(r"brief on (.+?)\.", first)
    out["topic"] = m.group(1) if m else _first_sentence(first, 12)
    for h in t.human:  # later statements win (a moved deadline, a corrected address)
        if m := re.search(r"(?:[Ss]end it to|[Ee]mail it to|[Mm]y address is)\s+("
                          + EMAIL.pattern + ")", h):
            out["requester_email"] = m.group(1)
        if m := re.search(r"(?:[Dd]eadline(?: is|:| moved to)|need it by|due)\s+(.+?\d{4})", h):
            d = parse_date(m.group(1))
            if d is not None:
                out["deadline"] = d.isoformat()
        if m := re.search(r"(?:budget of|spend up to|[Bb]udget:)\s+(\$[\d,]+(?:\.\d+)?)", h):
            out["budget"] = str(parse_number(m.group(1)))
        if "onwards" in h:
            out["scope"] = _first_sentence(h)
    final = next((a for a in reversed(t.ai) if "source list" in a.casefold()), None)
    if final is not None:
        ids = [i.rstrip(".") for i in PAPER_ID.findall(final.split(". Deadline")[0])]
    else:
        dropped = {i for h in t.human if "leave out" in h for i in PAPER_ID.findall(h)}
        ids = [a["id"] for n, a, _ in t.calls if n == "read_paper" and a["id"] not in dropped]
    out["sources"] = ids
    for pid in ids:
        paper = t.last_call("read_paper", lambda a, r, pid=pid: a.get("id") == pid)
        if paper is None:
            continue
        text = paper[1]["text"] if isinstance(paper[1], dict) else str(paper[1])
        if m := re.search(r"Key result: (.+?) of (-?\d[\d,]*(?:\.\d+)?)", text):
            out["key_figures"].append({"metric": m.group(1), "value": m.group(2),
                                       "source": pid})
    return out


def rule_compressor(messages: list[BaseMessage], contract: type, feedback: Any) -> dict[str, Any]:
    """The benchmark's extractive compressor: rules over the transcript only."""
    t = Transcript(messages)
    data = extract_research(t) if issubclass(contract, ResearchBrief) else extract_support(t)
    return {k: v for k, v in data.items() if v is not None}


# ---------------------------------------------------------------------------- distortions

def _transpose(s: str) -> str | None:
    digits = [i for i, ch in enumerate(s) if ch.isdigit()]
    for a, b in zip(digits, digits[1:], strict=False):
        if b == a + 1 and s[a] != s[b]:
            return s[:a] + s[b] + s[a] + s[b + 1:]
    return None


def distort(kind: str, value: str) -> list[tuple[str, str]]:
    """Two realistic distortions of a fact value: ``[(label, distorted)]``."""
    out: list[tuple[str, str]] = []
    if kind == "amount":
        v = Decimal(value)
        swapped = _transpose(f"{v:.2f}")
        out.append(("amount: digits transposed", swapped) if swapped and Decimal(swapped) != v
                   else ("amount: +1", f"{v + 1:.2f}"))
        out.append(("amount: +10%", f"{(v * Decimal('1.1')).quantize(Decimal('0.01'))}"))
    elif kind == "id":
        last = max(i for i, ch in enumerate(value) if ch.isdigit())
        out.append(("id: digit changed",
                    value[:last] + str((int(value[last]) + 1) % 10) + value[last + 1:]))
        out.append(("id: last char dropped", value[:-1]))
    elif kind == "date":
        d = date.fromisoformat(value)
        out.append(("date: one day off", (d + timedelta(days=1)).isoformat()))
        if d.day <= 12 and d.day != d.month:
            out.append(("date: day/month swapped", date(d.year, d.day, d.month).isoformat()))
        else:
            out.append(("date: year off", d.replace(year=d.year - 1).isoformat()))
    elif kind == "email":
        local, domain = value.split("@")
        i = next(i for i in range(len(local) - 1) if local[i] != local[i + 1])
        out.append(("email: letters swapped",
                    local[:i] + local[i + 1] + local[i] + local[i + 2:] + "@" + domain))
        host, _, tld = domain.rpartition(".")
        out.append(("email: domain changed", f"{local}@{host}.{'org' if tld != 'org' else 'net'}"))
    return out


def plant(output: dict[str, Any], field: str, value: str, kind: str,
          new: str) -> tuple[dict[str, Any], str] | None:
    """Replace the fact ``value`` at ``field`` in a compressor output; return the path."""
    data = copy.deepcopy(output)
    same = (lambda x: Decimal(str(x)) == Decimal(value)) if kind == "amount" else (
        lambda x: str(x).casefold() == value.casefold())
    if field == "key_figures.value":
        for i, kf in enumerate(data.get("key_figures", [])):
            if same(kf["value"]):
                kf["value"] = new
                return data, f"key_figures[{i}].value"
        return None
    current = data.get(field)
    if isinstance(current, list):
        for i, item in enumerate(current):
            if same(item):
                current[i] = new
                return data, f"{field}[{i}]"
        return None
    if current is None or not same(current):
        return None
    data[field] = new
    return data, field


# ---------------------------------------------------------------------------- measuring

def measure(corpus: list[dict[str, Any]] | None = None,
            contracts: dict[str, type] | None = None) -> dict[str, Any]:
    """Run the benchmark and return per-transcript rows and the summary numbers.

    Args:
        corpus: Transcripts (default: the committed corpus).
        contracts: Contract class per corpus contract name (default ``CONTRACTS``).
    """
    corpus = corpus if corpus is not None else load_corpus()
    contracts = contracts or CONTRACTS
    rows = []
    for case in corpus:
        contract = contracts[case["contract"]]
        messages = to_messages(case["messages"])
        node = handoff(contract, source="messages", target="brief", compressor=rule_compressor,
                       on_success="next", on_failure="review", max_repairs=0, timeout=None)
        result = node.invoke({"messages": messages})
        report = result.update["handoffs"][0]
        row: dict[str, Any] = {"id": case["id"], "contract": case["contract"],
                               "source_tokens": report["source_tokens"],
                               "brief_tokens": report["brief_tokens"], "ratio": report["ratio"],
                               "failure": report["failure"], "facts": len(case["facts"]),
                               "kept": 0, "missed": [], "planted": 0, "caught": 0,
                               "escaped": []}
        rows.append(row)
        if result.goto != "next":
            row["missed"] = [f["value"] for f in case["facts"]]
            continue
        brief = render_brief(result.update["brief"])
        brief_index = SourceIndex([brief])
        for fact in case["facts"]:
            if brief_index.check(fact["value"], Verbatim(kind=KIND[fact["kind"]])).passed:
                row["kept"] += 1
            else:
                row["missed"].append(fact["value"])
        good = rule_compressor(messages, contract, None)
        for fact in case["facts"]:
            if fact["kind"] == "text":
                continue
            for label, new in distort(fact["kind"], fact["value"]):
                planted = plant(good, fact["field"], fact["value"], fact["kind"], new)
                if planted is None:
                    row["escaped"].append(f"{label}: fact not in output")
                    row["planted"] += 1
                    continue
                bad, path = planted
                node_bad = handoff(contract, source="messages", target="brief",
                                   compressor=lambda m, c, f, bad=bad: bad, on_success="next",
                                   on_failure="review", max_repairs=0, timeout=None)
                out = node_bad.invoke({"messages": messages})
                row["planted"] += 1
                failed = out.update["handoffs"][0].get("failed_fields") or []
                if out.goto == "review" and path in failed:
                    row["caught"] += 1
                else:
                    row["escaped"].append(f"{label}: {fact['value']} -> {new}")
    facts = sum(r["facts"] for r in rows)
    kept = sum(r["kept"] for r in rows)
    planted = sum(r["planted"] for r in rows)
    caught = sum(r["caught"] for r in rows)
    ratios = [r["ratio"] for r in rows]
    sizes = [r["source_tokens"] for r in rows]
    return {
        "rows": rows,
        "transcripts": len(rows),
        "handoff_failures": sum(1 for r in rows if r["failure"]),
        "facts": facts, "kept": kept, "facts_kept_pct": 100.0 * kept / facts if facts else 0.0,
        "median_ratio_pct": 100.0 * statistics.median(ratios),
        "max_ratio_pct": 100.0 * max(ratios),
        "source_tokens_min": min(sizes), "source_tokens_median": statistics.median(sizes),
        "source_tokens_max": max(sizes),
        "planted": planted, "caught": caught,
        "caught_pct": 100.0 * caught / planted if planted else 0.0,
        "tokenizer": node.tokens.name,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--per-case", action="store_true", help="print one row per transcript")
    args = parser.parse_args()
    res = measure(load_corpus(args.corpus))
    if args.per_case:
        print(f"{'transcript':<22} {'src tok':>8} {'brief':>6} {'ratio':>7} {'facts':>7} "
              f"{'caught':>8}")
        for r in res["rows"]:
            print(f"{r['id']:<22} {r['source_tokens']:>8} {r['brief_tokens']:>6} "
                  f"{100 * r['ratio']:>6.1f}% {r['kept']:>3}/{r['facts']:<3} "
                  f"{r['caught']:>3}/{r['planted']:<3}"
                  + (f"  missed={r['missed']}" if r["missed"] else "")
                  + (f"  escaped={r['escaped']}" if r["escaped"] else ""))
        print()
    print(f"handoff benchmark — {res['transcripts']} transcripts, tokenizer {res['tokenizer']}, "
          f"source {res['source_tokens_min']}–{res['source_tokens_max']} tokens "
          f"(median {res['source_tokens_median']:.0f})")
    print(f"{'measure':<40} {'value':>12} {'target':>10}")
    print(f"{'annotated facts kept in the brief':<40} "
          f"{res['facts_kept_pct']:>11.1f}% {'100%':>10}   ({res['kept']}/{res['facts']})")
    print(f"{'median brief / source tokens':<40} {res['median_ratio_pct']:>11.1f}% "
          f"{'<= 25%':>10}   (max {res['max_ratio_pct']:.1f}%)")
    print(f"{'planted distortions caught':<40} {res['caught_pct']:>11.1f}% {'100%':>10}   "
          f"({res['caught']}/{res['planted']})")
    print(f"{'handoffs that failed on clean output':<40} {res['handoff_failures']:>12} {'0':>10}")
    base = measure(load_corpus(args.corpus), {**CONTRACTS, "SupportCase": SupportCasePlain})
    print(f"{'  same, plain Verbatim() on order_date':<40} {base['caught_pct']:>11.1f}% "
          f"{'(baseline)':>10}   ({base['caught']}/{base['planted']})")
    if args.per_case:
        for r in base["rows"]:
            for e in r["escaped"]:
                print(f"    baseline escaped in {r['id']}: {e}")


if __name__ == "__main__":
    main()
