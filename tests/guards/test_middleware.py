"""Guards as LangChain 1.x agent middleware on a ``create_agent`` agent: verdicts, retry
feedback the model sees, escalation as relaygraph's review interrupt, breaker and budget,
and LangChain's own HumanInTheLoopMiddleware on the same agent."""

from __future__ import annotations

import json
from typing import Any

import pytest

pytest.importorskip("langchain.agents", reason="needs the agents extra (langchain)")

from langchain.agents import create_agent  # noqa: E402
from langchain.agents.middleware import HumanInTheLoopMiddleware  # noqa: E402
from langchain_core.messages import HumanMessage  # noqa: E402
from langchain_core.tools import tool  # noqa: E402
from langgraph.checkpoint.memory import InMemorySaver  # noqa: E402
from langgraph.types import Command  # noqa: E402

from relaygraph import ConfigurationError  # noqa: E402
from relaygraph.guards import (  # noqa: E402
    BudgetMiddleware,
    CircuitBreaker,
    GuardMiddleware,
    RelayAgentState,
    SelfReportedConfidence,
)
from relaygraph.nodes import submit_review  # noqa: E402
from relaygraph.observe import Pricing  # noqa: E402
from relaygraph.testing import ScriptedChatModel  # noqa: E402


def _answer(text: str, confidence: float) -> str:
    return json.dumps({"answer": text, "confidence": confidence})


def _agent(responses: list[Any], *middleware: Any, tools: list[Any] | None = None) -> Any:
    model = ScriptedChatModel(responses, model_name="m")
    agent = create_agent(model, tools or [], middleware=list(middleware),
                         checkpointer=InMemorySaver())
    return agent, model


def _guard(**kw: Any) -> GuardMiddleware:
    return GuardMiddleware(SelfReportedConfidence(path="messages"), 0.8, **kw)


CONFIG = {"configurable": {"thread_id": "t"}}
ASK = {"messages": [HumanMessage("refund order A-1?")]}


def test_a_confident_answer_passes() -> None:
    agent, model = _agent([_answer("refund 10", 0.9)], _guard())
    out = agent.invoke(ASK, CONFIG)
    assert [g["route"] for g in out["guard_log"]] == ["pass"]
    assert len(model.calls) == 1


def test_a_retry_shows_the_model_why_then_passes() -> None:
    agent, model = _agent([_answer("maybe", 0.4), _answer("refund 10", 0.95)], _guard())
    out = agent.invoke(ASK, CONFIG)
    assert [g["route"] for g in out["guard_log"]] == ["retry", "pass"]
    retried_with = model.calls[1].messages[-1].content
    assert "A check rejected your answer: score 0.4 < threshold 0.8" in retried_with
    assert json.loads(out["messages"][-1].content)["answer"] == "refund 10"


def test_exhausted_retries_escalate_to_a_relaygraph_review() -> None:
    agent, model = _agent([_answer("maybe", 0.4), _answer("perhaps", 0.5)],
                          _guard(max_retries=1))
    agent.invoke(ASK, CONFIG)
    snap = agent.get_state(CONFIG)
    (intr,) = snap.interrupts
    assert intr.value["kind"] == "human_review" and intr.value["guard_route"] == "escalate"
    assert json.loads(intr.value["value"]["content"])["answer"] == "perhaps"
    # the same review API as for graph nodes (the CLI's `review` and the inbox use it)
    submit_review(agent, CONFIG, {"action": "edit", "edits": {"content": "refund 10"},
                                  "reviewer": "ana"})
    final = agent.get_state(CONFIG)
    assert final.next == () and final.values["messages"][-1].content == "refund 10"
    assert [g["route"] for g in final.values["guard_log"]] == ["retry", "escalate"]
    assert final.values["reviews"][-1]["decision"] == "edit"
    assert len(model.calls) == 2  # resuming the review did not call the model again


def test_halt_ends_the_run_with_the_reason() -> None:
    agent, _ = _agent([_answer("no idea", 0.1)], _guard(halt_below=0.2))
    out = agent.invoke(ASK, CONFIG)
    assert out["guard_log"][-1]["route"] == "halt"
    assert "score below halt_below" in out["messages"][-1].content


def test_the_breaker_counts_verdicts_and_an_open_breaker_skips_the_model() -> None:
    breaker = CircuitBreaker("agent", failure_rate=0.5, window=4, min_calls=2)
    agent, model = _agent([_answer("bad", 0.1)] * 2, _guard(breaker=breaker, max_retries=0,
                                                         on_escalate="halt"))
    for i in range(2):
        agent.invoke(ASK, {"configurable": {"thread_id": f"fail-{i}"}})
    assert breaker.state() == "open" and len(model.calls) == 2
    agent2, model2 = _agent([_answer("fine", 0.9)], _guard(breaker=breaker))
    config = {"configurable": {"thread_id": "blocked"}}
    agent2.invoke(ASK, config)
    assert model2.calls == []  # skipped
    snap = agent2.get_state(config)
    assert snap.interrupts[0].value["guard_route"] == "block"
    assert snap.interrupts[0].value["actions"] == ["edit", "reject"]
    submit_review(agent2, config, {"action": "edit", "edits": {"content": "written by ana"}})
    assert agent2.get_state(config).values["messages"][-1].content == "written by ana"


def test_budget_records_usage_and_stops_over_the_limit() -> None:
    pricing = Pricing({"m": (1.0, 1.0)})
    agent, model = _agent(["first", "second"],
                          BudgetMiddleware(max_tokens=1, pricing=pricing, agent="helper"))
    out = agent.invoke(ASK, CONFIG)
    used = out["usage"]["helper"]["m"]
    assert used["calls"] == 1 and used["cost"] > 0
    out = agent.invoke({"messages": [HumanMessage("and again?")]}, CONFIG)
    assert out["guard_log"][-1]["route"] == "halt" and len(model.calls) == 1
    assert "over the budget" in out["messages"][-1].content


def test_budget_review_approval_allows_one_more_budget() -> None:
    agent, model = _agent(["first", "second"],
                          BudgetMiddleware(max_tokens=1, on_exceed="review",
                                           pricing=Pricing({"m": (1.0, 1.0)})))
    agent.invoke(ASK, CONFIG)
    agent.invoke({"messages": [HumanMessage("more")]}, CONFIG)
    assert agent.get_state(CONFIG).interrupts[0].value["subject"] == "usage"
    submit_review(agent, CONFIG, {"action": "approve", "reviewer": "ana"})
    assert len(model.calls) == 2 and agent.get_state(CONFIG).values["messages"][-1].content \
        == "second"


def test_human_in_the_loop_middleware_and_relaygraph_review_share_one_agent() -> None:
    @tool
    def refund(order_id: str) -> str:
        """Refund an order."""
        return f"refunded {order_id}"

    agent, model = _agent(
        [{"name": "refund", "args": {"order_id": "A-1"}}, _answer("refunded A-1", 0.3)],
        HumanInTheLoopMiddleware(interrupt_on={"refund": True}), _guard(max_retries=0),
        tools=[refund])
    agent.invoke(ASK, CONFIG)
    (hitl,) = agent.get_state(CONFIG).interrupts
    assert hitl.value.get("kind") != "human_review"  # LangChain's own request
    agent.invoke(Command(resume={"decisions": [{"type": "approve"}]}), CONFIG)
    (review,) = agent.get_state(CONFIG).interrupts
    assert review.value["kind"] == "human_review"
    submit_review(agent, CONFIG, {"action": "approve", "reviewer": "ana"})
    final = agent.get_state(CONFIG).values
    assert final["messages"][-1].content == _answer("refunded A-1", 0.3)
    assert any(m.type == "tool" and m.content == "refunded A-1" for m in final["messages"])


def test_state_schema_and_configuration_errors() -> None:
    assert {"guard_log", "reviews", "usage", "messages"} <= set(RelayAgentState.__annotations__)
    with pytest.raises(ConfigurationError, match="on_escalate must be 'review' or 'halt'"):
        _guard(on_escalate="email")
    with pytest.raises(ConfigurationError, match="needs max_tokens, max_cost or both"):
        BudgetMiddleware()
    with pytest.raises(ConfigurationError, match="threshold"):
        GuardMiddleware("messages", 1.5)


async def test_the_async_path_records_usage_across_a_retry() -> None:
    agent, model = _agent([_answer("maybe", 0.4), _answer("refund 10", 0.95)],
                          BudgetMiddleware(max_cost=1.0, pricing=Pricing({"m": (1.0, 1.0)})),
                          _guard())
    out = await agent.ainvoke(ASK, CONFIG)
    assert [g["route"] for g in out["guard_log"]] == ["retry", "pass"]
    assert out["usage"]["agent"]["m"]["calls"] == 2 == len(model.calls)
