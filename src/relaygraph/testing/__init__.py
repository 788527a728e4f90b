"""Deterministic stand-ins for testing graphs without a model provider.

:class:`ScriptedChatModel` answers from a script — text, tool calls, structured output,
errors, or callables computing a reply from the call — reports deterministic token
usage, and records every call it receives, so a test can assert both what the graph did
and what it asked the model. :class:`ManualClock` replaces ``time.time`` in components
that take a ``clock``.

Testing your own graph (this example is executed by relaygraph's test suite)::

    from decimal import Decimal
    from typing import Annotated

    from langchain_core.messages import HumanMessage
    from relaygraph.nodes import Contract, Verbatim, handoff
    from relaygraph.testing import ScriptedChatModel

    class RefundCase(Contract):
        order_id: Annotated[str, Verbatim()]
        amount: Annotated[Decimal, Verbatim()]
        summary: str

    # First answer invents an order id; the handoff asks again with what failed.
    model = ScriptedChatModel([
        {"order_id": "A-99999", "amount": "12.40", "summary": "refund"},
        {"order_id": "A-10234", "amount": "12.40", "summary": "refund"},
    ])
    node = handoff(RefundCase, source="messages", target="case", compressor=model,
                   on_success="resolver", on_failure="review")
    result = node.invoke({"messages": [HumanMessage("Refund A-10234, I paid $12.40")]})

    assert result.goto == "resolver"
    assert result.update["case"].order_id == "A-10234"
    assert result.update["handoffs"][0]["repairs"] == 1
    assert len(model.calls) == 2 and model.calls[0].structured
    assert "order_id" in model.calls[1].messages[-1].content   # the repair request
    assert model.remaining == 0

Response forms (one per call, in order): ``str`` → text reply; ``AIMessage`` → as is;
``dict``/pydantic model → structured output or a call of the single forced tool;
``{"name", "args"}`` or a list of them → tool calls; an exception (instance or class)
→ raised; a sync or async callable ``(ScriptedCall) -> response``. Running out of
responses raises :class:`ScriptExhaustedError` (or pass ``cycle=True``).
"""

from relaygraph.testing._clock import ManualClock
from relaygraph.testing._scripted import ScriptedCall, ScriptedChatModel, ScriptExhaustedError

__all__ = [
    "ManualClock",
    "ScriptExhaustedError",
    "ScriptedCall",
    "ScriptedChatModel",
]
