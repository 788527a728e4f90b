"""Runs graphs on SQLite and SIGKILLs them at chosen write boundaries (for test_status.py).

``python _status_crash.py DIR KILL...``: imports once, then for each kill point forks a
child that runs the graph on ``DIR/<n>.db`` and kills itself with SIGKILL at that point.
A kill point is ``DURABILITY/SCENARIO/WHAT``: ``WHAT`` is ``put:before:N``,
``put:after:N``, ``writes:before:N``, ``writes:after:N`` (the N-th call of the saver's
``put`` / ``put_writes`` in this process) or ``node:NAME`` (at the start of that node).
Scenario ``fan`` runs a -> (b, c) -> d from its input; ``answer`` first runs a -> ask
(interrupt) -> c to the interrupt, then forks the killed child for the resume.
"""

from __future__ import annotations

import operator
import os
import signal
import sys
import traceback
from typing import Annotated, Any

from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, interrupt
from typing_extensions import TypedDict

from relaygraph.checkpointers import SQLAlchemySaver

CONFIG: Any = {"configurable": {"thread_id": "t"}}
FAN_DONE = {"log": ["in", "a", "b", "c", "d"]}
ANSWER_DONE = {"log": ["in", "a", "ask:yes", "c"]}


class LogState(TypedDict, total=False):
    log: Annotated[list[str], operator.add]


_kill: list[str] = []
_calls = {"put": 0, "writes": 0}


def _maybe_die(kind: str, when: str) -> None:
    if _kill and _kill[0] == kind and _kill[1] == when and _calls[kind] == int(_kill[2]):
        os.kill(os.getpid(), signal.SIGKILL)


class KillingSaver(SQLAlchemySaver):
    """Dies at the configured call of ``put`` or ``put_writes``, before or after it."""

    def put(self, *args: Any, **kwargs: Any) -> Any:
        _calls["put"] += 1
        _maybe_die("put", "before")
        out = super().put(*args, **kwargs)
        _maybe_die("put", "after")
        return out

    def put_writes(self, *args: Any, **kwargs: Any) -> None:
        _calls["writes"] += 1
        _maybe_die("writes", "before")
        super().put_writes(*args, **kwargs)
        _maybe_die("writes", "after")


def _node(name: str):
    def run(state: LogState) -> dict[str, Any]:
        if _kill == ["node", name]:
            os.kill(os.getpid(), signal.SIGKILL)
        if name == "ask":
            return {"log": [f"ask:{interrupt('approve?')}"]}
        return {"log": [name]}
    return run


def fan_graph() -> StateGraph:
    b = StateGraph(LogState)
    for name in "abcd":
        b.add_node(name, _node(name))
    b.add_edge(START, "a")
    b.add_edge("a", "b")
    b.add_edge("a", "c")
    b.add_edge(["b", "c"], "d")
    b.add_edge("d", END)
    return b


def answer_graph() -> StateGraph:
    b = StateGraph(LogState)
    for name in ("a", "ask", "c"):
        b.add_node(name, _node(name))
    b.add_edge(START, "a")
    b.add_edge("a", "ask")
    b.add_edge("ask", "c")
    b.add_edge("c", END)
    return b


def _trial(path: str, point: str) -> None:
    durability, scenario, what = point.split("/")
    builder = fan_graph() if scenario == "fan" else answer_graph()
    with KillingSaver.from_conn_string(f"sqlite:///{path}") as saver:
        saver.setup()
        graph = builder.compile(checkpointer=saver)
        if scenario == "answer":
            graph.invoke({"log": ["in"]}, CONFIG)  # to the interrupt, not killed
            _calls.update(put=0, writes=0)
        _kill[:] = what.split(":")
        graph.invoke(Command(resume="yes") if scenario == "answer" else {"log": ["in"]},
                     CONFIG, durability=durability)


def main(directory: str, points: list[str]) -> None:
    for n, point in enumerate(points):
        pid = os.fork()
        if pid == 0:
            try:
                _trial(os.path.join(directory, f"{n}.db"), point)
            except BaseException:
                traceback.print_exc()
                os._exit(3)
            os._exit(0)  # ran to the end: the point was never reached
        _, status = os.waitpid(pid, 0)
        print(n, os.waitstatus_to_exitcode(status), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
