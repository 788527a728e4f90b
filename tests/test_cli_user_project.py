"""The CLI as a user runs it: the installed ``relaygraph`` script, started in the directory
of the user's project (``myapp/graphs.py``), in a fresh process that has not imported the
project's classes yet."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(sys.executable).with_name("relaygraph")
SPEC = "support=myapp.graphs:builder"
MAKE_THREADS = """
from relaygraph.checkpointers import SQLAlchemySaver
from myapp.graphs import builder

with SQLAlchemySaver.from_conn_string("sqlite:///app.db") as saver:
    saver.setup()
    graph = builder.compile(checkpointer=saver)
    config = {"configurable": {"thread_id": "t-42"}, "metadata": {"graph_id": "support"}}
    graph.invoke({"messages": [("user", "my parcel is late")], "confidence_in": 0.5}, config)
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user's project: its package, and a thread of its graph waiting at a review."""
    root = tmp_path_factory.mktemp("project")
    (root / "myapp").mkdir()
    (root / "myapp" / "__init__.py").write_text("")
    shutil.copy(Path(__file__).with_name("cli_support_graph.py"), root / "myapp" / "graphs.py")
    subprocess.run([sys.executable, "-c", MAKE_THREADS], cwd=root, check=True, timeout=120)
    return root


def _cli(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert SCRIPT.exists(), f"the relaygraph script is not installed next to {sys.executable}"
    return subprocess.run([str(SCRIPT), *args], cwd=project, capture_output=True, text=True,
                          timeout=120)


def test_graph_modules_are_imported_from_the_current_directory(project: Path) -> None:
    done = _cli(project, "threads", "--db", "sqlite:///app.db", "--graph", SPEC, "--json")
    assert done.returncode == 0, done.stderr
    (row,) = json.loads(done.stdout)
    assert (row["thread_id"], row["graph_id"], row["status"]) == ("t-42", "support", "waiting")


@pytest.mark.parametrize("argv", [["threads"], ["timeline", "t-42"], ["costs"]])
def test_reading_a_thread_of_a_graph_that_is_not_loaded_says_to_pass_it(
        project: Path, argv: list[str]) -> None:
    done = _cli(project, *argv, "--db", "sqlite:///app.db")
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1, done.stderr  # one line, no log record before it
    assert "thread 't-42' holds a myapp.graphs.Reply" in done.stderr
    assert "pass its graph with --graph NAME=module:attr" in done.stderr
    done = _cli(project, "contracts", "check", "--db", "sqlite:///app.db")
    assert done.returncode == 1 and done.stderr == ""
    assert "t-42: fails: holds a myapp.graphs.Reply" in done.stdout
