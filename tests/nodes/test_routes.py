"""Handoff, review and reconcile nodes in a hand-built StateGraph: routes and state keys.

Their ``on_*`` routes are ``Command(goto=…)`` targets that LangGraph cannot see unless the
node declares them: a misspelt route must fail at ``compile()``, not end the run silently,
and ``get_graph()`` must draw the routes. A state without the keys a handoff writes
would drop its contract silently: the handoff refuses to run instead.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import pytest
from langchain_core.messages import HumanMessage
from langgraph.graph import END, START, MessagesState, StateGraph

from relaygraph import ConfigurationError
from relaygraph.graphs import RelayState
from relaygraph.nodes import Contract, HandoffState, HumanReview, Verbatim, handoff, reconcile


class Case(Contract):
    order_id: Annotated[str, Verbatim()]


class State(MessagesState, HandoffState, total=False):
    case: Case | None
    drafts: list[Any]


def compress(messages: Any, contract: Any, feedback: Any) -> dict[str, Any]:
    return {"order_id": "A-1"}


def nodes() -> dict[str, Any]:
    return {
        "to_case": handoff(Case, source="messages", target="case", compressor=compress,
                           on_success="done", on_failure="review"),
        "review": HumanReview("case", contract=Case, on_approve="done", on_reject=END),
        "merge": reconcile(Case, source="drafts", target="case", on_success="done",
                           on_conflict="review"),
    }


def builder(**replace: Any) -> StateGraph:
    b = StateGraph(State)
    for name, node in {**nodes(), **replace}.items():
        b.add_node(name, node)
    b.add_node("done", lambda s: {})
    b.add_edge(START, "to_case")
    b.add_edge("done", END)
    return b


def test_routes_are_drawn_and_run():
    graph = builder().compile()
    edges = {(e.source, e.target) for e in graph.get_graph().edges}
    assert {("to_case", "done"), ("to_case", "review"), ("review", "done"),
            ("review", END)} <= edges
    out = graph.invoke({"messages": [HumanMessage("refund order A-1")]})
    assert out["case"] == Case(order_id="A-1")


@pytest.mark.parametrize("name, node", [
    ("to_case", handoff(Case, source="messages", target="case", compressor=compress,
                        on_success="dnoe")),
    ("to_case", handoff(Case, source="messages", target="case", compressor=compress,
                        on_failure="dnoe")),
    ("review", HumanReview("case", on_approve="done", on_reject="dnoe")),
    ("review", HumanReview("case", on_approve="done", on_edit="dnoe")),
    ("merge", reconcile(Case, source="drafts", target="case", on_conflict="dnoe")),
])
def test_a_route_to_no_node_fails_at_compile(name, node):
    with pytest.raises(ValueError, match="unknown node `dnoe`"):
        builder(**{name: node}).compile()


def test_destinations_are_exposed():
    made = nodes()
    assert made["to_case"].destinations == ("done", "review")
    assert made["review"].destinations == ("done", END)
    assert made["merge"].destinations == ("done", "review")
    assert handoff(Case, source="messages", target="case", compressor=compress).destinations == ()


class NoCase(MessagesState, HandoffState, total=False):
    pass


class NoRecords(MessagesState, total=False):
    case: Case | None


@pytest.mark.parametrize("schema, kwargs, missing, fix", [
    (NoCase, {}, "'case'", "`case: Case | None`"),
    (NoRecords, {}, "'handoffs'", "HandoffState"),
    (NoRecords, {"archive": None}, "'handoffs'", "HandoffState"),
    (State, {"brief_to": "brief"}, "'brief'", "add 'brief' to the state schema"),
])
@pytest.mark.parametrize("run", ["invoke", "ainvoke"])
def test_a_state_without_the_handoff_keys_is_refused(schema, kwargs, missing, fix, run):
    b = StateGraph(schema)
    b.add_node("to_case", handoff(Case, source="messages", target="case",
                                  compressor=compress, **kwargs))
    b.add_edge(START, "to_case")
    b.add_edge("to_case", END)
    graph = b.compile()
    state = {"messages": [HumanMessage("refund order A-1")]}
    with pytest.raises(ConfigurationError, match=missing) as info:
        if run == "invoke":
            graph.invoke(state)
        else:
            asyncio.run(graph.ainvoke(state))
    assert fix in str(info.value)


class RelayOnly(MessagesState, RelayState, total=False):
    case: Case | None


def test_the_archive_key_is_needed_only_when_archiving_in_state():
    def build(**kwargs: Any) -> Any:
        b = StateGraph(RelayOnly)
        b.add_node("to_case", handoff(Case, source="messages", target="case",
                                      compressor=compress, **kwargs))
        b.add_edge(START, "to_case")
        b.add_edge("to_case", END)
        return b.compile()

    state = {"messages": [HumanMessage("refund order A-1")]}
    with pytest.raises(ConfigurationError, match="'handoff_sources'"):
        build().invoke(state)
    out = build(archive=None).invoke(state)
    assert out["case"] == Case(order_id="A-1") and out["handoffs"][-1]["failure"] is None
