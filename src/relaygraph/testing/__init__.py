"""Deterministic stand-ins for testing graphs without a model provider.

:class:`ScriptedChatModel` answers from a script (text, tool calls, structured output,
errors), reports deterministic token usage and records every call it receives, so a
test can assert both what the graph did and what it asked the model. See the class
docstring for the response forms.
"""

from relaygraph.testing._clock import ManualClock
from relaygraph.testing._scripted import ScriptedCall, ScriptedChatModel, ScriptExhaustedError

__all__ = [
    "ManualClock",
    "ScriptExhaustedError",
    "ScriptedCall",
    "ScriptedChatModel",
]
