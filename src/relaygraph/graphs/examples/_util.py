"""Small helpers shared by the example agents."""

from __future__ import annotations

import uuid

from langchain_core.messages import AIMessage, BaseMessage


def fresh_id(reply: BaseMessage, name: str) -> AIMessage:
    """The model's reply as an ``AIMessage`` named after the agent, with a unique id.

    A unique id keeps ``add_messages`` from replacing an earlier message when two scripted
    models (or one rebuilt after a restart) hand out the same ids.
    """
    return AIMessage(content=reply.content, name=name, id=f"{name}-{uuid.uuid4().hex}",
                     usage_metadata=getattr(reply, "usage_metadata", None),
                     response_metadata=dict(reply.response_metadata or {}),
                     tool_calls=list(getattr(reply, "tool_calls", []) or []))
