"""BudgetGuard: pass, warn, escalate and halt from the usage channel."""

from __future__ import annotations

from typing import Any

import pytest
from langgraph.graph import END

from relaygraph import ConfigurationError
from relaygraph.guards import BudgetGuard


def usage(**agents: tuple[int, int, float]) -> dict[str, Any]:
    return {
        "usage": {
            a: {"m": {"calls": 1, "input_tokens": i, "output_tokens": o, "cost": c}}
            for a, (i, o, c) in agents.items()
        }
    }


async def verdict(guard: BudgetGuard, state: Any, mode: str) -> dict[str, Any]:
    cfg = {"metadata": {"langgraph_node": "budget"}}
    cmd = guard.invoke(state, cfg) if mode == "sync" else await guard.ainvoke(state, cfg)
    [d] = cmd.update["guard_log"]
    assert d["goto"] == cmd.goto
    return d  # type: ignore[no-any-return]


async def test_routes(clock, mode):
    g = BudgetGuard(max_tokens=1000, max_cost=1.0, on_pass="next", on_escalate="review",
                    warn_at=0.8, clock=clock)
    d = await verdict(g, usage(a=(100, 100, 0.1)), mode)
    assert (d["route"], d["goto"], d["score"], d["threshold"]) == ("pass", "next", 0.2, 1.0)
    d = await verdict(g, usage(a=(400, 100, 0.1), b=(300, 50, 0.2)), mode)
    assert (d["route"], d["goto"]) == ("warn", "next")
    assert "warning: 85% of the budget" in d["reason"]
    d = await verdict(g, usage(a=(100, 100, 0.9), b=(0, 0, 0.2)), mode)
    assert (d["route"], d["goto"]) == ("escalate", "review")
    assert d["failed_checks"] == ["cost: 1.1 would exceed 1"]
    halting = BudgetGuard(max_tokens=1000, on_pass="next", clock=clock)
    d = await verdict(halting, usage(a=(900, 101, 0.0)), mode)
    assert (d["route"], d["goto"]) == ("halt", END)
    assert d["failed_checks"] == ["tokens: 1,001 would exceed 1,000"]


async def test_reserve_makes_it_would_exceed(clock, mode):
    g = BudgetGuard(max_tokens=1000, reserve_tokens=300, on_pass="next", clock=clock)
    assert (await verdict(g, usage(a=(600, 0, 0)), mode))["route"] == "warn"
    assert (await verdict(g, usage(a=(701, 0, 0)), mode))["route"] == "halt"


async def test_agent_filter_and_empty_usage(clock, mode):
    g = BudgetGuard(max_cost=1.0, agents=["writer"], on_pass="next", clock=clock)
    assert (await verdict(g, usage(writer=(0, 0, 0.1), other=(0, 0, 5.0)), mode))["route"] \
        == "pass"
    assert (await verdict(g, {}, mode))["route"] == "pass"
    d = await verdict(g, {"usage": {"writer": "garbage"}}, mode)
    assert d["route"] == "pass" and "usage['writer'] is not a table" in d["reason"]


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({}, "needs max_tokens, max_cost or both"),
        ({"max_tokens": 0}, "max_tokens must be > 0, got 0"),
        ({"max_tokens": 1.5}, "max_tokens must be a positive number or None, got 1.5"),
        ({"max_cost": -1.0}, "max_cost must be > 0, got -1.0"),
        ({"max_cost": 1.0, "warn_at": 1.2}, "warn_at must be in [0, 1], got 1.2"),
        ({"max_cost": 1.0, "reserve_cost": -1}, "reserve_cost must be a number >= 0"),
        ({"max_cost": 1.0, "agents": "writer"}, "agents must be a list of agent names"),
        ({"max_cost": 1.0, "on_escalate": END}, "on_escalate cannot be END"),
    ],
)
def test_bad_configuration(kw, message):
    with pytest.raises(ConfigurationError) as err:
        BudgetGuard(on_pass="next", **kw)
    assert message in str(err.value)
