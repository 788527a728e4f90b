"""The CLI on a ``create_agent`` graph with relaygraph's middleware (threads, reviews,
review, timeline, costs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("langchain.agents", reason="needs the agents extra (langchain)")

import cli_support_graph as support  # noqa: E402
from relaygraph.checkpointers import SQLAlchemySaver  # noqa: E402
from relaygraph.cli import main  # noqa: E402
from relaygraph.serve._loader import compile_on  # noqa: E402
from relaygraph.serve._threads import thread_config  # noqa: E402

SPEC = "agent=cli_support_graph:make_agent"


def _json(capsys: Any, argv: list[str]) -> Any:
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_an_agent_with_relaygraph_middleware_through_the_cli(tmp_path: Path,
                                                             capsys: Any) -> None:
    db = f"sqlite:///{tmp_path / 'agent.db'}"
    with SQLAlchemySaver.from_conn_string(db) as saver:
        saver.setup()
        agent = compile_on(support.make_agent, saver)
        agent.invoke({"messages": [("user", "my parcel is late")]}, thread_config("a1", "agent"))

    (row,) = _json(capsys, ["threads", "--db", db, "--graph", SPEC])
    assert (row["thread_id"], row["graph_id"], row["status"]) == ("a1", "agent", "waiting")
    (item,) = _json(capsys, ["reviews", "--db", db, "--graph", SPEC])
    assert item["subject"] == "messages" and "retries exhausted" in item["why"]

    assert main(["review", "a1", "edit", "content=credit 20, sorry", "--db", db,
                 "--graph", SPEC]) == 0
    assert "status: finished, approved with edits" in capsys.readouterr().out
    timeline = _json(capsys, ["timeline", "a1", "--db", db, "--graph", SPEC])
    assert [g["route"] for g in timeline["guard_log"]] == ["retry", "escalate"]
    assert timeline["reviews"][-1]["edits"] == {"content": "credit 20, sorry"}

    costs = _json(capsys, ["costs", "--db", db, "--graph", "agent"])
    (agent_row,) = costs["agents"]
    assert (agent_row["agent"], agent_row["model"], agent_row["calls"]) == ("helper",
                                                                            "m-small", 2)
    assert costs["graphs"][0]["runs"] == 1 and costs["graphs"][0]["mean"] > 0
