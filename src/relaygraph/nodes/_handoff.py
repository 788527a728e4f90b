"""``handoff()``: compress a source into a validated, verbatim-checked contract."""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import json
import re
import time
import typing
from collections.abc import Awaitable, Callable, Generator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    convert_to_messages,
)
from langchain_core.runnables import Runnable, RunnableConfig, RunnableLambda
from langgraph.types import Command
from pydantic import BaseModel, ValidationError

from relaygraph._clock import Clock, iso, system_clock
from relaygraph._errors import ConfigurationError, RelaygraphError
from relaygraph._graph import RoutingNode, declare_destinations, missing_channels
from relaygraph.nodes._binding import check_bindings
from relaygraph.nodes._brief import brief_message, render_brief
from relaygraph.nodes._contract import Contract, _field_verbatim
from relaygraph.nodes._recall import (
    SOURCES_KEY,
    SourceRef,
    SourceStore,
    archive_key,
    to_passages,
)
from relaygraph.nodes._tokens import TokenCounter, default_counter, message_text
from relaygraph.nodes._verbatim import SourceIndex
from relaygraph.observe._pricing import Pricing
from relaygraph.state import (
    HandoffReport,
    RelayState,
    Usage,
    VerbatimCheck,
    merge_dicts,
)

_DEFAULT_PRICING = Pricing()

MESSAGE_OVERHEAD_TOKENS = 4
"""Tokens counted per source message for role and separators (as chat APIs bill them)."""


class HandoffState(RelayState, total=False):
    """``RelayState`` plus the archive channel that handoffs write (``handoff_sources``).

    Mix it into your graph state next to your own keys::

        class State(HandoffState):
            messages: Annotated[list[AnyMessage], add_messages]
            case: RefundCase | None
    """

    handoff_sources: Annotated[dict[str, SourceRef], merge_dicts]


class HandoffError(RelaygraphError):
    """A handoff could not produce a valid contract and has no ``on_failure`` route.

    Attributes:
        report: The ``HandoffReport`` of the failed handoff.
        failed_fields: The contract fields (paths) that failed, e.g. ``["amount"]``.
    """

    def __init__(self, message: str, report: HandoffReport, failed_fields: list[str]) -> None:
        super().__init__(message)
        self.report = report
        self.failed_fields = failed_fields


class CompressorTimeout(RelaygraphError, TimeoutError):
    """The compressor did not answer within the handoff's ``timeout``."""


@dataclass(frozen=True)
class HandoffFeedback:
    """What failed in the previous attempt; given to the compressor on a repair.

    ``str(feedback)`` is the text shown to a chat model.

    Attributes:
        attempt: Number of the repair (1 for the first repair).
        errors: Field path → what was wrong (``{"amount": "the number 129 does not
            appear in the source"}``). ``"*"`` stands for the output as a whole.
        previous: The rejected output as a dict, when there was one.
    """

    attempt: int
    errors: dict[str, str]
    previous: dict[str, Any] | None = None

    def __str__(self) -> str:
        lines = ["Your previous answer was rejected. Fix exactly these problems:"]
        lines += [f"- {path}: {why}" for path, why in self.errors.items()]
        if self.previous is not None:
            lines.append("Previous answer: " + json.dumps(self.previous, default=str,
                                                          ensure_ascii=False))
        lines.append("Copy ids, amounts, dates and emails exactly as the conversation writes "
                     "them. Leave an optional field empty rather than guess.")
        return "\n".join(lines)


CallableCompressor = Callable[
    [list[BaseMessage], type[Contract], HandoffFeedback | None],
    "Contract | Mapping[str, Any] | Awaitable[Contract | Mapping[str, Any]]",
]
Compressor = BaseChatModel | Runnable | CallableCompressor
"""A chat model (used with ``with_structured_output``), a runnable, or a callable."""


@dataclass
class _Attempt:
    contract: Contract | None = None
    errors: dict[str, str] = field(default_factory=dict)
    draft: dict[str, Any] | None = None
    verbatim: dict[str, VerbatimCheck] = field(default_factory=dict)


@dataclass
class _Source:
    messages: list[BaseMessage]
    index: SourceIndex
    tokens: int
    label: str


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _type_name(typing.get_args(annotation)[0])
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(annotation))
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{args}]" if name not in ("Union", "UnionType") else args.replace(
            ", ", " | ")
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation))


def contract_instructions(contract: type[Contract]) -> str:
    """The instructions a chat-model compressor receives for ``contract``."""
    lines = [
        f"Fill the {contract.__name__} handoff contract from the conversation. It is all the "
        "next agent will see, so include every fact the fields ask for and nothing else.",
        "Fields marked VERBATIM are checked against the conversation: copy them exactly as "
        "written there (ids, amounts, dates, emails, names); never invent, round or "
        "recompute them. Leave optional fields null when the conversation does not state "
        "them.",
    ]
    doc = inspect.cleandoc(contract.__doc__ or "")
    if doc and not doc.startswith("Base class of handoff contracts"):
        lines.append(f"Contract: {doc}")
    lines.append("Fields:")
    for name, info in contract.model_fields.items():
        tags = [_type_name(info.annotation), "required" if info.is_required() else "optional"]
        if _field_verbatim(info) is not None:
            tags.append("VERBATIM")
        desc = f": {info.description}" if info.description else ""
        lines.append(f"- {name} ({', '.join(tags)}){desc}")
    return "\n".join(lines)


def render_transcript(messages: Sequence[BaseMessage]) -> str:
    """The source as numbered lines (``[3] tool lookup_order: {...}``) for a model."""
    out = []
    for i, m in enumerate(messages):
        who = m.type + (f" {m.name}" if getattr(m, "name", None) else "")
        out.append(f"[{i}] {who}: {message_text(m)}")
    return "\n".join(out)


def _to_messages(value: Any) -> list[BaseMessage]:
    if value is None:
        return []
    if isinstance(value, str):
        return [HumanMessage(content=value)] if value else []
    if isinstance(value, BaseMessage):
        return [value]
    if isinstance(value, list | tuple):
        out: list[BaseMessage] = []
        for item in value:
            if isinstance(item, BaseMessage):
                out.append(item)
            elif isinstance(item, str):
                out.append(HumanMessage(content=item))
            elif isinstance(item, Mapping) and "content" in item:
                out.extend(convert_to_messages([dict(item)]))
            else:
                out.append(HumanMessage(content=_json(item)))
        return out
    return [HumanMessage(content=_json(value))]


def _json(value: Any) -> str:
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    return json.dumps(value, default=str, ensure_ascii=False, indent=1)


def _jsonable(value: Any) -> Any:
    try:
        return json.loads(json.dumps(value, default=str))
    except (TypeError, ValueError):
        return {"repr": repr(value)[:2000]}


_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)


def _parse_json_text(text: str) -> Any:
    s = text.strip()
    m = _FENCE.match(s)
    if m:
        s = m.group(1)
    return json.loads(s)


def _describe_compressor(compressor: Any) -> str:
    if isinstance(compressor, BaseChatModel):
        model = getattr(compressor, "model_name", None) or getattr(compressor, "model", None)
        return f"chat:{model or compressor._llm_type}"
    if isinstance(compressor, Runnable):
        return f"runnable:{compressor.get_name()}"
    return f"callable:{getattr(compressor, '__qualname__', type(compressor).__name__)}"


def _run_in_thread(fn: Callable[[], Any], timeout: float | None) -> Any:
    """Run ``fn`` in a worker thread, giving up after ``timeout`` seconds.

    A sync call cannot be interrupted: on timeout the worker is abandoned (it finishes
    in the background) and the handoff moves on.
    """
    if timeout is None:
        return fn()
    ctx = contextvars.copy_context()
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="relaygraph-compressor")
    try:
        future = pool.submit(ctx.run, fn)
        try:
            return future.result(timeout=timeout)
        except FuturesTimeout:
            raise CompressorTimeout(
                f"the compressor did not answer within timeout={timeout}s"
            ) from None
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


class HandoffNode(RoutingNode, RunnableLambda):
    """The graph node built by :func:`handoff` (a runnable with sync and async paths).

    Call it on a state dict, or add it to a ``StateGraph``. ``invoke`` runs the
    compressor synchronously, ``ainvoke`` asynchronously.
    """

    contract: type[Contract]
    target: str
    on_success: str | None
    on_failure: str | None

    def __init__(
        self,
        contract: type[Contract],
        *,
        source: str | Callable[[Any], Any],
        target: str,
        compressor: Compressor,
        on_success: str | None,
        on_failure: str | None,
        max_repairs: int,
        timeout: float | None,
        archive: Literal["state"] | SourceStore | None,
        brief_to: str | None,
        max_source_tokens: int | None,
        tokenizer: TokenCounter | None,
        clock: Clock,
        name: str | None,
        pricing: Pricing | None = None,
    ) -> None:
        if not (isinstance(contract, type) and issubclass(contract, Contract)):
            raise ConfigurationError(
                f"contract must be a Contract subclass, got {contract!r}; declare it as "
                "`class MyCase(Contract): ...`"
            )
        if not (isinstance(source, str) and source) and not callable(source):
            raise ConfigurationError(
                f"source must be a state key or a callable over the state, got {source!r}"
            )
        if not isinstance(target, str) or not target:
            raise ConfigurationError(f"target must be a non-empty state key, got {target!r}")
        for label, route in (("on_success", on_success), ("on_failure", on_failure)):
            if route is not None and (not isinstance(route, str) or not route):
                raise ConfigurationError(f"{label} must be a node name or None, got {route!r}")
        if isinstance(max_repairs, bool) or not isinstance(max_repairs, int) or max_repairs < 0:
            raise ConfigurationError(f"max_repairs must be an int >= 0, got {max_repairs!r}")
        if timeout is not None and (isinstance(timeout, bool)
                                    or not isinstance(timeout, int | float) or not timeout > 0):
            raise ConfigurationError(f"timeout must be a positive number of seconds or None, "
                                     f"got {timeout!r}")
        if max_source_tokens is not None and (
                isinstance(max_source_tokens, bool) or not isinstance(max_source_tokens, int)
                or max_source_tokens < 1):
            raise ConfigurationError(
                f"max_source_tokens must be an integer >= 1 or None, got {max_source_tokens!r}")
        if brief_to is not None and (not isinstance(brief_to, str) or not brief_to):
            raise ConfigurationError(
                f"brief_to must be a messages state key or None, got {brief_to!r}")
        if name is not None and (not isinstance(name, str) or not name):
            raise ConfigurationError(f"name must be a non-empty string or None, got {name!r}")
        if tokenizer is not None and not all(
                callable(getattr(tokenizer, m, None)) for m in ("count", "count_many")):
            raise ConfigurationError(
                f"tokenizer must be a relaygraph.nodes.TokenCounter, got {tokenizer!r:.60}")
        if not callable(clock):
            raise ConfigurationError(f"clock must be a callable returning seconds, got {clock!r}")
        if archive is not None and archive != "state" and not isinstance(archive, SourceStore):
            raise ConfigurationError(
                f"archive must be 'state', a SourceStore (put/get) or None, got {archive!r}"
            )
        self.contract = contract
        self.source = source
        self.target = target
        self.on_success = on_success
        self.on_failure = on_failure
        self.max_repairs = max_repairs
        self.timeout = timeout
        self.archive = archive
        self.brief_to = brief_to
        self.max_source_tokens = max_source_tokens
        self.tokens = tokenizer or default_counter()
        self.clock = clock
        self.node_name = name or f"handoff:{target}"
        if pricing is not None and not isinstance(pricing, Pricing):
            raise ConfigurationError(
                f"pricing must be a relaygraph.observe.Pricing, got {type(pricing).__name__}")
        self.pricing = pricing or _DEFAULT_PRICING
        self.compressor = compressor
        self.compressor_label = _describe_compressor(compressor)
        self._instructions = contract_instructions(contract)
        self._mode: Literal["chat", "runnable", "async_callable", "callable"]
        if isinstance(compressor, BaseChatModel):
            try:
                self._structured: Runnable = compressor.with_structured_output(
                    contract, include_raw=True)
            except NotImplementedError as exc:
                raise ConfigurationError(
                    f"the chat model {type(compressor).__name__} does not support "
                    "with_structured_output (tool calling); use a model that does, or pass "
                    "a callable compressor"
                ) from exc
            self._mode = "chat"
        elif isinstance(compressor, Runnable):
            self._mode = "runnable"
        elif callable(compressor):
            try:
                inspect.signature(compressor).bind(None, None, None)
            except TypeError as exc:
                raise ConfigurationError(
                    "a callable compressor must accept (source_messages, contract_type, "
                    f"feedback); {self.compressor_label} does not: {exc}"
                ) from exc
            except ValueError:  # builtins without a signature: trust them
                pass
            call = vars(type(compressor)).get("__call__")
            is_async = inspect.iscoroutinefunction(compressor) or (
                not inspect.isfunction(compressor) and inspect.iscoroutinefunction(call))
            self._mode = "async_callable" if is_async else "callable"
        else:
            raise ConfigurationError(
                "compressor must be a LangChain chat model, a Runnable or a callable "
                f"(source_messages, contract_type, feedback); got {type(compressor).__name__}"
            )
        super().__init__(self._run, afunc=self._arun, name=self.node_name)
        #: the nodes this handoff can route to; ``StateGraph.add_node`` reads them, so
        #: ``compile()`` rejects a route that names no node
        self.destinations = declare_destinations(self, (on_success, on_failure))

    # ------------------------------------------------------------------ source

    def _read_source(self, state: Any) -> tuple[list[BaseMessage], str]:
        if callable(self.source):
            return _to_messages(self.source(state)), getattr(self.source, "__name__", "source")
        if isinstance(state, Mapping):
            value = state.get(self.source)
        else:
            value = getattr(state, self.source, None)
        return _to_messages(value), f"state[{self.source!r}]"

    def _prepare(self, state: Any) -> _Source:
        messages, label = self._read_source(state)
        texts = [message_text(m) for m in messages]
        tokens = self.tokens.count_many(texts, MESSAGE_OVERHEAD_TOKENS)
        return _Source(messages, SourceIndex(texts), tokens, label)

    def _precheck(self, src: _Source) -> tuple[str, dict[str, str]] | None:
        required = {n: "required, but the source has nothing to fill it from"
                    for n, info in self.contract.model_fields.items() if info.is_required()}
        if not any(t.strip() for t in src.index.texts):
            problem = f"the source {src.label} is empty: there is nothing to hand off"
            errors = required or {"*": "the source is empty"}
        elif self.max_source_tokens is not None and src.tokens > self.max_source_tokens:
            problem = (f"the source {src.label} has {src.tokens} tokens, over "
                       f"max_source_tokens={self.max_source_tokens}; trim it upstream or "
                       "raise the limit")
            errors = required or {"*": "the source is too large"}
        else:
            return None
        return (f"{self.contract.__name__} handoff failed before calling the compressor: "
                f"{problem}; failing fields: {', '.join(sorted(errors))}", errors)

    # ------------------------------------------------------------------ compressor

    def _prompt(self, src: _Source, feedback: HandoffFeedback | None) -> list[BaseMessage]:
        msgs: list[BaseMessage] = [
            SystemMessage(content=self._instructions),
            HumanMessage(content="Conversation:\n" + render_transcript(src.messages)),
        ]
        if feedback is not None:
            msgs.append(HumanMessage(content=str(feedback)))
        return msgs

    def _runnable_input(self, src: _Source, feedback: HandoffFeedback | None) -> dict[str, Any]:
        return {
            "messages": src.messages,
            "transcript": render_transcript(src.messages),
            "contract": self.contract.__name__,
            "instructions": self._instructions,
            "schema": json.dumps(self.contract.model_json_schema()),
            "feedback": str(feedback) if feedback is not None else "",
        }

    def _call(self, src: _Source, feedback: HandoffFeedback | None) -> Any:
        if self._mode == "chat":
            prompt = self._prompt(src, feedback)
            return _run_in_thread(lambda: self._structured.invoke(prompt), self.timeout)
        if self._mode == "runnable":
            data = self._runnable_input(src, feedback)
            runnable = typing.cast(Runnable, self.compressor)
            return _run_in_thread(lambda: runnable.invoke(data), self.timeout)
        fn = typing.cast(Callable[..., Any], self.compressor)
        messages = list(src.messages)

        def call() -> Any:
            result = fn(messages, self.contract, feedback)
            if inspect.isawaitable(result):
                async def wait() -> Any:
                    return await asyncio.wait_for(_as_coro(result), self.timeout)
                return asyncio.run(wait())
            return result

        return _run_in_thread(call, self.timeout)

    async def _acall(self, src: _Source, feedback: HandoffFeedback | None) -> Any:
        started = time.monotonic()
        try:
            if self._mode == "chat":
                return await asyncio.wait_for(
                    self._structured.ainvoke(self._prompt(src, feedback)), self.timeout)
            if self._mode == "runnable":
                runnable = typing.cast(Runnable, self.compressor)
                return await asyncio.wait_for(
                    runnable.ainvoke(self._runnable_input(src, feedback)), self.timeout)
            fn = typing.cast(Callable[..., Any], self.compressor)
            messages = list(src.messages)
            if self._mode == "async_callable":
                return await asyncio.wait_for(
                    _as_coro(fn(messages, self.contract, feedback)), self.timeout)
            result = await asyncio.wait_for(
                asyncio.to_thread(fn, messages, self.contract, feedback), self.timeout)
            if inspect.isawaitable(result):
                result = await asyncio.wait_for(_as_coro(result), self.timeout)
            return result
        except TimeoutError:
            if self.timeout is None or time.monotonic() - started < self.timeout:
                raise  # the compressor's own TimeoutError, not ours
            raise CompressorTimeout(
                f"the compressor did not answer within timeout={self.timeout}s"
            ) from None

    # ------------------------------------------------------------------ checking

    def _extract(self, raw: Any) -> Any:
        """Turn whatever the compressor returned into a dict or a contract instance."""
        if isinstance(raw, Mapping) and {"raw", "parsed"} <= set(raw):
            parsed = raw.get("parsed")
            if isinstance(parsed, self.contract) and raw.get("parsing_error") is None:
                return parsed
            return self._extract(raw.get("raw"))
        if isinstance(raw, BaseMessage):
            calls = getattr(raw, "tool_calls", None) or []
            if calls:
                return calls[0]["args"]
            text = message_text(raw)
            try:
                return _parse_json_text(text)
            except ValueError:
                raise _OutputError(
                    f"the model answered in prose, not with the {self.contract.__name__} "
                    f"structure: {text[:200]!r}") from None
        if isinstance(raw, str):
            try:
                return _parse_json_text(raw)
            except ValueError:
                raise _OutputError(f"the output is not JSON: {raw[:200]!r}") from None
        return raw

    def _evaluate(self, raw: Any, src: _Source) -> _Attempt:
        attempt = _Attempt()
        try:
            data = self._extract(raw)
        except _OutputError as exc:
            attempt.errors["*"] = str(exc)
            return attempt
        if isinstance(data, BaseModel):
            data = data.model_dump()
        if data is None:
            attempt.errors["*"] = "the compressor returned nothing (None)"
            return attempt
        if not isinstance(data, Mapping):
            attempt.errors["*"] = (f"the compressor returned a {type(data).__name__}; expected "
                                   f"a {self.contract.__name__} or a dict")
            attempt.draft = {"value": _jsonable(data)}
            return attempt
        attempt.draft = _jsonable(dict(data))
        try:
            contract = self.contract.model_validate(dict(data))
        except ValidationError as exc:
            for err in exc.errors():
                path = ".".join(str(p) for p in err["loc"]) or "*"
                if err["type"] == "extra_forbidden":
                    why = f"not a field of {self.contract.__name__}; remove it"
                elif err["type"] == "missing":
                    why = "required but missing; fill it from the conversation"
                else:
                    why = f"{err['msg']} (got {err.get('input')!r:.80})"
                attempt.errors[path] = why
            return attempt
        for path, marker, value, owner in contract.iter_verbatim_with_owner():
            res = src.index.check(value, marker, owner)
            check = VerbatimCheck(passed=res.passed, value=res.value,
                                  provenance=res.match.as_provenance() if res.match else None)
            if not res.passed:
                check["reason"] = res.reason
                attempt.errors[path] = res.reason
            attempt.verbatim[path] = check
        if not attempt.errors:
            # Referential drift: each value is in the source, but is it this entity's?
            binding = check_bindings(src.index, contract)
            for path, bound in binding.bound.items():
                provenance = attempt.verbatim[path].get("provenance")
                if provenance is not None:
                    provenance["bound_to"] = bound
            for path, reason in binding.errors.items():
                attempt.verbatim[path]["passed"] = False
                attempt.verbatim[path]["reason"] = reason
                attempt.errors[path] = reason
        if not attempt.errors:
            attempt.contract = contract
        return attempt

    @staticmethod
    def _failed_call(exc: BaseException) -> _Attempt:
        if isinstance(exc, CompressorTimeout):
            return _Attempt(errors={"*": str(exc)})
        return _Attempt(errors={"*": f"the compressor raised {type(exc).__name__}: {exc}"})

    # ------------------------------------------------------------------ results

    def _report(self, src: _Source, attempt: _Attempt, repairs: int, started: float,
                failure: str | None, ref: str | None) -> HandoffReport:
        brief_tokens = 0
        fields: list[str] = []
        if attempt.contract is not None:
            brief_tokens = self.tokens.count(
                render_brief(attempt.contract, recall=self.archive is not None))
            fields = attempt.contract.filled_fields()
        elif attempt.draft:
            fields = [k for k, v in attempt.draft.items()
                      if k in self.contract.model_fields and v not in (None, "", [], {})]
        report = HandoffReport(
            contract=self.contract.__name__,
            source_tokens=src.tokens,
            brief_tokens=brief_tokens,
            ratio=round(brief_tokens / src.tokens, 4) if src.tokens else 0.0,
            fields=fields,
            verbatim=attempt.verbatim,
            repairs=repairs,
            failure=failure,
            at=iso(self.clock()),
            compressor=self.compressor_label,
            latency_ms=round((time.perf_counter() - started) * 1000, 3),
            node=self.node_name,
            tokenizer=self.tokens.name,
            source_ref=ref,
        )
        if failure is not None:
            report["failed_fields"] = sorted(attempt.errors)
            report["draft"] = attempt.draft
        return report

    def _archive(self, src: _Source) -> tuple[dict[str, Any], str | None]:
        if self.archive is None:
            return {}, None
        passages = to_passages(src.messages)
        key = archive_key(self.target, passages)
        ref = SourceRef(key=key, contract=self.contract.__name__)
        if self.archive == "state":
            ref["passages"] = passages
        else:
            typing.cast(SourceStore, self.archive).put(key, passages)
        return {SOURCES_KEY: {self.target: ref}}, key

    def _finish(self, src: _Source, attempt: _Attempt, repairs: int, started: float,
                failure: str | None, usage: dict[str, Usage] | None = None) -> Any:
        update, ref = self._archive(src)
        report = self._report(src, attempt, repairs, started, failure, ref)
        update["handoffs"] = [report]
        if usage:
            # the compressor is a model call like any agent's: it counts in cost per run
            update["usage"] = {self.node_name: usage}
        if failure is None:
            assert attempt.contract is not None
            update[self.target] = attempt.contract
            if self.brief_to is not None:
                update[self.brief_to] = [brief_message(attempt.contract,
                                                       recall=self.archive is not None)]
            route = self.on_success
        else:
            update[self.target] = None
            if self.on_failure is None:
                raise HandoffError(failure, report, sorted(attempt.errors))
            route = self.on_failure
        if route is None:
            return update
        return Command(goto=route, update=update)

    def _failure_text(self, attempt: _Attempt, attempts: int) -> str:
        problems = "; ".join(f"{p}: {why}" for p, why in attempt.errors.items())
        fields = ", ".join(sorted(attempt.errors))
        return (f"{self.contract.__name__} handoff failed after {attempts} attempt(s); "
                f"failing fields: {fields}. {problems}")

    # ------------------------------------------------------------------ the node

    def _attempts(self, state: Any) -> Generator[tuple[Any, HandoffFeedback | None], Any, Any]:
        """The repair loop, shared by the sync and async node.

        Yields ``(source, feedback)`` for each compressor call and receives
        ``(True, output)`` or ``(False, exception)``; returns the node's result.
        """
        started = time.perf_counter()
        src = self._prepare(state)
        pre = self._precheck(src)
        if pre is not None:
            return self._finish(src, _Attempt(errors=pre[1]), 0, started, pre[0])
        feedback: HandoffFeedback | None = None
        attempt = _Attempt()
        usage: dict[str, Usage] = {}
        for n in range(self.max_repairs + 1):
            ok, out = yield src, feedback
            if ok:
                self._count(out, usage)
            # the compressor's failure is data, not a crash
            attempt = self._evaluate(out, src) if ok else self._failed_call(out)
            if attempt.contract is not None:
                return self._finish(src, attempt, n, started, None, usage)
            feedback = HandoffFeedback(n + 1, dict(attempt.errors), attempt.draft)
        return self._finish(src, attempt, self.max_repairs, started,
                            self._failure_text(attempt, self.max_repairs + 1), usage)

    def _count(self, out: Any, usage: dict[str, Usage]) -> None:
        """Add one compressor call's model usage (a chat model's message) to ``usage``."""
        msg = out.get("raw") if isinstance(out, Mapping) and "raw" in out else out
        if not isinstance(msg, AIMessage):
            return  # a plain callable: no model call to count
        meta = msg.usage_metadata
        model = (msg.response_metadata or {}).get("model_name") or \
            (msg.response_metadata or {}).get("model")
        if meta is None and not model:
            return
        model = str(model or "unknown")
        tin = int(meta["input_tokens"]) if meta else 0
        tout = int(meta["output_tokens"]) if meta else 0
        cur = usage.setdefault(model, Usage(calls=0, input_tokens=0, output_tokens=0, cost=0.0))
        cur["calls"] += 1
        cur["input_tokens"] += tin
        cur["output_tokens"] += tout
        cur["cost"] += self.pricing.cost(model, tin, tout)

    def _check_channels(self, config: RunnableConfig | None) -> None:
        # A graph whose state lacks the target (or the record keys) silently drops what
        # the handoff writes: the next agent finds no contract and nothing says why.
        keys = [self.target, "handoffs"]
        if self.archive == "state":
            keys.append(SOURCES_KEY)
        if self.brief_to is not None:
            keys.append(self.brief_to)
        missing = missing_channels(config, keys)
        if not missing:
            return
        key = missing[0]
        if key in (self.target, self.brief_to):
            fix = (f"add {key!r} to the state schema"
                   + (f" (e.g. `{key}: {self.contract.__name__} | None`)"
                      if key == self.target else ""))
        else:
            fix = "add relaygraph.nodes.HandoffState to the state schema's bases"
        raise ConfigurationError(
            f"handoff {self.node_name}: the graph's state has no {key!r} channel, so what "
            f"the handoff writes there would be dropped; {fix}")

    def _run(self, state: Any, config: RunnableConfig | None = None) -> Any:
        self._check_channels(config)
        loop = self._attempts(state)
        try:
            src, feedback = next(loop)
            while True:
                try:
                    result: tuple[bool, Any] = (True, self._call(src, feedback))
                except Exception as exc:
                    result = (False, exc)
                src, feedback = loop.send(result)
        except StopIteration as stop:
            return stop.value

    async def _arun(self, state: Any, config: RunnableConfig | None = None) -> Any:
        self._check_channels(config)
        loop = self._attempts(state)
        try:
            src, feedback = next(loop)
            while True:
                try:
                    result: tuple[bool, Any] = (True, await self._acall(src, feedback))
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    result = (False, exc)
                src, feedback = loop.send(result)
        except StopIteration as stop:
            return stop.value


class _OutputError(Exception):
    pass


async def _as_coro(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


def handoff(
    contract: type[Contract],
    *,
    source: str | Callable[[Any], Any],
    target: str,
    compressor: Compressor,
    on_success: str | None = None,
    on_failure: str | None = None,
    max_repairs: int = 2,
    timeout: float | None = 60.0,
    archive: Literal["state"] | SourceStore | None = "state",
    brief_to: str | None = None,
    max_source_tokens: int | None = None,
    tokenizer: TokenCounter | None = None,
    clock: Clock = system_clock,
    name: str | None = None,
    pricing: Pricing | None = None,
) -> HandoffNode:
    """Build a graph node that hands a source over as a validated contract.

    The node reads ``source``, asks ``compressor`` to fill ``contract``, validates the
    result, checks every :class:`Verbatim` field against the source (recording where
    each value was found), and on any failure asks again with exactly what failed, up
    to ``max_repairs`` times. It never passes bad data on.

    On success it writes the contract under ``target``, appends a ``HandoffReport`` to
    ``handoffs``, archives the raw source under ``handoff_sources[target]`` (for the
    :func:`recall_tool`) and routes to ``on_success``. On failure it writes ``None``
    under ``target``, appends a report naming the failing fields and routes to
    ``on_failure``, or raises :class:`HandoffError` when there is no ``on_failure``.
    Without a route for the outcome it returns a plain state update.

    Example::

        builder.add_node("to_resolver", handoff(
            RefundCase, source="messages", target="case", compressor=chat_model,
            on_success="resolver", on_failure="review"))

    The state needs the keys ``target``, ``handoffs`` and ``handoff_sources`` (mix
    :class:`HandoffState` into it; ``handoff_sources`` only with ``archive="state"``), and
    ``brief_to`` when given. In a graph whose state lacks one, the node raises
    ``ConfigurationError`` instead of letting LangGraph drop what it writes.

    Args:
        contract: The :class:`Contract` subclass to fill.
        source: A state key (a messages list, a string, or any value rendered as JSON),
            or a callable ``state -> messages | str``.
        target: State key that receives the validated contract.
        compressor: A LangChain chat model (used through
            ``with_structured_output(contract, include_raw=True)``); any Runnable, which
            receives ``{"messages", "transcript", "contract", "instructions", "schema",
            "feedback"}``; or a sync/async callable ``(source_messages, contract_type,
            feedback) -> contract | dict`` where ``feedback`` is None on the first try and
            a :class:`HandoffFeedback` on repairs. Runnables and models may return a
            contract, a dict, an AIMessage (tool call or JSON text) or a JSON string.
        on_success: Node to go to after a valid handoff.
        on_failure: Node to go to when the contract cannot be filled (e.g. human review).
        max_repairs: Extra attempts after the first one.
        timeout: Seconds to wait for each compressor call; None waits forever.
        archive: ``"state"`` keeps the raw source in ``handoff_sources``; a
            :class:`SourceStore` keeps it outside the state (only its key in state);
            None does not archive.
        brief_to: A messages key that receives the brief as a message, for the next agent.
        max_source_tokens: Fail without calling the compressor above this size.
        tokenizer: Token counter for the report; default tiktoken if available offline,
            else the documented approximation.
        clock: Time source for report timestamps.
        name: Node name in reports (default ``handoff:<target>``).
        pricing: Price table for the compressor's model calls, which are added to
            ``usage[name][model]`` like any agent's (default: the built-in prices).

    Returns:
        A :class:`HandoffNode`, usable directly in ``StateGraph.add_node``.

    Raises:
        ConfigurationError: Any argument that cannot work (raised here, not mid-run).
    """
    return HandoffNode(
        contract, source=source, target=target, compressor=compressor,
        on_success=on_success, on_failure=on_failure, max_repairs=max_repairs,
        timeout=timeout, archive=archive, brief_to=brief_to,
        max_source_tokens=max_source_tokens, tokenizer=tokenizer, clock=clock, name=name,
        pricing=pricing,
    )

