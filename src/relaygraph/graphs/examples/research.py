"""Research report: researcher → handoff ``ResearchBrief`` → writer.

The researcher gathers findings in a long, chatty transcript; the handoff keeps exactly
what the writer needs (the question and the findings, each quoted verbatim from the notes)
and the writer drafts the report from the brief alone. Offline and deterministic.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

from langchain_core.messages import AnyMessage, BaseMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.graph import StateGraph
from langgraph.graph.message import add_messages
from pydantic import Field

from relaygraph._clock import Clock, system_clock
from relaygraph.graphs._pipeline import Agent, Handoff, pipeline
from relaygraph.graphs.examples._data import RESEARCH_LOG, RESEARCH_NOTES, RESEARCH_QUESTION
from relaygraph.graphs.examples._util import fresh_id as _fresh_id
from relaygraph.nodes import Contract, HandoffFeedback, HandoffState, Verbatim, render_brief
from relaygraph.observe import Pricing
from relaygraph.testing import ScriptedChatModel

GRAPH_ID = "research"

PRICING = Pricing({"scripted-small": (0.15, 0.60), "scripted-large": (2.50, 10.00)},
                  as_of="2026-01-01")


class ResearchBrief(Contract):
    """What the writer needs: the question and the findings, nothing else."""

    question: str = Field(description="the research question")
    findings: list[Annotated[str, Verbatim()]] = Field(
        description="each finding copied exactly from the researcher's notes")


class ResearchState(HandoffState, total=False):
    """The researcher's transcript, the brief and the report."""

    messages: Annotated[list[AnyMessage], add_messages]
    brief: ResearchBrief | None
    report: str | None


def research_input() -> dict[str, Any]:
    """The input that starts the example: the question."""
    return {"messages": [HumanMessage(RESEARCH_QUESTION)]}


def _compress(messages: Sequence[BaseMessage], contract: type[ResearchBrief],
              feedback: HandoffFeedback | None) -> dict[str, Any]:
    text = "\n".join(str(m.content) for m in messages)
    return {"question": RESEARCH_QUESTION,
            "findings": [n for n in RESEARCH_NOTES if n in text]}


def build_research_graph(*, clock: Clock = system_clock) -> StateGraph:
    """Build (not compile) the research workflow with `pipeline`."""
    researcher_model = ScriptedChatModel([RESEARCH_LOG], cycle=True,
                                         model_name="scripted-small")
    writer_model = ScriptedChatModel(
        ["Report: SQL checkpoints cost a few milliseconds per step. SQLite suits one "
         "process; PostgreSQL is worth it once several workers must share and resume "
         "threads. Delta storage keeps long threads cheap."],
        cycle=True, model_name="scripted-large")

    def researcher(state: ResearchState, config: RunnableConfig) -> dict[str, Any]:
        reply = researcher_model.invoke(state.get("messages", []), config)
        return {"messages": [_fresh_id(reply, "researcher")]}

    def writer(state: ResearchState, config: RunnableConfig) -> dict[str, Any]:
        brief = state.get("brief")
        if brief is None:
            raise ValueError("the writer needs a ResearchBrief in state['brief']")
        reply = writer_model.invoke([HumanMessage(render_brief(brief))], config)
        return {"messages": [_fresh_id(reply, "writer")],
                "report": str(reply.content)}

    return pipeline(
        Agent("researcher", researcher, options={"pricing": PRICING, "clock": clock}),
        Handoff("to_writer", ResearchBrief, source="messages", target="brief",
                compressor=_compress, clock=clock),
        Agent("writer", writer, options={"pricing": PRICING, "clock": clock}),
        state_schema=ResearchState,
        review_options={"clock": clock},
    )
