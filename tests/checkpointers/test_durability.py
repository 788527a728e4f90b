"""A graph paused by interrupt() in one process resumes in another, on every database."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

from relaygraph.checkpointers import SQLAlchemySaver

SCRIPT = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, {tests!r})
    from langgraph.types import Command
    from relaygraph.checkpointers import SQLAlchemySaver
    from checkpointers._graphs import review_graph

    url, phase = sys.argv[1], sys.argv[2]
    cfg = {{"configurable": {{"thread_id": "paused-1"}}}}
    with SQLAlchemySaver.from_conn_string(url) as saver:
        saver.setup()
        graph = review_graph().compile(checkpointer=saver)
        if phase == "start":
            out = graph.invoke({{"messages": []}}, cfg)
            state = graph.get_state(cfg)
            print(json.dumps({{"next": list(state.next),
                               "interrupt": out["__interrupt__"][0].value}}))
        else:
            out = graph.invoke(Command(resume="approved by ana"), cfg)
            print(json.dumps({{"decision": out["decision"],
                               "last": out["messages"][-1].content,
                               "next": list(graph.get_state(cfg).next)}}))
""")


def _run(url: str, phase: str) -> dict:
    tests = str(Path(__file__).resolve().parents[1])
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(tests=tests), url, phase],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_interrupt_then_resume_in_a_new_process(backend) -> None:
    first = _run(backend.url, "start")
    assert first == {"next": ["approval"],
                     "interrupt": {"question": "approve?", "draft": "refund 42.50 for order A-1"}}
    second = _run(backend.url, "resume")
    assert second == {"decision": "approved by ana", "last": "done: approved by ana", "next": []}


def test_sqlite_wal_switch_waits_for_a_database_being_created(tmp_path) -> None:
    """A second process opening a new database while the first still creates it waits for
    the WAL switch instead of failing with 'database is locked'."""
    path = tmp_path / "new.db"
    holder = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    # a writer in a rollback-journal database: SQLite refuses the switch at once
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("INSERT INTO t VALUES (1)")
    release = threading.Timer(0.5, holder.execute, ["COMMIT"])
    release.start()
    try:
        with SQLAlchemySaver.from_conn_string(f"sqlite:///{path}") as saver:
            saver.setup()
            with saver.engine.connect() as c:
                assert c.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    finally:
        release.join()
        holder.close()
