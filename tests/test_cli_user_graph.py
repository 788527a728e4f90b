"""The CLI on a user's own graph (tests/cli_support_graph.py), not the built-in examples:
threads, timeline, reviews, review, resume, costs and db, with their bad input."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import cli_support_graph as support
from relaygraph.checkpointers import SQLAlchemySaver
from relaygraph.cli import main
from relaygraph.serve._loader import compile_on
from relaygraph.serve._threads import thread_config

SPEC = "support=cli_support_graph:builder"
INPUT = {"messages": [("user", "my parcel is late")]}


@pytest.fixture
def db(tmp_path: Path) -> Iterator[str]:
    url = f"sqlite:///{tmp_path / 'user.db'}"
    support.BROKEN["send"] = False
    yield url
    support.BROKEN["send"] = False


def _run(url: str, thread: str, *, graph_id: str | None = "support", conf: float = 0.9,
         **kw: Any) -> Any:
    with SQLAlchemySaver.from_conn_string(url) as saver:
        saver.setup()
        graph = compile_on(support.builder, saver)
        config = thread_config(thread, graph_id)
        graph.invoke({**INPUT, "confidence_in": conf}, config, **kw)
        return graph.get_state(config)


def _json(capsys: Any, argv: list[str]) -> Any:
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def _statuses(capsys: Any, url: str) -> dict[str, str]:
    rows = _json(capsys, ["threads", "--db", url, "--graph", SPEC])
    return {r["thread_id"]: r["status"] for r in rows}


def _four_threads(url: str) -> None:
    _run(url, "waits")                                        # paused at the review
    _run(url, "stopped", interrupt_after=["draft"])           # a static breakpoint
    _run(url, "fails")                                        # its send will raise


def test_threads_shows_each_status_of_a_user_graph(db: str, capsys: Any) -> None:
    _four_threads(db)
    # "fails" is paused at its review too: approve it so that send raises
    support.BROKEN["send"] = True
    assert main(["review", "fails", "approve", "--db", db, "--graph", SPEC]) == 1
    support.BROKEN["send"] = False
    capsys.readouterr()
    _run(db, "done", conf=0.95)
    assert main(["review", "done", "approve", "--db", db, "--graph", SPEC]) == 0
    capsys.readouterr()
    assert _statuses(capsys, db) == {"waits": "waiting", "stopped": "interrupted",
                                     "fails": "failed", "done": "finished"}
    rows = {r["thread_id"]: r for r in _json(capsys, ["threads", "--db", db, "--graph", SPEC])}
    assert rows["waits"]["waiting"] == "review at review (reply)"
    assert rows["stopped"]["next"] == ["check"] and rows["stopped"]["resumable"]
    assert "the mail server refused" in rows["fails"]["error"]
    assert main(["threads", "--db", db, "--graph", SPEC, "--status", "waiting"]) == 0
    out = capsys.readouterr().out
    assert "waits" in out and "review at review (reply)" in out and "stopped" not in out


def test_without_the_graph_the_status_is_unknown_and_says_why(db: str, capsys: Any) -> None:
    _run(db, "waits")
    rows = _json(capsys, ["threads", "--db", db])  # only the examples are loaded
    assert rows[0]["status"] == "unknown" and rows[0]["note"] == "graph 'support' not loaded"
    assert main(["timeline", "waits", "--db", db]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "belongs to graph 'support', which is not loaded" in err
    assert "--graph support=module:attr" in err


def test_timeline_of_a_user_thread_has_guard_review_and_cost_tables(db: str,
                                                                    capsys: Any) -> None:
    _run(db, "low", conf=0.5)  # retried once, then escalated to the review
    assert main(["timeline", "low", "--db", db, "--graph", SPEC]) == 0
    out = capsys.readouterr().out
    assert "guard decisions" in out and "cost per agent" in out
    guard_rows = [line for line in out.splitlines() if line.startswith("│ check ")]
    assert [r.split("│")[4].split()[0] for r in guard_rows] == ["retry", "escalate"]
    assert "status: waiting on review at review (reply)" in out
    assert "relaygraph review low approve" in out
    data = _json(capsys, ["timeline", "low", "--db", db, "--graph", SPEC])
    assert data["status"] == "waiting" and data["graph_id"] == "support"
    assert [g["route"] for g in data["guard_log"]] == ["retry", "escalate"]
    assert data["usage"]["draft"]["m-small"]["calls"] == 2


def test_reviews_lists_pending_reviews_and_review_validates_edits(db: str,
                                                                  capsys: Any) -> None:
    _run(db, "a")
    _run(db, "b", conf=0.5)
    items = _json(capsys, ["reviews", "--db", db, "--graph", SPEC])
    assert {(i["thread_id"], i["node"], i["subject"]) for i in items} == {
        ("a", "review", "reply"), ("b", "review", "reply")}
    why = {i["thread_id"]: i["why"] for i in items}
    assert why["a"] is None and "retries exhausted" in why["b"]

    # an edit that breaks the contract is refused and changes nothing
    assert main(["review", "a", "edit", "credit=1000", "--db", db, "--graph", SPEC]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "review refused" in err and "credit" in err
    assert main(["review", "a", "edit", "nosuch=1", "--db", db, "--graph", SPEC]) == 1
    assert "nosuch" in capsys.readouterr().err
    assert _statuses(capsys, db)["a"] == "waiting"

    assert main(["review", "a", "edit", "credit=25", "text=sorry, have 25",
                 "--db", db, "--graph", SPEC]) == 0
    assert "status: finished, approved with edits" in capsys.readouterr().out
    with SQLAlchemySaver.from_conn_string(db) as saver:
        values = compile_on(support.builder, saver).get_state(thread_config("a")).values
    assert values["sent"] == "sorry, have 25 (25.00)"
    assert values["reviews"][-1]["edits"] == {"credit": 25, "text": "sorry, have 25"}

    assert main(["review", "b", "reject", "--reason", "not our parcel", "--db", db,
                 "--graph", SPEC]) == 0
    assert "status: finished, rejected" in capsys.readouterr().out
    assert _json(capsys, ["reviews", "--db", db, "--graph", SPEC]) == []


@pytest.mark.parametrize(("argv", "message"), [
    (["review", "a", "edit"], "edit needs the fields to change"),
    (["review", "a", "approve", "x=1"], "approve takes no field=value edits"),
    (["review", "a", "reject"], "reject needs --reason"),
    (["review", "a", "edit", "novalue"], "edits are field=value"),
    (["review", "a", "maybe"], "invalid choice: 'maybe'"),
])
def test_review_usage_errors_exit_2(db: str, capsys: Any, argv: list[str],
                                    message: str) -> None:
    _run(db, "a")
    assert main([*argv, "--db", db, "--graph", SPEC]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err


def test_resume_continues_a_stopped_thread_and_a_failed_one(db: str, capsys: Any) -> None:
    _run(db, "stopped", interrupt_after=["draft"])
    assert main(["resume", "stopped", "--db", db, "--graph", SPEC]) == 0
    out = capsys.readouterr().out
    assert "was interrupted before check" in out and "status: waiting on review" in out
    # waiting on a human: resume refuses, unless asked to approve
    assert main(["resume", "stopped", "--db", db, "--graph", SPEC]) == 1
    assert "waiting for a review" in capsys.readouterr().err
    support.BROKEN["send"] = True
    assert main(["resume", "stopped", "--approve", "--db", db, "--graph", SPEC]) == 1
    assert "status: failed: send: RuntimeError" in capsys.readouterr().out
    support.BROKEN["send"] = False
    data = _json(capsys, ["resume", "stopped", "--db", db, "--graph", SPEC])
    assert (data["was"], data["status"]) == ("failed", "finished")
    assert main(["resume", "stopped", "--db", db, "--graph", SPEC]) == 1
    assert "has finished; nothing to resume" in capsys.readouterr().err


def test_a_factory_spec_and_a_config_file_work_too(db: str, tmp_path: Path,
                                                   capsys: Any) -> None:
    _run(db, "cfg", graph_id=None)  # no graph_id recorded: the only loaded graph is used
    rows = _json(capsys, ["threads", "--db", db, "--graph",
                          "support=cli_support_graph:make_graph"])
    assert rows[0]["status"] == "waiting"
    config = tmp_path / "relaygraph.toml"
    config.write_text(f'[database]\nurl = "{db}"\n[graphs]\nsupport = "cli_support_graph:builder"\n'
                      '[auth]\nanonymous = true\n')
    rows = _json(capsys, ["threads", "--config", str(config)])
    assert rows[0]["status"] == "waiting"
    # two graphs and no graph_id on the thread: which one is ambiguous
    assert main(["timeline", "cfg", "--config", str(config), "--graph",
                 "other=cli_support_graph:builder"]) == 1
    assert "has no graph_id in its checkpoint metadata" in capsys.readouterr().err


def test_costs_per_run_agent_and_model(db: str, capsys: Any) -> None:
    _run(db, "one", conf=0.9)   # one draft call
    _run(db, "two", conf=0.5)   # two draft calls (a retry)
    data = _json(capsys, ["costs", "--db", db, "--graph", SPEC, "--per-day", "1000"])
    per_run = {r: None for r in ("one", "two")}
    assert data["runs"] == 2 and len(per_run) == 2
    (graph,) = data["graphs"]
    one = (110 * 1.0 + 20 * 2.0) / 1e6                   # 110 in, 20 out at $1/$2 per M
    two = one + (120 * 1.0 + 20 * 2.0) / 1e6             # the retry read one more message
    assert graph["graph"] == "support" and graph["runs"] == 2
    assert graph["mean"] == pytest.approx((one + two) / 2)
    assert (graph["p50"], graph["p95"], graph["max"]) == pytest.approx((one, two, two))
    (agent,) = data["agents"]
    assert (agent["agent"], agent["model"], agent["calls"]) == ("draft", "m-small", 3)
    assert agent["cost_share"] == 1.0
    assert data["projection"]["support"]["per_day_mean"] == pytest.approx(
        (one + two) / 2 * 1000)
    assert main(["costs", "--db", db, "--per-day", "1000"]) == 0
    out = capsys.readouterr().out
    # money as money: six decimals under a cent, cents above, never 4.08e-05
    assert "$0.000150" in out and "$0.23" in out and not re.search(r"\de-\d", out)
    assert main(["costs", "--db", db, "--since", "2999-01-01"]) == 0
    assert "no runs match" in capsys.readouterr().out
    assert main(["costs", "--db", db, "--graph", "nope", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["runs"] == 0


@pytest.mark.parametrize(("argv", "status", "message"), [
    (["threads", "--limit", "-1", "--db", "sqlite:///x.db"], 2, "expected a whole number >= 0"),
    (["costs", "--per-day", "-5", "--db", "sqlite:///x.db"], 2, "expected a whole number >= 0"),
    (["costs", "--since", "yesterday", "--db", "sqlite:///x.db"], 2, "expected a date"),
    (["threads"], 2, "no database: pass --db URL or --config FILE"),
    (["threads", "--db", "{db}", "--graph", "support"], 2, "--graph takes NAME=module:attr"),
    (["threads", "--db", "{db}", "--graph", "s=no_such_module:g"], 1, "cannot import module"),
    (["threads", "--db", "{db}", "--graph", "s=cli_support_graph:nope"], 1,
     "has no attribute 'nope'"),
    (["threads", "--db", "{db}", "--graph", "s=cli_support_graph:Reply"], 1,
     "must be a compiled graph, a StateGraph or a factory"),
    (["threads", "--config", "/nonexistent.toml"], 1, "cannot read the config file"),
    (["resume", "ghost", "--db", "{db}"], 1, "thread 'ghost' not found"),
    (["db", "prune", "--thread", "ghost", "--db", "{db}"], 2, "no such thread(s): ghost"),
    (["db"], 2, "the following arguments are required"),
    (["threads", "--db", "{db}", "--limt", "3"], 2,
     "unrecognized arguments: --limt 3 (see: relaygraph threads --help)"),
    (["db", "stats", "--db", "{db}", "--graph", "s=m:g"], 2,
     "unrecognized arguments: --graph s=m:g (see: relaygraph db stats --help)"),
])
def test_bad_input_is_one_line_on_stderr(db: str, capsys: Any, argv: list[str], status: int,
                                         message: str) -> None:
    _run(db, "t")
    capsys.readouterr()
    assert main([a.replace("{db}", db) for a in argv]) == status
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1, captured.err
    assert message in captured.err and "Traceback" not in captured.err


def test_db_upgrade_stats_and_prune(db: str, capsys: Any) -> None:
    _run(db, "done", conf=0.95)
    assert main(["review", "done", "approve", "--db", db, "--graph", SPEC]) == 0
    _run(db, "waits")
    capsys.readouterr()
    upgraded = _json(capsys, ["db", "upgrade", "--db", db])
    assert {"relaygraph_checkpoints", "relaygraph_leases", "relaygraph_effects"} <= set(
        upgraded["tables"])
    stats = _json(capsys, ["db", "stats", "--db", db])
    assert stats["threads"] == 2 and stats["checkpoints"] > 4
    pruned = _json(capsys, ["db", "prune", "--db", db, "--graph", SPEC])
    # only the finished thread is pruned; the waiting one keeps its history
    assert (pruned["threads"], pruned["skipped_unfinished"]) == (1, 1)
    assert pruned["checkpoints_after"] < pruned["checkpoints_before"]
    assert _statuses(capsys, db) == {"done": "finished", "waits": "waiting"}
    assert main(["review", "waits", "approve", "--db", db, "--graph", SPEC]) == 0


def test_a_thread_held_by_a_live_lease_is_running_and_left_alone(db: str, capsys: Any) -> None:
    from relaygraph.durable import LeaseStore

    _run(db, "busy")
    with SQLAlchemySaver.from_conn_string(db) as saver:
        store = LeaseStore.from_saver(saver)
        store.setup()
        lease = store.acquire("busy", holder="worker-7")
        try:
            assert _statuses(capsys, db) == {"busy": "running"}
            assert main(["review", "busy", "approve", "--db", db, "--graph", SPEC]) == 1
            assert "is running in another process" in capsys.readouterr().err
            assert main(["resume", "busy", "--db", db, "--graph", SPEC]) == 1
            assert "is running in another process" in capsys.readouterr().err
        finally:
            store.release(lease)
    assert _statuses(capsys, db) == {"busy": "waiting"}


def _printed_command(text: str, prefix: str) -> list[str]:
    line = next(line for line in text.splitlines() if line.startswith(prefix))
    argv = shlex.split(line.removeprefix(prefix))
    assert argv[0] == "relaygraph"
    return argv[1:]


def test_the_commands_the_cli_prints_carry_the_graph_they_need(db: str, capsys: Any) -> None:
    _run(db, "waits")
    _run(db, "stopped", interrupt_after=["draft"])
    assert main(["reviews", "--db", db, "--graph", SPEC]) == 0
    hint = _printed_command(capsys.readouterr().out, "decide with: ")
    assert hint[hint.index("--graph") + 1] == SPEC
    assert main(["timeline", "waits", "--db", db, "--graph", SPEC]) == 0
    assert main(_printed_command(capsys.readouterr().out, "decide with: ")) == 0
    assert "status: finished, approved" in capsys.readouterr().out
    assert main(["timeline", "stopped", "--db", db, "--graph", SPEC]) == 0
    assert main(_printed_command(capsys.readouterr().out, "continue with: ")) == 0
    assert "status: waiting on review at review (reply)" in capsys.readouterr().out
    assert main(["timeline", "nosuch", "--db", db, "--graph", SPEC]) == 1
    err = capsys.readouterr().err
    assert main(shlex.split(err.partition("list threads with: relaygraph ")[2])) == 0


def test_a_database_without_tables_named_by_a_config_file_says_how_to_create_them(
        tmp_path: Path, capsys: Any) -> None:
    empty = tmp_path / "empty.db"
    empty.touch()
    config = tmp_path / "relaygraph.toml"
    config.write_text(f'[database]\nurl = "sqlite:///{empty}"\n[auth]\nanonymous = true\n')
    assert main(["threads", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "has no relaygraph tables" in err
    assert main(shlex.split(err.partition("create them with: relaygraph ")[2])) == 0
    assert main(["threads", "--config", str(config)]) == 0


MALFORMED_SPECS = ["support=cli_support_graph", "=cli_support_graph:builder", "support=:builder",
                   "support=cli_support_graph:", "bad name=cli_support_graph:x"]


@pytest.mark.parametrize(("command", "spec"), [
    *[(command, spec) for command in ("threads", "costs", "serve") for spec in MALFORMED_SPECS],
    ("threads", "support"), ("serve", "support"),  # costs --graph NAME filters by graph id
])
def test_a_malformed_graph_spec_is_a_usage_error(db: str, capsys: Any, command: str,
                                                 spec: str) -> None:
    assert main([command, "--db", db, "--graph", spec]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # serve says nothing about serving
    assert captured.err.count("\n") == 1 and repr(spec) in captured.err
