"""A contract written by a handoff survives a process restart in a strict-msgpack SQL saver."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import relaygraph

GRAPH_MODULE = '''
from decimal import Decimal
from typing import Annotated, Any
from langchain_core.messages import AnyMessage, HumanMessage
from langgraph.graph import END, START, StateGraph, add_messages
from relaygraph.nodes import Contract, HandoffState, Verbatim, handoff
from relaygraph.testing import ScriptedChatModel

class RefundCase(Contract):
    order_id: Annotated[str, Verbatim()]
    amount: Annotated[Decimal, Verbatim()]
    summary: str

class State(HandoffState):
    messages: Annotated[list[AnyMessage], add_messages]
    case: Any  # not typed here, so only an explicit allowlist can rebuild it

def build(checkpointer):
    model = ScriptedChatModel([{"order_id": "A-10234", "amount": "12.40", "summary": "s"}])
    b = StateGraph(State)
    b.add_node("to_resolver", handoff(RefundCase, source="messages", target="case",
                                      compressor=model))
    b.add_edge(START, "to_resolver")
    b.add_edge("to_resolver", END)
    return b.compile(checkpointer=checkpointer)

FIRST = [HumanMessage("Refund order A-10234, I paid $12.40")]
'''

RUNNER = '''
import json, sys
from relaygraph.checkpointers import SQLAlchemySaver
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from relaygraph.nodes import contract_serializer
import rg_durable_graph as g
url, step = sys.argv[1:3]
cfg = {"configurable": {"thread_id": "t1"}}
if step == "run":
    with SQLAlchemySaver.from_conn_string(url) as saver:
        saver.setup()
        g.build(saver).invoke({"messages": g.FIRST}, cfg)
    print(json.dumps({"ok": True}))
else:
    seen = {}
    for mode, serde in (("allowlisted", contract_serializer(g.RefundCase)), ("default", None),
                        ("strict", JsonPlusSerializer(allowed_msgpack_modules=None))):
        with SQLAlchemySaver.from_conn_string(url, serde=serde) as saver:
            values = g.build(saver).get_state(cfg).values
        case = values["case"]
        seen[mode] = {"class": type(case).__module__ + "." + type(case).__name__,
                      "amount": repr(getattr(case, "amount", None)),
                      "report": values["handoffs"][0]["verbatim"]["amount"]["passed"]}
    print(json.dumps(seen))
'''


def _run(tmp_path: Path, *args: str) -> dict[str, object]:
    # the child imports the same relaygraph as this process, plus the module under test
    src = str(Path(relaygraph.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), src])}
    env.pop("LANGGRAPH_STRICT_MSGPACK", None)
    out = subprocess.run([sys.executable, str(tmp_path / "runner.py"), *args], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_contract_class_survives_restart(tmp_path: Path) -> None:
    (tmp_path / "rg_durable_graph.py").write_text(GRAPH_MODULE)
    (tmp_path / "runner.py").write_text(RUNNER)
    url = f"sqlite:///{tmp_path / 'relay.db'}"
    assert _run(tmp_path, url, "run") == {"ok": True}
    got = _run(tmp_path, url, "read")
    assert got["allowlisted"] == {"class": "rg_durable_graph.RefundCase",
                                  "amount": "Decimal('12.40')", "report": True}
    # relaygraph's default serializer allowlists every Contract subclass by itself
    assert got["default"] == got["allowlisted"]
    # LangGraph's strict serializer without that allowlist silently returns raw data
    assert got["strict"]["class"] == "builtins.dict"
    assert got["strict"]["report"] is True
