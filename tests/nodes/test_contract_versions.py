"""Contract versions: a stored older contract is upgraded when read, or refused clearly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Annotated

import ormsgpack
import pytest

import relaygraph
from relaygraph._errors import ConfigurationError
from relaygraph.checkpointers._serde import RelaygraphSerializer
from relaygraph.cli import main
from relaygraph.nodes import Contract, Verbatim
from relaygraph.nodes._versions import ContractVersionError, default, diff, rename

V1 = '''
from decimal import Decimal
from relaygraph.nodes import Contract

class RefundCase(Contract):
    order_id: str
    amount: Decimal | None
'''

V2 = '''
from decimal import Decimal
from relaygraph.nodes import Contract
from relaygraph.nodes._versions import default, rename

class RefundCase(Contract, version=2):
    __upgrades__ = {1: [rename("amount", "refund_amount"), default("currency", "EUR")]}
    order_id: str
    refund_amount: Decimal
    currency: str
'''

FLOW = '''
from typing import Any, TypedDict
from langgraph.graph import END, START, StateGraph
import rg_case

class State(TypedDict, total=False):
    amount: Any
    case: Any
    result: Any

def make(state):
    return {"case": rg_case.RefundCase(order_id="A-2002", amount=state["amount"])}

def finish(state):
    case = state["case"]
    return {"result": {"class": type(case).__name__, "version": type(case).__version__,
                       "data": case.model_dump(mode="json")}}

def build(checkpointer):
    g = StateGraph(State)
    g.add_node("make", make)
    g.add_node("finish", finish)
    g.add_edge(START, "make")
    g.add_edge("make", "finish")
    g.add_edge("finish", END)
    return g.compile(checkpointer=checkpointer, interrupt_before=["finish"])
'''

RUNNER = '''
import json, sys
from relaygraph.checkpointers import SQLAlchemySaver
from rg_flow import build

url, step = sys.argv[1:3]
with SQLAlchemySaver.from_conn_string(url) as saver:
    saver.setup()
    out = {}
    for thread, amount in (("good", "75.50"), ("bad", None)):
        cfg = {"configurable": {"thread_id": thread}}
        try:
            if step == "pause":
                build(saver).invoke({"amount": amount}, cfg)
                out[thread] = build(saver).get_state(cfg).next
            else:
                out[thread] = build(saver).invoke(None, cfg)["result"]
        except Exception as exc:
            out[thread] = {"error": type(exc).__name__, "message": str(exc),
                           "cause": type(exc.__cause__).__name__}
print(json.dumps(out))
'''


CLI = "import sys; from relaygraph.cli import main; sys.exit(main(sys.argv[1:]))"


def _env(tmp_path: Path, version: str) -> dict[str, str]:
    # the child's rg_case module defines the contract at ``version``
    src = str(Path(relaygraph.__file__).resolve().parents[1])
    path = [str(tmp_path / version), str(tmp_path), src]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(path)}


def _check(tmp_path: Path, version: str, url: str) -> tuple[int, list[dict[str, object]]]:
    out = subprocess.run([sys.executable, "-c", CLI, "contracts", "check",
                          "--db", url, "--graph", "flow=rg_flow:build", "--json"],
                         env=_env(tmp_path, version), capture_output=True, text=True,
                         timeout=120)
    assert out.returncode in (0, 1), out.stderr[-3000:]
    return out.returncode, json.loads(out.stdout)


def _run(tmp_path: Path, version: str, url: str, step: str) -> dict[str, object]:
    out = subprocess.run([sys.executable, str(tmp_path / "runner.py"), url, step],
                         env=_env(tmp_path, version), capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_paused_thread_resumes_with_the_upgraded_contract(tmp_path: Path) -> None:
    for version, text in (("v1", V1), ("v2", V2)):
        (tmp_path / version).mkdir()
        (tmp_path / version / "rg_case.py").write_text(text)
    (tmp_path / "runner.py").write_text(RUNNER)
    (tmp_path / "rg_flow.py").write_text(FLOW)
    url = f"sqlite:///{tmp_path / 'relay.db'}"
    assert _run(tmp_path, "v1", url, "pause") == {"good": ["finish"], "bad": ["finish"]}
    # under the v1 code both threads resume; under v2 the one with no amount cannot
    assert _check(tmp_path, "v1", url)[0] == 0
    status, rows = _check(tmp_path, "v2", url)
    assert status == 1
    by_thread = {r["thread_id"]: r for r in rows}
    assert by_thread["good"]["ok"] is True
    assert by_thread["bad"]["ok"] is False
    assert "from version 1 to version 2" in str(by_thread["bad"]["error"])
    got = _run(tmp_path, "v2", url, "resume")
    assert got["good"] == {"class": "RefundCase", "version": 2,
                           "data": {"order_id": "A-2002", "refund_amount": "75.50",
                                    "currency": "EUR"}}
    bad = got["bad"]
    assert isinstance(bad, dict)
    assert bad["error"] == "CorruptCheckpointError"
    assert bad["cause"] == "ContractVersionError"
    message = bad["message"]
    assert "'bad'" in message and "checkpoint" in message
    assert "rg_case.RefundCase from version 1 to version 2" in message
    assert "refund_amount" in message


class Case(Contract, version=3):
    __upgrades__ = {
        1: rename("amount", "total"),
        2: [default("currency", "EUR"), lambda d: {**d, "order_id": d["order_id"].upper()}],
    }
    order_id: str
    total: Decimal
    currency: str


class Fragile(Contract, version=2):
    __upgrades__ = {1: lambda d: d["missing"]}
    x: int


class Sloppy(Contract, version=2):
    __upgrades__ = {1: lambda d: ["not", "a", "dict"]}
    x: int


def _read(cls: type, kwargs: dict[str, object], stored: int) -> object:
    # what the saver stores for {"case": <cls at version ``stored``>}, read back
    tup = [cls.__module__, cls.__name__, kwargs, "model_validate_json",
           {"contract_version": stored}]
    data = ormsgpack.packb({"case": ormsgpack.Ext(5, ormsgpack.packb(tup))})
    return RelaygraphSerializer().loads_typed(("msgpack", data))


def test_the_version_is_recorded_when_stored() -> None:
    serde = RelaygraphSerializer()
    case = Case(order_id="a-1", total=Decimal("5"), currency="EUR")
    kind, data = serde.dumps_typed({"case": case})
    assert ormsgpack.packb({"contract_version": 3}) in data
    assert serde.loads_typed((kind, data)) == {"case": case}


def test_steps_run_in_order_from_the_stored_version() -> None:
    got = _read(Case, {"order_id": "a-1", "amount": "5"}, 1)
    assert got == {"case": Case(order_id="A-1", total=Decimal("5"), currency="EUR")}
    got = _read(Case, {"order_id": "a-1", "total": "5"}, 2)
    assert got == {"case": Case(order_id="A-1", total=Decimal("5"), currency="EUR")}
    # the current version is read as it is, with no step run
    same = {"order_id": "a-1", "total": "5", "currency": "USD"}
    assert _read(Case, same, 3) == {"case": Case.model_validate(same)}


def test_a_stored_newer_version_is_refused() -> None:
    with pytest.raises(ContractVersionError, match="from version 4 to version 3.*backwards"):
        _read(Case, {"order_id": "a", "total": "1", "currency": "EUR"}, 4)


def test_an_upgrade_that_raises_or_returns_a_non_dict_is_reported() -> None:
    with pytest.raises(ContractVersionError, match="raised KeyError") as info:
        _read(Fragile, {"y": 1}, 1)
    assert (info.value.stored, info.value.current) == (1, 2)
    assert info.value.contract.endswith("Fragile")
    with pytest.raises(ContractVersionError, match="returned a list, not a dict"):
        _read(Sloppy, {"x": 1}, 1)


def test_an_upgrade_the_new_version_rejects_is_reported() -> None:
    # no step from version 0, and the old data lacks the required fields
    with pytest.raises(ContractVersionError, match="from version 0 to version 3.*total"):
        _read(Case, {"order_id": "a"}, 0)


def test_bad_declarations_fail_when_the_class_is_defined() -> None:
    with pytest.raises(ConfigurationError, match="integer >= 1, got 0"):
        class Zero(Contract, version=0):
            x: int
    with pytest.raises(ConfigurationError, match="step from version 2.*version 2"):
        class Ahead(Contract, version=2):
            __upgrades__ = {2: rename("a", "b")}
            x: int
    with pytest.raises(ConfigurationError, match="not callable"):
        class Junk(Contract, version=2):
            __upgrades__ = {1: "rename a to b"}
            x: int


def test_versions_cannot_go_backwards() -> None:
    def define(version: int) -> type:
        class Backwards(Contract, version=version):
            x: int
        return Backwards

    define(2)
    with pytest.raises(ConfigurationError, match="version 1 after version 2"):
        define(1)


class DiffOld(Contract):
    order_id: Annotated[str, Verbatim()]
    note: str | None = None
    amount: Decimal


class DiffNew(Contract, version=2):
    order_id: str
    note: str
    currency: str


class DiffUpgraded(Contract, version=2):
    __upgrades__ = {1: [rename("amount", "total"), default("note", "")]}
    order_id: str
    note: str
    total: Decimal


def test_diff_names_each_change_and_whether_it_breaks() -> None:
    changes = {(c["field"], c["change"]): c["breaking"] for c in diff(DiffOld, DiffNew)}
    assert changes == {
        ("order_id", "Verbatim removed"): False, ("note", "now required"): True,
        ("note", "type narrowed"): True, ("amount", "removed"): True,
        ("currency", "added required"): True}
    # an upgrade step from the old version makes the same kind of change safe
    assert not any(c["breaking"] for c in diff(DiffOld, DiffUpgraded))


def test_contracts_diff_command(capsys: pytest.CaptureFixture[str]) -> None:
    mod = __name__
    assert main(["contracts", "diff", f"{mod}:DiffOld", f"{mod}:DiffNew", "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert (out["old_version"], out["new_version"], out["compatible"]) == (1, 2, False)
    assert main(["contracts", "diff", f"{mod}:DiffOld", f"{mod}:DiffUpgraded"]) == 0
    assert "compatible" in capsys.readouterr().out
    assert main(["contracts", "diff", "nocolon", f"{mod}:DiffNew"]) == 2
