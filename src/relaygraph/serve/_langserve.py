"""LangServe routes per graph, on a thread, under the same lease, auth and limits.

Each graph is wrapped in `ServedGraph`, a runnable that:

* declares ``thread_id`` as a configurable field, so the playground and ``RemoteRunnable``
  can run a checkpointed graph (``config={"configurable": {"thread_id": ...}}``);
* namespaces the thread id by the caller's tenant;
* turns a ``Command(resume=...)`` (which ``RemoteRunnable`` sends as a dict with the keys
  ``graph, update, resume, goto``) into a resume of the waiting run; a review is resumed
  through the same decision path as ``POST /reviews`` (validated, reviewer = caller);
* answers 409 to new input on a thread that waits on an interrupt: the run is never
  silently restarted; resume it with ``Command(resume=...)`` instead;
* runs under the thread's lease (``reject``: a busy thread gets 409), with the run timeout
  and the shutdown drain.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

from fastapi import Depends, FastAPI, Request
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.runnables.utils import ConfigurableFieldSpec
from langgraph.errors import GraphDrained
from langgraph.types import Command

from relaygraph.serve._auth import require_principal_or_session
from relaygraph.serve._errors import (
    BadRequest,
    RunStopped,
    ThreadNotWaiting,
    ThreadWaiting,
    WrongGraph,
    busy_error,
)
from relaygraph.serve._json import json_default
from relaygraph.serve._limits import valid_json_text
from relaygraph.serve._protocol import check_command
from relaygraph.serve._reviews import is_review_request, review_command
from relaygraph.serve._runner import hold_thread, tenant_of
from relaygraph.serve._tenancy import internal_thread_id

_COMMAND_KEYS = frozenset({"graph", "update", "resume", "goto"})
_PRINCIPAL_KEY = "__relaygraph_reviewer"


def as_command(value: Any) -> Command | None:
    """A ``Command`` as ``RemoteRunnable`` sends it (its dataclass fields as a dict)."""
    if isinstance(value, Command):
        return value
    if isinstance(value, dict) and set(value) == _COMMAND_KEYS:
        if value.get("graph") not in (None, Command.PARENT):
            raise BadRequest("Command.graph is not supported over HTTP")
        goto = value.get("goto")
        check_command(value.get("resume"), value.get("update"), goto, "the Command")
        return Command(resume=value.get("resume"), update=value.get("update"),
                       goto=goto if goto not in (None, []) else ())
    return None


def check_messages(value: Any) -> None:
    """Refuse input messages LangChain cannot read (422), before anything is written."""
    if not isinstance(value, dict) or "messages" not in value:
        return
    from langchain_core.messages import convert_to_messages

    msgs = value["messages"]
    if not isinstance(msgs, list):
        msgs = [msgs]
    try:
        convert_to_messages(msgs)
    except (ValueError, TypeError, NotImplementedError, KeyError) as exc:
        raise BadRequest(f"input.messages: {str(exc).splitlines()[0][:300]}") from None


class ServedGraph(Runnable[Any, Any]):
    """A compiled graph served through LangServe (see the module docstring)."""

    def __init__(self, ctx: Any, name: str, graph: Any) -> None:
        self.ctx = ctx
        self.name = name
        self.graph = graph

    @property
    def InputType(self) -> Any:  # noqa: N802 - Runnable's API
        return dict[str, Any] | None

    @property
    def OutputType(self) -> Any:  # noqa: N802 - Runnable's API
        return dict[str, Any]

    @property
    def config_specs(self) -> list[ConfigurableFieldSpec]:
        return [ConfigurableFieldSpec(
            id="thread_id", annotation=str, name="Thread ID",
            description="The conversation thread: runs on one thread continue its state.",
            default="", is_shared=True)]

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        raise NotImplementedError("the served graph runs on the server's event loop: "
                                  "use ainvoke")

    def _thread(self, config: RunnableConfig | None) -> tuple[str, RunnableConfig]:
        conf = dict((config or {}).get("configurable") or {})
        internal = conf.get("thread_id")
        if not internal:
            raise BadRequest("config.configurable.thread_id is required: the graph keeps its "
                             "state per thread")
        conf.pop(_PRINCIPAL_KEY, None)
        metadata = {**((config or {}).get("metadata") or {}), "graph_id": self.name}
        return internal, {**(config or {}), "configurable": conf,  # type: ignore[typeddict-item]
                          "metadata": metadata}

    async def _prepare(self, input: Any, config: RunnableConfig, internal: str,
                       reviewer: str) -> Any:
        """Check the thread against the input; returns what to pass to the graph."""
        row = await self.ctx.threads.aget(internal)
        if row is not None and row.graph_id not in (None, self.name):
            raise WrongGraph(f"thread belongs to graph {row.graph_id!r}, not {self.name!r}")
        snapshot = await self.graph.aget_state(config)
        command = as_command(input)
        waiting = [i for t in snapshot.tasks for i in t.interrupts]
        if command is not None:
            if command.resume is None:
                return command
            if not waiting:
                raise ThreadNotWaiting(
                    f"thread is not waiting on an interrupt (next: {list(snapshot.next)}); "
                    f"there is nothing to resume")
            if any(is_review_request(i.value) for i in waiting):
                resume = command.resume
                intr_id = None
                if isinstance(resume, dict) and len(resume) == 1:
                    (key, val), = resume.items()
                    if any(i.id == key for i in waiting):
                        intr_id, resume = key, val
                return review_command(self.graph, snapshot, config, resume, reviewer, intr_id)
            return command
        if waiting:
            raise ThreadWaiting(
                "thread is waiting on an interrupt (a review or a question); new input would "
                "restart it: resume it with Command(resume=...) or POST /reviews/{thread_id}")
        check_messages(input)
        return input

    async def precheck(self, input: Any, config: RunnableConfig) -> None:
        """Refuse, before a stream starts, what `_run` would refuse (nothing is written)."""
        reviewer = str((config.get("configurable") or {}).get(_PRINCIPAL_KEY) or "")
        internal, cfg = self._thread(config)
        held = await self.ctx.leases.acurrent(internal)
        if held is not None:
            raise busy_error(internal, held.holder, held.expires_at)
        await self._prepare(input, cfg, internal, reviewer)

    @contextlib.asynccontextmanager
    async def _run(self, input: Any, config: RunnableConfig | None
                   ) -> AsyncIterator[tuple[Any, RunnableConfig, Any]]:
        reviewer = str(((config or {}).get("configurable") or {}).get(_PRINCIPAL_KEY) or "")
        internal, cfg = self._thread(config)
        async with hold_thread(self.ctx, internal, graph_id=self.name) as held:
            graph_input = await self._prepare(input, cfg, internal, reviewer)
            try:
                yield graph_input, cfg, held
            except GraphDrained as exc:
                raise RunStopped(internal.split("/", 1)[-1], exc.reason,
                                 timeout=self.ctx.settings.run_timeout) from None

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None,
                      **kwargs: Any) -> Any:
        async with self._run(input, config) as (graph_input, cfg, held):
            return await self.graph.ainvoke(graph_input, held.config(cfg),
                                         control=held.control)

    def stream(self, input: Any, config: RunnableConfig | None = None,
               **kwargs: Any) -> Iterator[Any]:
        raise NotImplementedError("use astream")

    async def astream(self, input: Any, config: RunnableConfig | None = None,
                      **kwargs: Any) -> AsyncIterator[Any]:
        async with self._run(input, config) as (graph_input, cfg, held):
            async for chunk in self.graph.astream(graph_input, held.config(cfg),
                                                   control=held.control):
                yield chunk


def _serializer() -> Any:
    import orjson
    from langserve.serialization import WellKnownLCSerializer

    class StateSerializer(WellKnownLCSerializer):
        """LangServe's serializer, plus contracts with decimals, dates and enums."""

        def dumps(self, obj: Any) -> bytes:
            return orjson.dumps(obj, default=json_default)

    return StateSerializer()


_STREAMS = frozenset({"stream", "stream_events", "stream_log"})


def _config_modifier(served: ServedGraph) -> Any:
    async def modify(config: dict[str, Any], request: Request) -> dict[str, Any]:
        principal = await require_principal_or_session(request)
        conf = dict(config.get("configurable") or {})
        sent = conf.get("thread_id")
        if sent not in (None, ""):
            conf["thread_id"] = internal_thread_id(principal, str(sent) if not isinstance(
                sent, str) else sent)
        else:
            conf.pop("thread_id", None)
        conf[_PRINCIPAL_KEY] = principal.reviewer
        out = {**config, "configurable": conf}
        if request.url.path.rsplit("/", 1)[-1] in _STREAMS:
            # a stream's response has started before the run does: LangServe would report
            # any refusal as an "error" event with status 500; check what can be checked
            # now, so that client mistakes get their 4xx
            body = await request.json()
            await served.precheck(body.get("input") if isinstance(body, dict) else None,
                                  out)  # type: ignore[arg-type]
        return out

    return modify


def add_langserve_routes(app: FastAPI, ctx: Any) -> None:
    """LangServe's routes for every graph under ``/graphs/{name}``."""
    try:
        from langserve import add_routes
    except ImportError as exc:  # pragma: no cover - depends on the environment
        from relaygraph._errors import MissingDependencyError

        raise MissingDependencyError("langserve", "serve", "create_app") from exc
    serializer = _serializer()
    for name, graph in ctx.graphs.items():
        served = ServedGraph(ctx, name, graph)
        add_routes(app, served, path=f"/graphs/{name}",
                   input_type=dict[str, Any] | None,  # type: ignore[arg-type]
                   output_type=dict[str, Any],
                   config_keys=("configurable",),
                   disabled_endpoints=["config_hashes"], serializer=serializer,
                   per_req_config_modifier=_config_modifier(served),
                   dependencies=[Depends(require_principal_or_session),
                                 Depends(valid_json_text)])


__all__ = ["ServedGraph", "add_langserve_routes", "as_command", "tenant_of"]
