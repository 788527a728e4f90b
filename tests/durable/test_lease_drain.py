"""SIGTERM: a worker finishes its current step, checkpoints it, releases its lease, exits;
a restart resumes cleanly.

The worker is this file run as a script (see the bottom).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa

from relaygraph.checkpointers import SQLAlchemySaver
from relaygraph.durable import LeaseStore, leased

if __name__ == "__main__":  # the worker, run as a script
    from _lease_helpers import counter_graph
else:
    from ._lease_helpers import counter_graph

HERE = Path(__file__).resolve()
CFG = {"configurable": {"thread_id": "t"}}


def test_sigterm_drains_at_a_step_boundary(backend) -> None:
    engine = sa.create_engine(backend.url)
    saver = SQLAlchemySaver(engine)
    saver.setup()
    store = LeaseStore.from_saver(saver)
    store.setup()
    proc = subprocess.Popen(
        [sys.executable, str(HERE), backend.url], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(HERE.parent)})
    try:
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.readline().strip() == "in-step 2"
        assert store.current("t") is not None  # the worker holds the lease mid-step
        proc.send_signal(signal.SIGTERM)
        proc.stdin.write("go\n")  # let step 2 finish
        proc.stdin.flush()
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert out.strip().splitlines() == ["drained: shutdown"]
    assert store.current("t") is None  # released on the way out
    try:
        graph = counter_graph(4).compile(checkpointer=saver)
        state = graph.get_state(CFG)
        assert state.values["count"] == 2 and state.next == ("step",)  # step 2 is kept
        assert leased(graph, store).invoke(None, CFG)["count"] == 4  # the restart
        assert graph.get_state(CFG).values["log"] == [f"step:{i}" for i in range(1, 5)]
    finally:
        engine.dispose()


def _worker(url: str) -> None:
    from langgraph.errors import GraphDrained  # noqa: PLC0415

    from relaygraph.durable import drain_on_sigterm  # noqa: PLC0415

    def hook(n: int) -> None:
        if n == 2:
            print(f"in-step {n}", flush=True)
            sys.stdin.readline()  # SIGTERM arrives while the step runs

    engine = sa.create_engine(url)
    saver = SQLAlchemySaver(engine)
    runner = leased(counter_graph(4, hook=hook).compile(checkpointer=saver),
                    LeaseStore.from_saver(saver))
    with drain_on_sigterm():
        try:
            runner.invoke({"count": 0}, CFG)
            print("finished", flush=True)
        except GraphDrained as exc:
            print(f"drained: {exc.reason}", flush=True)
    engine.dispose()


if __name__ == "__main__":
    _worker(sys.argv[1])
