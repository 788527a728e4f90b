"""track_agent(): usage, cost and run records in the agent's own update."""

from __future__ import annotations

import operator
from typing import Annotated, Any

import pytest
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from langchain_core.runnables import RunnableLambda
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.types import Command, interrupt

from relaygraph import ConfigurationError
from relaygraph.graphs import RelayState
from relaygraph.nodes._track import track_agent
from relaygraph.observe import Pricing
from relaygraph.testing import ScriptedChatModel

PRICING = Pricing({"model-a": (1.0, 2.0), "model-b": (10.0, 20.0)}, as_of="2026-01-01",
                  include_defaults=False)


def usage(i: int, o: int) -> dict[str, int]:
    return {"input_tokens": i, "output_tokens": o, "total_tokens": i + o}


class Timer:
    """Each call advances 0.25 s: a node call measures 250 ms."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        self.t += 0.25
        return self.t


def clock() -> float:
    return 1_800_000_000.0


class S(RelayState, total=False):
    messages: Annotated[list[AnyMessage], add_messages]
    topic: str
    notes: Annotated[list[str], operator.add]
    empty: str | None


def _graph(node: Any, name: str = "writer"):
    b = StateGraph(S)
    b.add_node(name, node)
    b.add_edge(START, name)
    return b.compile(checkpointer=InMemorySaver())


def test_records_usage_cost_and_the_run() -> None:
    model = ScriptedChatModel([
        AIMessage("", tool_calls=[{"name": "lookup", "args": {"q": "x"}, "id": "c1"}],
                  usage_metadata=usage(1000, 200)),
    ], model_name="model-a")

    def writer(state: S) -> dict:
        reply = model.invoke(state["messages"])
        return {"messages": [reply], "notes": ["drafted"]}

    graph = _graph(track_agent(writer, pricing=PRICING, timer=Timer(), clock=clock))
    out = graph.invoke({"messages": [HumanMessage("hi")], "topic": "refunds", "empty": None},
                       {"configurable": {"thread_id": "1"}})
    assert out["usage"] == {"writer": {"model-a": {
        "calls": 1, "input_tokens": 1000, "output_tokens": 200, "cost": 0.0014}}}
    [run] = out["agent_runs"]
    assert run == {
        "agent": "writer", "node": "writer", "input_keys": ["messages", "topic"],
        "output_keys": ["messages", "notes"], "tool_calls": ["lookup"], "models": ["model-a"],
        "calls": 1, "input_tokens": 1000, "output_tokens": 200, "cost": 0.0014,
        "latency_ms": 250.0, "at": "2027-01-15T08:00:00+00:00", "pricing_as_of": "2026-01-01",
    }


async def test_async_agent_with_two_models_and_command() -> None:
    fast = ScriptedChatModel([AIMessage("plan", id="f0", usage_metadata=usage(100, 10))],
                             model_name="model-a")
    big = ScriptedChatModel([AIMessage("answer", id="b0", usage_metadata=usage(300, 50)),
                             AIMessage("check", id="b1", usage_metadata=usage(20, 5))],
                            model_name="model-b")

    async def researcher(state: S) -> Command:
        msgs = [await fast.ainvoke("p"), await big.ainvoke("q"), await big.ainvoke("r")]
        return Command(update={"messages": msgs}, goto="__end__")

    graph = _graph(track_agent(researcher, name="research", pricing=PRICING, timer=Timer(),
                               clock=clock), name="research")
    out = await graph.ainvoke({"messages": [HumanMessage("go")]},
                              {"configurable": {"thread_id": "2"}})
    assert out["usage"] == {"research": {
        "model-a": {"calls": 1, "input_tokens": 100, "output_tokens": 10,
                    "cost": pytest.approx(0.00012)},
        "model-b": {"calls": 2, "input_tokens": 320, "output_tokens": 55,
                    "cost": pytest.approx(0.0043)},
    }}
    [run] = out["agent_runs"]
    assert run["models"] == ["model-a", "model-b"] and run["calls"] == 3
    assert run["cost"] == pytest.approx(0.00442)
    assert len(out["messages"]) == 4


def test_runnable_node_and_messages_already_in_state_are_not_recounted() -> None:
    old = AIMessage("earlier", id="m-old", usage_metadata=usage(5, 5),
                    response_metadata={"model_name": "model-a"})

    def body(state: dict) -> dict:
        new = AIMessage("new", id="m-new", usage_metadata=usage(7, 3),
                        response_metadata={"model": "model-b"})
        return {"messages": [*state["messages"], new]}

    graph = _graph(track_agent(RunnableLambda(body), name="echo", pricing=PRICING,
                               timer=Timer(), clock=clock))
    out = graph.invoke({"messages": [old]}, {"configurable": {"thread_id": "3"}})
    assert out["usage"] == {"echo": {"model-b": {"calls": 1, "input_tokens": 7,
                                                 "output_tokens": 3, "cost": 0.00013}}}


def test_a_resumed_agent_is_counted_once() -> None:
    model = ScriptedChatModel([AIMessage("draft", usage_metadata=usage(50, 20)),
                               AIMessage("draft", usage_metadata=usage(50, 20))],
                              model_name="model-a")

    def careful(state: S) -> dict:
        reply = model.invoke("draft it")
        approved = interrupt("send this draft?")
        return {"messages": [reply], "notes": [f"approved={approved}"]}

    graph = _graph(track_agent(careful, pricing=PRICING, timer=Timer(), clock=clock))
    cfg = {"configurable": {"thread_id": "4"}}
    first = graph.invoke({"messages": []}, cfg)
    assert "__interrupt__" in first
    assert graph.get_state(cfg).values.get("usage", {}) == {}
    out = graph.invoke(Command(resume=True), cfg)
    assert out["usage"]["careful"]["model-a"]["calls"] == 1
    assert out["usage"]["careful"]["model-a"]["input_tokens"] == 50
    assert len(out["agent_runs"]) == 1


def test_agent_without_model_calls_still_gets_a_run_record() -> None:
    def tool_only(state: S) -> None:
        return None

    graph = _graph(track_agent(tool_only, pricing=PRICING, timer=Timer(), clock=clock))
    out = graph.invoke({"topic": "x"}, {"configurable": {"thread_id": "5"}})
    assert "usage" not in out or out["usage"] == {}
    [run] = out["agent_runs"]
    assert run["calls"] == 0 and run["models"] == [] and run["output_keys"] == []
    assert run["input_keys"] == ["topic"]


def test_unknown_models_cost_nothing_unless_strict() -> None:
    msg = AIMessage("x", usage_metadata=usage(10, 10),
                    response_metadata={"model_name": "mystery-1"})

    def agent(state: S) -> dict:
        return {"messages": [msg]}

    out = _graph(track_agent(agent, pricing=PRICING)).invoke(
        {}, {"configurable": {"thread_id": "6"}})
    assert out["usage"]["agent"]["mystery-1"]["cost"] == 0.0
    strict = Pricing({}, include_defaults=False, strict=True)
    with pytest.raises(ConfigurationError, match="no price for model 'mystery-1'"):
        _graph(track_agent(agent, pricing=strict)).invoke({}, {"configurable": {"thread_id": "7"}})


def test_default_prices_apply_to_versioned_model_names() -> None:
    msg = AIMessage("x", usage_metadata=usage(1_000_000, 1_000_000),
                    response_metadata={"model_name": "gpt-4o-mini-2024-07-18"})
    out = _graph(track_agent(lambda s: {"messages": [msg]}, name="a")).invoke(
        {}, {"configurable": {"thread_id": "8"}})
    assert out["usage"]["a"]["gpt-4o-mini-2024-07-18"]["cost"] == pytest.approx(0.15 + 0.60)


@pytest.mark.parametrize("args,kwargs,message", [
    ((None,), {}, "needs a node function or Runnable"),
    ((lambda s: s,), {}, "could not infer an agent name"),
    ((print,), {"name": ""}, "name must be a non-empty string"),
    ((print,), {"pricing": {"a": 1}}, "pricing must be a relaygraph.observe.Pricing"),
])
def test_configuration_errors(args: tuple, kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        track_agent(*args, **kwargs)


