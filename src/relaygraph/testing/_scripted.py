"""``ScriptedChatModel``: a deterministic LangChain chat model for offline tests."""

from __future__ import annotations

import asyncio
import inspect
import json
import re
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.runnables.config import get_config_list
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import BaseModel, PrivateAttr

from relaygraph._errors import RelaygraphError
from relaygraph.nodes._tokens import approx_tokens, message_text


class ScriptExhaustedError(RelaygraphError, IndexError):
    """A :class:`ScriptedChatModel` received more calls than it has responses."""


@dataclass(frozen=True)
class ScriptedCall:
    """One call a :class:`ScriptedChatModel` received.

    Attributes:
        index: 0-based call number.
        messages: The messages the model was called with.
        tools: Tool schemas bound with ``bind_tools`` (OpenAI format), if any.
        tool_choice: The ``tool_choice`` bound with them.
        structured: True when the call came through ``with_structured_output``.
        kwargs: Any other call keyword arguments (``stop`` included when given).
    """

    index: int
    messages: list[BaseMessage]
    tools: list[dict[str, Any]] = field(default_factory=list)
    tool_choice: Any = None
    structured: bool = False
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def tool_names(self) -> list[str]:
        """Names of the bound tools."""
        return [t.get("function", {}).get("name", "") for t in self.tools]

    @property
    def text(self) -> str:
        """All message texts joined, for ``in`` assertions."""
        return "\n".join(message_text(m) for m in self.messages)

    def forced_tool(self) -> str | None:
        """The tool a dict response is turned into a call of, when unambiguous."""
        choice = self.tool_choice
        if isinstance(choice, dict):
            return choice.get("function", {}).get("name") or choice.get("name")
        if isinstance(choice, str) and choice in self.tool_names:
            return choice
        if len(self.tools) == 1 and (self.structured or choice in ("any", "required", True)):
            return self.tool_names[0]
        return None


_TOKEN = re.compile(r"\w+|[^\w\s]")
_STRUCTURED = "relaygraph_structured_output"


def _is_script_callable(response: Any) -> bool:
    return callable(response) and not isinstance(response, type | BaseException | BaseModel)


async def _await(awaitable: Any) -> Any:
    return await awaitable


def _usage(messages: Sequence[BaseMessage], reply: AIMessage) -> dict[str, int]:
    inp = sum(approx_tokens(message_text(m)) + 4 for m in messages)
    out = approx_tokens(message_text(reply))
    return {"input_tokens": inp, "output_tokens": out, "total_tokens": inp + out}


class ScriptedChatModel(BaseChatModel):
    """A chat model that answers from a script, one response per call, deterministically.

    Each call consumes the next response. A response may be:

    * a ``str``: an ``AIMessage`` with that content;
    * an ``AIMessage``: returned as is (usage filled in when missing);
    * a ``dict`` (or pydantic model): structured output. With ``with_structured_output``
      or a single forced tool it becomes a tool call of that tool with the dict as
      arguments; a dict with ``name`` and ``args`` keys is a tool call itself; otherwise
      the content is the dict as JSON;
    * a list of ``{"name", "args"}`` dicts: several tool calls;
    * an exception instance or class: raised by the call;
    * a callable ``(ScriptedCall) -> response``, sync or async: computed from the call
      (an async one is awaited by ``ainvoke``; ``invoke`` runs it to completion).

    Every ``AIMessage`` carries ``usage_metadata`` (token counts by the ``approx-v1``
    rule, so they are the same on every machine) and ``response_metadata`` with
    ``model_name`` and ``finish_reason``, plus OpenAI-style ``logprobs`` when
    ``logprob`` is set. ``invoke``, ``ainvoke``, ``batch`` and ``abatch`` work (batches
    consume responses in input order); streaming yields the whole message at once.

    Example::

        model = ScriptedChatModel(responses=[
            {"order_id": "A-1001", "amount": "12.40", "summary": "refund"},
            "Refund issued.",
        ])
        case = model.with_structured_output(RefundCase).invoke("...")
        assert model.calls[0].structured
        assert model.remaining == 1

    Args:
        responses: The script.
        cycle: Start over when the script runs out instead of raising
            :class:`ScriptExhaustedError`.
        logprob: Log-probability reported for every output token (e.g. ``-0.05``).
        model_name: Reported in ``response_metadata``.
    """

    responses: list[Any] = []
    cycle: bool = False
    logprob: float | None = None
    model_name: str = "scripted"

    _cursor: int = PrivateAttr(default=0)
    _calls: list[ScriptedCall] = PrivateAttr(default_factory=list)
    _lock: Any = PrivateAttr(default_factory=threading.Lock)

    def __init__(self, responses: Sequence[Any] | None = None, /, **kwargs: Any) -> None:
        if responses is not None:
            kwargs["responses"] = list(responses)
        super().__init__(**kwargs)

    @property
    def _llm_type(self) -> str:
        return "scripted-chat-model"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name}

    # ---------------------------------------------------------------- script state

    @property
    def calls(self) -> list[ScriptedCall]:
        """The calls received so far, in order."""
        with self._lock:
            return list(self._calls)

    @property
    def remaining(self) -> int:
        """Responses left before the script runs out (cycling scripts never run out)."""
        with self._lock:
            return max(0, len(self.responses) - self._cursor)

    def reset(self) -> None:
        """Rewind the script and forget recorded calls."""
        with self._lock:
            self._cursor = 0
            self._calls.clear()

    def _next(self, messages: list[BaseMessage], stop: list[str] | None,
              kwargs: dict[str, Any]) -> tuple[ScriptedCall, Any]:
        extra = dict(kwargs)
        tools = list(extra.pop("tools", None) or [])
        tool_choice = extra.pop("tool_choice", None)
        structured = bool(extra.pop(_STRUCTURED, False))
        extra.pop("ls_structured_output_format", None)
        if stop is not None:
            extra["stop"] = stop
        with self._lock:
            call = ScriptedCall(len(self._calls), list(messages), tools, tool_choice,
                                structured, extra)
            self._calls.append(call)
            if self._cursor >= len(self.responses):
                if self.cycle and self.responses:
                    self._cursor = 0
                else:
                    preview = message_text(messages[-1])[:120] if messages else ""
                    raise ScriptExhaustedError(
                        f"ScriptedChatModel ran out of responses: it has "
                        f"{len(self.responses)} and received call #{call.index + 1} "
                        f"(last message: {preview!r}). Add responses to the script or "
                        "pass cycle=True."
                    )
            response = self.responses[self._cursor]
            self._cursor += 1
        return call, response

    # ---------------------------------------------------------------- responses

    def _to_message(self, response: Any, call: ScriptedCall, depth: int = 0) -> AIMessage:
        if isinstance(response, BaseException):
            raise response
        if isinstance(response, type) and issubclass(response, BaseException):
            raise response(f"scripted failure on call #{call.index + 1}")
        if isinstance(response, AIMessage):
            return response.model_copy(deep=True)
        if isinstance(response, str):
            return AIMessage(content=response)
        if isinstance(response, BaseModel):
            response = response.model_dump(mode="json")
        if isinstance(response, dict):
            if {"name", "args"} <= set(response) and set(response) <= {"name", "args", "id",
                                                                        "type"}:
                return self._tool_calls([response], call)
            forced = call.forced_tool()
            if forced is not None:
                return self._tool_calls([{"name": forced, "args": response}], call)
            return AIMessage(content=json.dumps(response, default=str))
        if isinstance(response, list) and response and all(
                isinstance(r, dict) and {"name", "args"} <= set(r) for r in response):
            return self._tool_calls(response, call)
        if callable(response) and depth < 5:
            return self._to_message(response(call), call, depth + 1)
        raise TypeError(
            f"ScriptedChatModel cannot use a scripted response of type "
            f"{type(response).__name__} (call #{call.index + 1}); use a str, AIMessage, dict, "
            "list of tool calls, exception or callable"
        )

    @staticmethod
    def _tool_calls(calls: list[dict[str, Any]], call: ScriptedCall) -> AIMessage:
        return AIMessage(content="", tool_calls=[
            {"name": c["name"], "args": dict(c["args"]),
             "id": c.get("id") or f"call_{call.index}_{j}", "type": "tool_call"}
            for j, c in enumerate(calls)
        ])

    def _finish(self, message: AIMessage, call: ScriptedCall) -> ChatResult:
        if message.usage_metadata is None:
            message.usage_metadata = _usage(call.messages, message)  # type: ignore[assignment]
        meta: dict[str, Any] = {
            "model_name": self.model_name,
            "finish_reason": "tool_calls" if message.tool_calls else "stop",
        }
        if self.logprob is not None:
            meta["logprobs"] = {"content": [
                {"token": tok, "logprob": self.logprob, "bytes": None, "top_logprobs": []}
                for tok in _TOKEN.findall(message_text(message))
            ]}
        message.response_metadata = {**meta, **(message.response_metadata or {})}
        if message.id is None:
            # unique across instances and processes: add_messages replaces equal ids
            message.id = f"scripted-{uuid.uuid4().hex[:12]}-{call.index}"
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None,
                  **kwargs: Any) -> ChatResult:
        call, response = self._next(messages, stop, kwargs)
        if _is_script_callable(response):
            response = response(call)
            if inspect.isawaitable(response):
                response = asyncio.run(_await(response))
        return self._finish(self._to_message(response, call), call)

    async def _agenerate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                         run_manager: AsyncCallbackManagerForLLMRun | None = None,
                         **kwargs: Any) -> ChatResult:
        call, response = self._next(messages, stop, kwargs)
        if _is_script_callable(response):
            response = response(call)
            if inspect.isawaitable(response):
                response = await response
        return self._finish(self._to_message(response, call), call)

    # ---------------------------------------------------------------- tools & batches

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools (recorded on each call; dict responses become calls of them).

        Args:
            tools: Tools as LangChain accepts them (BaseTool, pydantic class, function,
                OpenAI dict).
            tool_choice: ``"any"``/``"required"`` or a tool name to force a tool.
            **kwargs: Other call arguments, recorded in :attr:`ScriptedCall.kwargs`.
        """
        formatted = [convert_to_openai_tool(t) for t in tools]
        if "ls_structured_output_format" in kwargs:  # called by with_structured_output
            kwargs[_STRUCTURED] = True
        return self.bind(tools=formatted, tool_choice=tool_choice, **kwargs)

    def batch(self, inputs: list[LanguageModelInput],
              config: RunnableConfig | list[RunnableConfig] | None = None, *,
              return_exceptions: bool = False, **kwargs: Any) -> list[Any]:
        """Invoke once per input, in order (so the script is consumed deterministically)."""
        out: list[Any] = []
        for item, cfg in zip(inputs, get_config_list(config, len(inputs)), strict=True):
            try:
                out.append(self.invoke(item, cfg, **kwargs))
            except Exception as exc:
                if not return_exceptions:
                    raise
                out.append(exc)
        return out

    async def abatch(self, inputs: list[LanguageModelInput],
                     config: RunnableConfig | list[RunnableConfig] | None = None, *,
                     return_exceptions: bool = False, **kwargs: Any) -> list[Any]:
        """Async :meth:`batch`, also in input order."""
        out: list[Any] = []
        for item, cfg in zip(inputs, get_config_list(config, len(inputs)), strict=True):
            try:
                out.append(await self.ainvoke(item, cfg, **kwargs))
            except Exception as exc:
                if not return_exceptions:
                    raise
                out.append(exc)
        return out
