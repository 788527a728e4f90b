"""Customer refund: intake agent → handoff ``RefundCase`` → confidence guard → resolver → review.

The intake agent talks to the customer. A handoff compresses the chat into a validated
``RefundCase``: the order id, amount and email are checked verbatim against the
transcript (the scripted compressor misquotes the amount on its first try, so the demo
shows a repair). A confidence guard lets confident cases through, sends unsure ones back to
intake once and escalates the rest to a human. The resolver sees only the brief, proposes a
resolution, and a human approves it before it is issued.

Issuing writes one row to the ``crm_refunds`` table in the workflow's own database through
`relaygraph.durable.effect` (``transactional=True``): the row and the effect ledger's record
commit together, so a crash, a resume or a retry never issues the refund twice.

Everything is deterministic and offline (scripted models), so the workflow runs in tests
and in ``relaygraph demo``. Swap the scripted models for real ones
(``init_chat_model("provider:model")``) to run it for real.
"""

from __future__ import annotations

import asyncio
import re
import threading
import weakref
from collections.abc import Sequence
from decimal import Decimal
from typing import Annotated, Any, Literal

import sqlalchemy as sa
from langchain_core.messages import AIMessage, AnyMessage, BaseMessage, HumanMessage
from langchain_core.runnables import RunnableConfig, RunnableLambda
from langgraph.graph import StateGraph
from langgraph.graph.message import add_messages
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncEngine

from relaygraph._clock import Clock, system_clock
from relaygraph._sql import acreate_tables, create_tables
from relaygraph.durable import EffectLedger, effect
from relaygraph.graphs._pipeline import Agent, Guard, Handoff, Review, pipeline
from relaygraph.graphs.examples._data import REFUND_TRANSCRIPT
from relaygraph.graphs.examples._util import fresh_id as _fresh_id
from relaygraph.nodes import (
    AutonomyPolicy,
    Contract,
    HandoffFeedback,
    HandoffState,
    Verbatim,
    render_brief,
)
from relaygraph.observe import Pricing
from relaygraph.testing import ScriptedChatModel

GRAPH_ID = "refund"

PRICING = Pricing({"scripted-small": (0.15, 0.60), "scripted-large": (2.50, 10.00)},
                  as_of="2026-01-01")
"""Prices (USD per million input / output tokens) of the example's scripted models."""


class RefundCase(Contract):
    """A refund request, ready for the resolver."""

    order_id: Annotated[str, Verbatim()] = Field(description="order number as written")
    amount: Annotated[Decimal, Verbatim()] = Field(description="amount the customer paid")
    customer_email: Annotated[str | None, Verbatim()] = None
    reason: str = Field(description="why the customer wants a refund, one sentence")
    wants: Literal["refund", "replacement", "store credit"]
    confidence: float = Field(ge=0, le=1, description="how sure the intake agent is")


class Resolution(BaseModel):
    """What the resolver proposes; a human approves, edits or rejects it."""

    model_config = ConfigDict(extra="forbid")

    action: Literal["refund", "replacement", "store credit", "deny"]
    order_id: str
    amount: Decimal
    note: str


class RefundState(HandoffState, total=False):
    """The chat, the handoff contract, the proposed resolution and what the CRM recorded."""

    messages: Annotated[list[AnyMessage], add_messages]
    case: RefundCase | None
    resolution: Resolution | None
    issued: dict[str, Any] | None


# -- the CRM ------------------------------------------------------------------------------

crm_metadata = sa.MetaData()
"""The example CRM's tables (apart from relaygraph's own ``metadata``)."""

crm_refunds = sa.Table(
    "crm_refunds",
    crm_metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    # deliberately not unique: one row per refund is the effect ledger's doing, and the
    # crash-resume suite counts rows to prove it
    sa.Column("idempotency_key", sa.String(64), nullable=False),
    sa.Column("thread_id", sa.String(255), nullable=False),
    sa.Column("order_id", sa.String(64), nullable=False),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("amount", sa.String(32), nullable=False),  # the Decimal, exactly as text
    sa.Column("customer_email", sa.String(255), nullable=True),
    sa.Column("created_at", sa.Double(), nullable=False),
    sa.Index("crm_refunds_thread", "thread_id"),
)
"""One row per refund (or replacement, or store credit) the workflow issued."""


def _write_crm_row(thread_id: str, resolution: Resolution, email: str | None,
                   created_at: float, *, key: str, conn: sa.Connection) -> dict[str, Any]:
    conn.execute(crm_refunds.insert().values(
        idempotency_key=key, thread_id=thread_id, order_id=resolution.order_id,
        action=resolution.action, amount=str(resolution.amount), customer_email=email,
        created_at=created_at))
    return {"crm_key": key, "order_id": resolution.order_id, "action": resolution.action,
            "amount": str(resolution.amount)}


_ready: weakref.WeakKeyDictionary[EffectLedger, bool] = weakref.WeakKeyDictionary()
_memory: weakref.WeakKeyDictionary[Any, EffectLedger] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def crm_ledger(checkpointer: Any) -> EffectLedger:
    """The effect ledger the refund is issued through: the checkpointer's database.

    A graph compiled on a saver without a database of its own (``InMemorySaver``) gets an
    in-memory SQLite database for its CRM and ledger, as short-lived as its checkpoints.
    """
    if isinstance(getattr(checkpointer, "engine", None), sa.Engine | AsyncEngine):
        return EffectLedger.for_checkpointer(checkpointer)
    with _lock:
        ledger = _memory.get(checkpointer)
        if ledger is None:
            engine = sa.create_engine("sqlite://", poolclass=sa.pool.StaticPool,
                                      connect_args={"check_same_thread": False})
            ledger = _memory[checkpointer] = EffectLedger(engine)
    return ledger


def setup_crm(ledger: EffectLedger) -> None:
    """Create the ledger's table and ``crm_refunds`` in its database (once per ledger)."""
    if not _ready.get(ledger):
        ledger.ensure_setup()
        create_tables(ledger._sync_engine(), [crm_refunds])
        _ready[ledger] = True


async def asetup_crm(ledger: EffectLedger) -> None:
    """Async twin of `setup_crm`."""
    if not _ready.get(ledger):
        if not ledger.is_async:
            await asyncio.to_thread(setup_crm, ledger)
            return
        await ledger.aensure_setup()
        await acreate_tables(ledger.engine, [crm_refunds])
        _ready[ledger] = True


def crm_rows(engine: sa.Engine, thread_id: str | None = None) -> list[dict[str, Any]]:
    """The CRM's refund rows (of one thread), oldest first (none before the first refund)."""
    if not sa.inspect(engine).has_table(crm_refunds.name):
        return []
    q = sa.select(crm_refunds).order_by(crm_refunds.c.id)
    if thread_id is not None:
        q = q.where(crm_refunds.c.thread_id == thread_id)
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(q)]


def transcript_messages() -> list[AnyMessage]:
    """The scripted customer chat as LangChain messages (the workflow's input)."""
    return [HumanMessage(text) if role == "human" else AIMessage(text)
            for role, text in REFUND_TRANSCRIPT]


def refund_input() -> dict[str, Any]:
    """The input that starts the example: the scripted customer chat."""
    return {"messages": transcript_messages()}


def scripted_compressor(confidence: float = 0.92):  # noqa: ANN201 - returns a callable
    """A deterministic compressor that reads the transcript like a careful model would.

    On its first try it misquotes the amount (``249.00``), as models sometimes do; the
    handoff's verbatim check catches it and the repair (with feedback) gets it right.
    """

    def compress(messages: Sequence[BaseMessage], contract: type[RefundCase],
                 feedback: HandoffFeedback | None) -> dict[str, Any]:
        text = "\n".join(str(m.content) for m in messages)
        order = re.search(r"\b[A-Z]-\d{4,}\b", text)
        amount = re.search(r"\$(\d+(?:\.\d{2})?)", text)
        # the local part starts where a run of its characters starts: without the
        # lookbehind every position of a long run is retried, quadratic on 100 kB of text
        email = re.search(r"(?<![\w.+-])[\w.+-]+@[\w-]+(?:\.[\w-]+)+", text)
        paid = amount.group(1) if amount else "0"
        if feedback is None and amount:
            paid = paid.split(".")[0] + ".00"  # the distortion the verbatim check catches
        return {
            "order_id": order.group(0) if order else "unknown",
            "amount": paid,
            "customer_email": email.group(0) if email else None,
            "reason": "The desk arrived with a cracked leg.",
            "wants": "refund" if "money back" in text or "refund" in text else "replacement",
            "confidence": confidence,
        }

    return compress


def _intake_model() -> ScriptedChatModel:
    return ScriptedChatModel(
        ["Thanks, I have everything I need and I'm passing your case to our resolver."],
        cycle=True, model_name="scripted-small")


def _resolver_model() -> ScriptedChatModel:
    return ScriptedChatModel(
        ["The item was damaged on arrival and the customer asked for money back: "
         "propose a full refund."], cycle=True, model_name="scripted-large")


def build_refund_graph(*, confidence: float = 0.92, threshold: float = 0.8,
                       policy: AutonomyPolicy | None = None,
                       clock: Clock = system_clock,
                       ledger: EffectLedger | None = None) -> StateGraph:
    """Build (not compile) the refund workflow with `pipeline`.

    Args:
        confidence: the confidence the scripted compressor reports; below ``threshold``
            the guard sends the case back to intake once, then escalates it to a human.
        threshold: the confidence guard's threshold.
        policy: an `AutonomyPolicy` for the final review (decision kind ``"refund"``):
            once the resolver has earned trust, some refunds skip the human. Without one,
            every refund is reviewed.
        clock: time source for every record.
        ledger: the `EffectLedger` the refund is issued through; its database holds the
            ``crm_refunds`` table. Default: the database of the checkpointer the graph is
            compiled with (see `crm_ledger`); both tables are created on first use.

    Returns:
        A ``StateGraph`` over `RefundState`; compile it with a checkpointer.
    """
    intake_model, resolver_model = _intake_model(), _resolver_model()

    def intake(state: RefundState, config: RunnableConfig) -> dict[str, Any]:
        reply = intake_model.invoke(state.get("messages", []), config)
        return {"messages": [_fresh_id(reply, "intake")]}

    def resolver(state: RefundState, config: RunnableConfig) -> dict[str, Any]:
        case = state.get("case")
        if case is None:
            raise ValueError("the resolver needs a RefundCase in state['case']")
        # the resolver sees the brief, not the transcript
        reply = resolver_model.invoke([HumanMessage(render_brief(case))], config)
        action = case.wants if case.wants != "replacement" else "replacement"
        return {
            "messages": [_fresh_id(reply, "resolver")],
            "resolution": Resolution(action=action, order_id=case.order_id,
                                     amount=case.amount, note=str(reply.content)),
        }

    def _issue_effect(lg: EffectLedger) -> Any:
        return effect(_write_crm_row, ledger=lg, name="refund.issue", transactional=True)

    def _to_issue(state: RefundState) -> Resolution | None:
        resolution = state.get("resolution")
        return None if resolution is None or resolution.action == "deny" else resolution

    def _email(state: RefundState) -> str | None:
        case = state.get("case")
        return case.customer_email if case is not None else None

    def issue(state: RefundState, config: RunnableConfig) -> dict[str, Any]:
        resolution = _to_issue(state)
        if resolution is None:
            return {"issued": None}
        conf = config.get("configurable", {})
        lg = ledger or crm_ledger(conf.get("__pregel_checkpointer"))
        setup_crm(lg)
        return {"issued": _issue_effect(lg)(str(conf.get("thread_id", "")), resolution,
                                             _email(state), clock())}

    async def aissue(state: RefundState, config: RunnableConfig) -> dict[str, Any]:
        resolution = _to_issue(state)
        if resolution is None:
            return {"issued": None}
        conf = config.get("configurable", {})
        lg = ledger or crm_ledger(conf.get("__pregel_checkpointer"))
        await asetup_crm(lg)
        return {"issued": await _issue_effect(lg).acall(
            str(conf.get("thread_id", "")), resolution, _email(state), clock())}

    return pipeline(
        Agent("intake", intake, options={"pricing": PRICING, "clock": clock}),
        Handoff("to_resolver", RefundCase, source="messages", target="case",
                compressor=scripted_compressor(confidence), clock=clock),
        Guard("check", score="case.confidence", threshold=threshold, max_retries=1,
              clock=clock),
        Agent("resolver", resolver, options={"pricing": PRICING, "clock": clock}),
        Review("review", subject="resolution", contract=Resolution, kind="refund",
               policy=policy, clock=clock),
        Agent("issue", RunnableLambda(issue, afunc=aissue, name="issue"), track=False),
        state_schema=RefundState,
        review_options={"clock": clock},
    )
