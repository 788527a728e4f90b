"""The ``relaygraph`` command line: demo, threads, timeline, setup and its error handling."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from relaygraph.checkpointers._schema import LATEST
from relaygraph.cli import build_parser, main


def _db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'demo.db'}"


def test_parser_has_every_command() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert set(sub.choices) == {  # type: ignore[arg-type]
        "demo", "threads", "timeline", "reviews", "review", "resume", "costs", "db", "serve",
        "setup", "contracts"}
    args = parser.parse_args(["serve", "--db", "sqlite:///x.db"])
    assert (args.host, args.port) == ("127.0.0.1", 8000)
    assert parser.parse_args(["demo"]).db == "sqlite:///relaygraph-demo.db"


def test_version(capsys) -> None:
    from relaygraph import __version__

    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"relaygraph {__version__}\n"


def test_demo_runs_to_review_resumes_and_summarises(tmp_path: Path, capsys) -> None:
    assert main(["demo", "--db", _db(tmp_path), "--thread", "t-demo"]) == 0
    out = capsys.readouterr().out
    for section in ("crash-resume", "steps", "handoffs", "guard decisions", "reviews",
                    "cost per agent"):
        assert section in out, section
    assert "restored at step 4: next review, 1 open review" in out
    handoff_row = next(line for line in out.splitlines() if "RefundCase" in line and "→" in line
                       and "ok" in line)
    assert "amount ok" in handoff_row and "order_id ok" in handoff_row
    assert handoff_row.split("│")[5].strip() == "1"  # the misquoted amount was repaired
    assert "status: finished, approved" in out
    assert "'amount': '249.99'" in out
    # every agent appears in the cost table with a non-zero total
    cost_rows = [line for line in out.splitlines() if "scripted-" in line]
    assert any("intake" in r for r in cost_rows) and any("resolver" in r for r in cost_rows)
    total_line = next(line for line in out.splitlines() if line.startswith("│ total"))
    assert float(total_line.split("│")[-2]) > 0


def test_demo_low_confidence_retries_escalates_and_reviews_twice(tmp_path: Path,
                                                                 capsys) -> None:
    assert main(["demo", "--db", _db(tmp_path), "--confidence", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "review at check_review: approve" in out
    assert "review at review: approve" in out
    guard_rows = [line for line in out.splitlines() if line.startswith("│ check ")]
    assert [r.split("│")[4].strip().split()[0] for r in guard_rows] == ["retry", "escalate"]
    assert "status: finished, approved" in out


def test_demo_rejects_a_confidence_outside_0_1(capsys) -> None:
    assert main(["demo", "--confidence", "1.5"]) == 2
    assert "expected a number in [0, 1], got 1.5" in capsys.readouterr().err


def test_demo_interactive_reject(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("reject\nwrong customer\n"))
    assert main(["demo", "--db", _db(tmp_path), "--interactive", "--thread", "t1"]) == 0
    out = capsys.readouterr().out
    assert "status: finished, rejected" in out
    assert "reject" in out
    assert "result:" not in out  # the rejected proposal is not shown as the run's result
    assert main(["timeline", "t1", "--db", _db(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "status: finished, rejected" in out and "result:" not in out


def test_demo_interactive_edits_that_are_not_json_are_asked_again(
        tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO('edit\namount=200\n{"amount": "200.00"}\n\n'))
    assert main(["demo", "--db", _db(tmp_path), "--interactive"]) == 0
    out = capsys.readouterr().out
    assert "not a JSON object: 'amount=200'" in out and "_unparsed" not in out
    assert "status: finished, approved with edits" in out and "'amount': '200.00'" in out


def test_demo_interactive_with_the_input_ended_leaves_the_review_open(
        tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("edit\n"))  # Ctrl-D at the edits prompt
    assert main(["demo", "--db", _db(tmp_path), "--interactive", "--thread", "t1"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the input ended before a review decision" in err
    assert f"relaygraph review t1 approve --db {_db(tmp_path)}" in err
    assert main(["review", "t1", "approve", "--db", _db(tmp_path)]) == 0


def test_demo_pause_then_resume_in_a_new_process_state(tmp_path: Path, capsys) -> None:
    db = _db(tmp_path)
    assert main(["demo", "--db", db, "--thread", "t-pause", "--pause"]) == 0
    out = capsys.readouterr().out
    assert "relaygraph review t-pause approve" in out
    assert main(["threads", "--db", db]) == 0
    out = capsys.readouterr().out
    assert "t-pause" in out and "waiting" in out
    assert main(["demo", "--db", db, "--thread", "t-pause"]) == 0
    out = capsys.readouterr().out
    assert "paused at a review in the database" in out
    assert "status: finished, approved" in out
    assert main(["threads", "--db", db]) == 0
    out = capsys.readouterr().out
    assert "t-pause" in out and "finished" in out
    assert main(["timeline", "t-pause", "--db", db]) == 0
    out = capsys.readouterr().out
    assert "resolver" in out and "status: finished, approved" in out
    assert main(["demo", "--db", db, "--thread", "t-pause"]) == 0  # finished: summary only
    assert "this thread has finished" in capsys.readouterr().out


def test_setup_creates_the_database(tmp_path: Path, capsys) -> None:
    assert main(["setup", "--db", _db(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "ready" in out
    assert (tmp_path / "demo.db").exists()
    import sqlalchemy as sa

    engine = sa.create_engine(_db(tmp_path))
    tables = set(sa.inspect(engine).get_table_names())
    engine.dispose()
    assert any("breaker" in t for t in tables) and any("autonomy" in t for t in tables)
    assert any("checkpoint" in t for t in tables)
    assert main(["setup", "--db", _db(tmp_path)]) == 0  # idempotent


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["threads", "--db", "not a url"], "not a database URL"),
        (["setup", "--db", "nosuchdb://x/y"], "unknown database scheme"),
        (["threads", "--db", "postgresql+psycopg://postgres@127.0.0.1:1/x"], "cannot connect"),
        (["threads", "--db", "sqlite:///{tmp}/missing.db"], "does not exist"),
        (["timeline", "nope", "--db", "sqlite:///{tmp}/missing.db"], "does not exist"),
    ],
)
def test_bad_databases_print_one_line_and_exit_1(tmp_path: Path, capsys, argv, expected) -> None:
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert expected in err
    assert err.count("\n") == 1 and err.startswith("relaygraph: error: ")
    assert "Traceback" not in err
    assert not (tmp_path / "missing.db").exists()  # read commands never create a database


def test_database_without_tables_says_how_to_create_them(tmp_path: Path, capsys) -> None:
    import sqlite3

    conn = sqlite3.connect(tmp_path / "other.db")
    conn.execute("CREATE TABLE t (a INTEGER)")
    conn.close()
    db = f"sqlite:///{tmp_path / 'other.db'}"
    assert main(["threads", "--db", db]) == 1
    err = capsys.readouterr().err
    assert err == (f"relaygraph: error: {db} has no relaygraph tables; create them with: "
                   f"relaygraph db upgrade --db {db}\n")


def test_tables_of_an_older_schema_say_how_to_upgrade(tmp_path: Path, capsys) -> None:
    import sqlite3

    db = _db(tmp_path)
    assert main(["setup", "--db", db]) == 0
    conn = sqlite3.connect(tmp_path / "demo.db")
    conn.execute("DELETE FROM relaygraph_migrations WHERE component = 'checkpoints' "
                 "AND version > 2")
    conn.commit()
    conn.close()
    capsys.readouterr()
    assert main(["threads", "--db", db]) == 1
    err = capsys.readouterr().err
    assert err == (f"relaygraph: error: {db} holds relaygraph tables of schema version 2, "
                   f"this relaygraph uses {LATEST}; upgrade them with: "
                   f"relaygraph db upgrade --db {db}\n")
    assert main(["setup", "--db", db]) == 0
    assert main(["threads", "--db", db]) == 0


def test_timeline_of_an_unknown_thread(tmp_path: Path, capsys) -> None:
    db = _db(tmp_path)
    assert main(["setup", "--db", db]) == 0
    capsys.readouterr()
    assert main(["timeline", "no-such-thread", "--db", db]) == 1
    err = capsys.readouterr().err
    assert "not found" in err or "does not know" in err


def test_module_entry_point_has_no_traceback(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "relaygraph", "threads", "--db", "bogus://"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.startswith("relaygraph: error: ")
    assert "Traceback" not in proc.stderr


def test_serve_hands_graphs_config_and_database_to_the_server(tmp_path: Path, monkeypatch,
                                                              capsys) -> None:
    seen: dict = {}

    def fake_run(specs, config_path, *, announce, **kw) -> None:
        seen.update(specs=specs, config=config_path, **kw)
        announce()  # once the graphs and keys are checked

    monkeypatch.setattr("relaygraph.serve._server.run_server", fake_run)
    assert main(["serve", "mine=pkg.mod:graph", "--graph", "other=pkg.mod:other",
                 "--db", _db(tmp_path), "--port", "8123", "--workers", "2"]) == 0
    assert seen["specs"] == ["mine=pkg.mod:graph", "other=pkg.mod:other"]
    assert (seen["host"], seen["port"], seen["workers"]) == ("127.0.0.1", 8123, 2)
    assert seen["database_url"] == _db(tmp_path) and seen["config"] is None
    assert "review inbox: /inbox" in capsys.readouterr().out
    assert main(["serve", "not-a-spec"]) == 2
    assert main(["serve", "--workers", "0"]) == 2
    assert "--workers must be >= 1" in capsys.readouterr().err


def test_serve_without_api_keys_fails_before_it_says_it_serves(monkeypatch, capsys) -> None:
    monkeypatch.delenv("RELAYGRAPH_API_KEYS", raising=False)
    monkeypatch.delenv("RELAYGRAPH_ALLOW_ANONYMOUS", raising=False)
    assert main(["serve", "--port", "8124"]) == 1
    out = capsys.readouterr()
    assert "serving on" not in out.out
    assert out.err.startswith("relaygraph: error: ") and "RELAYGRAPH_API_KEYS" in out.err


def test_demo_pause_resume_and_threads_on_every_database(backend, capsys) -> None:
    assert main(["demo", "--db", backend.url, "--thread", "t-db", "--pause"]) == 0
    capsys.readouterr()
    assert main(["demo", "--db", backend.url, "--thread", "t-db"]) == 0
    out = capsys.readouterr().out
    assert "paused at a review in the database" in out
    assert "status: finished, approved" in out
    assert main(["threads", "--db", backend.url]) == 0
    out = capsys.readouterr().out
    assert "t-db" in out and "finished" in out
