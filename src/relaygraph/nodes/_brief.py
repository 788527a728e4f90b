"""Putting a contract's brief in front of the next agent."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage

from relaygraph.nodes._contract import Contract


def render_brief(contract: Contract, *, recall: bool = True) -> str:
    """The brief text: the contract's compact rendering plus a recall hint.

    Args:
        contract: A validated contract (e.g. ``state["case"]``).
        recall: Mention the ``recall`` tool for details the brief leaves out.
    """
    text = "Handoff brief " + contract.to_brief()
    if recall:
        text += "\n(Facts checked against the source; use the recall tool for anything else.)"
    return text


def brief_message(contract: Contract, *, role: Literal["system", "human"] = "system",
                  recall: bool = True) -> BaseMessage:
    """The brief as one message for the next agent's prompt.

    Args:
        contract: A validated contract.
        role: ``"system"`` (default) or ``"human"``.
        recall: Mention the recall tool.

    Returns:
        A ``SystemMessage`` or ``HumanMessage`` named ``"handoff_brief"``.
    """
    content = render_brief(contract, recall=recall)
    if role == "human":
        return HumanMessage(content=content, name="handoff_brief")
    return SystemMessage(content=content, name="handoff_brief")


def with_brief(contract: Contract, messages: Sequence[Any] = (), *,
               role: Literal["system", "human"] = "system",
               recall: bool = True) -> list[Any]:
    """The next agent's messages: the brief first, then its own ``messages``.

    Any earlier brief message (name ``"handoff_brief"``) is dropped so retries don't
    stack briefs.
    """
    rest = [m for m in messages if getattr(m, "name", None) != "handoff_brief"]
    return [brief_message(contract, role=role, recall=recall), *rest]
