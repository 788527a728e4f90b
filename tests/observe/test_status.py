"""One function decides a thread's status; crashed threads are never reported finished.

The crash cases are real: a child process runs a graph on SQLite and is SIGKILLed at each
write boundary (before and after every ``put`` and ``put_writes``, and inside nodes), under
LangGraph's ``sync`` and ``async`` durability. The thread it leaves behind must be reported
``interrupted`` (or ``waiting``, or ``finished`` when nothing is left), and following the
report must end in the same state as a run that was never killed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, StateSnapshot

from relaygraph.checkpointers import SQLAlchemySaver
from relaygraph.observe import StatusReport, aget_thread_status, get_thread_status, thread_status

sys.path.insert(0, str(Path(__file__).parent))
import _status_crash as crash  # noqa: E402

CONFIG = crash.CONFIG


def _failing_graph():
    calls = {"n": 0}

    def flaky(state: crash.LogState) -> dict[str, Any]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("CRM timed out\nsecond line")
        return {"log": ["flaky"]}

    b = StateGraph(crash.LogState)
    b.add_node("flaky", flaky)
    b.add_edge(START, "flaky")
    b.add_edge("flaky", END)
    return b.compile(checkpointer=InMemorySaver())


def test_finished_waiting_and_running():
    graph = crash.answer_graph().compile(checkpointer=InMemorySaver())
    graph.invoke({"log": ["in"]}, CONFIG)
    report = get_thread_status(graph, CONFIG)
    assert report.status == "waiting" and not report.resumable
    assert report.next == ("ask",)
    assert [(w["value"], w["node"]) for w in report.waiting_on] == [("approve?", "ask")]
    assert report.waiting_on[0]["id"] == graph.get_state(CONFIG).interrupts[0].id
    assert thread_status(graph.get_state(CONFIG), running=True) == StatusReport(
        "running", ("ask",))
    graph.invoke(Command(resume="yes"), CONFIG)
    assert get_thread_status(graph, CONFIG) == StatusReport("finished")
    assert graph.get_state(CONFIG).values == crash.ANSWER_DONE


def test_a_failed_task_is_failed_and_resumable():
    graph = _failing_graph()
    with pytest.raises(RuntimeError):
        graph.invoke({"log": ["in"]}, CONFIG)
    report = get_thread_status(graph, CONFIG)
    assert report.status == "failed" and report.resumable
    # checkpointers store the error's repr (an exception object when kept in memory)
    assert report.error is not None and report.error.startswith("flaky: RuntimeError")
    assert "CRM timed out" in report.error
    assert report.next == ("flaky",)
    graph.invoke(None, CONFIG)  # what resumable promises: a retry of the failed task
    assert get_thread_status(graph, CONFIG).status == "finished"
    assert graph.get_state(CONFIG).values == {"log": ["in", "flaky"]}


def test_a_static_breakpoint_is_interrupted_and_resumable():
    graph = crash.fan_graph().compile(checkpointer=InMemorySaver(), interrupt_before=["d"])
    graph.invoke({"log": ["in"]}, CONFIG)
    assert get_thread_status(graph, CONFIG) == StatusReport(
        "interrupted", ("d",), resumable=True)
    graph.invoke(None, CONFIG)
    assert graph.get_state(CONFIG).values == crash.FAN_DONE


def test_a_thread_without_checkpoints_has_nothing_to_resume():
    graph = crash.fan_graph().compile(checkpointer=InMemorySaver())
    assert get_thread_status(graph, CONFIG) == StatusReport("finished")


def test_pending_writes_after_the_last_checkpoint_are_pending_work():
    # the shape a kill between a step's task writes and its checkpoint leaves: next == ()
    from langgraph.types import PregelTask

    snap = StateSnapshot(values={}, next=(), config=CONFIG, metadata=None, created_at="x",
                         parent_config=None, interrupts=(),
                         tasks=(PregelTask("1", "b", ("__pregel_pull", "b"), result={}),
                                PregelTask("2", "c", ("__pregel_pull", "c"), result={})))
    assert thread_status(snap) == StatusReport("interrupted", ("b", "c"), resumable=True)


async def test_async_twin():
    graph = crash.answer_graph().compile(checkpointer=InMemorySaver())
    await graph.ainvoke({"log": ["in"]}, CONFIG)
    assert (await aget_thread_status(graph, CONFIG)).status == "waiting"
    assert (await aget_thread_status(graph, CONFIG, running=True)).status == "running"


def _kill_points() -> list[str]:
    whats = [f"{kind}:{when}:{n}" for kind in ("put", "writes") for when in ("before", "after")
             for n in range(1, 6)]
    points = []
    for durability in ("sync", "async"):
        points += [f"{durability}/fan/{w}" for w in whats + [f"node:{n}" for n in "abcd"]]
        points += [f"{durability}/answer/{w}"
                   for w in [f"{k}:{w}:{n}" for k in ("put", "writes")
                             for w in ("before", "after") for n in (1, 2, 3)] + ["node:c"]]
    return points


def test_threads_killed_at_every_write_boundary_are_reported_and_resume(tmp_path):
    points = _kill_points()
    proc = subprocess.run([sys.executable, crash.__file__, str(tmp_path), *points],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    codes = dict(line.split() for line in proc.stdout.splitlines())
    assert "3" not in codes.values(), proc.stderr  # a child failed instead of being killed
    seen: dict[str, int] = {}
    killed_looking_finished = 0
    for n, point in enumerate(points):
        if codes[str(n)] == "0":
            continue  # the run ended before this point
        assert codes[str(n)] == "-9", point
        scenario = point.split("/")[1]
        done = crash.FAN_DONE if scenario == "fan" else crash.ANSWER_DONE
        builder = crash.fan_graph() if scenario == "fan" else crash.answer_graph()
        with SQLAlchemySaver.from_conn_string(f"sqlite:///{tmp_path}/{n}.db") as saver:
            graph = builder.compile(checkpointer=saver)
            snap = graph.get_state(CONFIG)
            report = thread_status(snap)
            seen[report.status] = seen.get(report.status, 0) + 1
            if snap.created_at is None:  # killed before the input was stored
                assert report == StatusReport("finished"), point
                continue
            if report.status == "finished":
                assert snap.values == done, point  # only a run that really ended
                continue
            if not snap.next and report.status == "interrupted":
                killed_looking_finished += 1
            if report.status == "waiting":
                # the answer may have been lost with the process: it is asked again
                assert scenario == "answer", point
                graph.invoke(Command(resume="yes"), CONFIG)
            else:
                assert report.status == "interrupted" and report.resumable, (point, report)
                assert report.next, point
                graph.invoke(None, CONFIG)  # the one call that resumes it
            assert graph.get_state(CONFIG).values == done, point
            assert thread_status(graph.get_state(CONFIG)).status == "finished", point
    # the case that used to be listed as done: killed with next == () and work pending
    assert killed_looking_finished >= 10, seen
    assert seen.get("interrupted", 0) >= 20 and seen.get("waiting", 0) >= 1, seen
