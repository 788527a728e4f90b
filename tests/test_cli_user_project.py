"""The CLI as a user runs it: the installed ``relaygraph`` script, started in the directory
of the user's project (``myapp/graphs.py``), in a fresh process that has not imported the
project's classes yet."""

from __future__ import annotations

import json
import shlex
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


def _readme_commands() -> list[list[str]]:
    """The commands of the README's 'The command line, on your graphs' block."""
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    block = readme.split("**The command line, on your graphs.**")[1].split("```bash\n")[1]
    commands = []
    for line in block.split("```")[0].splitlines():
        argv = shlex.split(line, comments=True)
        if not argv or argv[1] == "demo":
            continue
        if argv[1] == "resume":  # t-42 is decided by the line before: resume a stopped one
            argv[2] = "t-43"
        if argv[1] == "db" and "|" in argv[2]:
            commands += [[*argv[:2], sub, *argv[3:]] for sub in argv[2].split("|")]
        else:
            commands.append(argv)
    return commands


def test_the_readme_commands_work_on_a_users_graph(project: Path, tmp_path: Path) -> None:
    project = Path(shutil.copytree(project, tmp_path / "project"))
    stop = MAKE_THREADS.replace("t-42", "t-43").replace(
        "config)", "config, interrupt_after=['draft'])")
    subprocess.run([sys.executable, "-c", stop], cwd=project, check=True, timeout=120)
    commands = _readme_commands()
    assert [c[1] for c in commands] == ["threads", "timeline", "reviews", "review", "resume",
                                        "costs", "db", "db", "db"]
    for argv in commands:
        done = _cli(project, *argv[1:])
        assert (done.returncode, done.stderr) == (0, ""), argv
