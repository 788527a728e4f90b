"""``relaygraph demo --crash-after NODE`` ends the process hard; the printed
``relaygraph resume`` command finishes the run with exactly one CRM refund."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "relaygraph", *args], capture_output=True,
                          text=True, timeout=120)


def _crm_rows(url: str) -> int:
    engine = sa.create_engine(url)
    try:
        if not sa.inspect(engine).has_table("crm_refunds"):
            return 0  # created when the first refund is issued
        with engine.connect() as conn:
            return int(conn.execute(sa.text("SELECT count(*) FROM crm_refunds")).scalar_one())
    finally:
        engine.dispose()


@pytest.mark.parametrize("node", ["resolver", "review"])
def test_crash_after_a_node_then_the_printed_resume_finishes_with_one_refund(
        tmp_path: Path, node: str) -> None:
    _crash_and_resume(f"sqlite:///{tmp_path / 'crash.db'}", node)


def test_crash_and_resume_on_every_database(backend: Any) -> None:
    _crash_and_resume(backend.url, "resolver")


def _crash_and_resume(url: str, node: str) -> None:
    crashed = _cli("demo", "--db", url, "--thread", "t-crash", "--crash-after", node)
    assert crashed.returncode == 1, crashed.stderr
    assert "Traceback" not in crashed.stderr
    assert f"crashing right after {node!r}" in crashed.stdout
    command = next(line.strip() for line in crashed.stdout.splitlines()
                   if line.strip().startswith("relaygraph resume "))
    # quoted for a shell where the URL needs it (a MySQL URL's "?charset=...")
    assert shlex.split(command) == ["relaygraph", "resume", "t-crash", "--db", url, "--approve"]

    listed = _cli("threads", "--db", url, "--json")
    (row,) = json.loads(listed.stdout)
    assert (row["status"], row["resumable"]) == ("interrupted", True)
    assert _crm_rows(url) == 0  # nothing was issued before the crash

    resumed = _cli(*shlex.split(command)[1:])
    assert resumed.returncode == 0, resumed.stderr
    assert "status: finished" in resumed.stdout
    (row,) = json.loads(_cli("threads", "--db", url, "--json").stdout)
    assert row["status"] == "finished"
    assert _crm_rows(url) == 1
    # resuming again changes nothing
    again = _cli(*shlex.split(command)[1:])
    assert again.returncode == 1 and "nothing to resume" in again.stderr
    assert _crm_rows(url) == 1


def test_crash_after_an_unknown_node_is_a_usage_error(tmp_path: Path) -> None:
    out = _cli("demo", "--db", f"sqlite:///{tmp_path / 'x.db'}", "--crash-after", "nope")
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "is not a node of the refund graph" in out.stderr


def test_demo_with_the_thread_of_a_crashed_run_finishes_it(tmp_path: Path, capsys: Any) -> None:
    from relaygraph.cli import main

    url = f"sqlite:///{tmp_path / 'crash.db'}"
    assert _cli("demo", "--db", url, "--thread", "t", "--crash-after", "check").returncode == 1
    assert main(["demo", "--db", url, "--thread", "t"]) == 0
    out = capsys.readouterr().out
    assert "found an interrupted run in the database (next: resolver); resuming it" in out
    assert "status: finished, approved" in out
    assert _crm_rows(url) == 1
