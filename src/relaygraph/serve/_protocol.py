"""LangGraph's client protocol: request and response models, and state ↔ JSON.

The shapes follow what ``langgraph_sdk`` sends and reads (``langgraph_sdk.schema``): a
`Thread`, a `ThreadState` with ``tasks[].interrupts``, a `Run`, an `Assistant`. Thread ids in
responses are the client's own; the saver only ever sees tenant-namespaced ids.
Responses allow extra fields (relaygraph adds ``graph_id``, ``next`` and its own status).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from fastapi import Depends, HTTPException
from langgraph.types import Interrupt, StateSnapshot
from pydantic import BaseModel, ConfigDict, Field

from relaygraph.serve._auth import Principal, require_principal
from relaygraph.serve._context import ServerContext, get_context
from relaygraph.serve._json import to_json
from relaygraph.serve._runstore import RunRecord, ThreadMeta, iso
from relaygraph.serve._tenancy import external_thread_id, internal_thread_id

MultitaskStrategy = Literal["reject", "interrupt", "rollback", "enqueue"]
SdkThreadStatus = Literal["idle", "busy", "interrupted", "error"]
StreamModeName = Literal["values", "messages", "updates", "events", "tasks", "checkpoints",
                         "debug", "custom", "messages-tuple", "tools", "lifecycle"]

# relaygraph's thread status (relaygraph.observe.thread_status) → the SDK's. The SDK's
# "interrupted" covers both a pause (an interrupt or a breakpoint: relaygraph's "waiting")
# and work left by a run that stopped (relaygraph's "interrupted"); the Thread carries
# relaygraph's own status as ``relaygraph_status``.
_SDK_STATUS: dict[str, SdkThreadStatus] = {
    "running": "busy", "waiting": "interrupted", "interrupted": "interrupted",
    "failed": "error", "error": "error", "finished": "idle",
}
# and back, for search filters
SDK_TO_RELAYGRAPH: dict[str, list[str]] = {
    "busy": ["running"], "interrupted": ["waiting", "interrupted"],
    "error": ["failed", "error"], "idle": ["finished", "unknown"],
}


MAX_OFFSET = 2**63 - 1
"""The largest page offset: SQL's OFFSET takes a signed 64-bit integer on every database."""


def sdk_status(status: str) -> SdkThreadStatus:
    return _SDK_STATUS.get(status, "idle")


class _Body(BaseModel):
    # newer clients may send fields this server does not know: ignore them, validate the rest
    model_config = ConfigDict(extra="ignore")


class _Out(BaseModel):
    model_config = ConfigDict(extra="allow")


# ------------------------------------------------------------------------------- bodies


class CheckpointRef(_Body):
    thread_id: str | None = None
    checkpoint_ns: str = ""
    checkpoint_id: str | None = None
    checkpoint_map: dict[str, Any] | None = None


class ThreadCreate(_Body):
    thread_id: str | None = None
    metadata: dict[str, Any] | None = None
    if_exists: Literal["raise", "do_nothing"] | None = None
    graph_id: str | None = None
    ttl: dict[str, Any] | None = None
    supersteps: list[dict[str, Any]] | None = None


class ThreadPatch(_Body):
    metadata: dict[str, Any] = Field(default_factory=dict)
    ttl: dict[str, Any] | None = None


class ThreadSearch(_Body):
    metadata: dict[str, Any] | None = None
    values: dict[str, Any] | None = None
    ids: list[str] | None = None
    status: SdkThreadStatus | None = None
    limit: int = Field(10, ge=1, le=1000)
    offset: int = Field(0, ge=0, le=MAX_OFFSET)
    sort_by: Literal["thread_id", "status", "created_at", "updated_at",
                     "state_updated_at"] | None = None
    sort_order: Literal["asc", "desc"] | None = None
    select: list[str] | None = None
    extract: dict[str, str] | None = None


class ThreadCount(_Body):
    metadata: dict[str, Any] | None = None
    values: dict[str, Any] | None = None
    status: SdkThreadStatus | None = None


class StateAtCheckpoint(_Body):
    checkpoint: CheckpointRef
    subgraphs: bool = False


class StateUpdate(_Body):
    values: Any = None
    as_node: str | None = None
    checkpoint: CheckpointRef | None = None
    checkpoint_id: str | None = None


class HistoryRequest(_Body):
    limit: int = Field(10, ge=1, le=1000)
    before: str | CheckpointRef | None = None
    metadata: dict[str, Any] | None = None
    checkpoint: CheckpointRef | None = None


class CommandBody(_Body):
    resume: Any = None
    update: Any = None
    goto: Any = None

    def check(self) -> None:
        check_command(self.resume, self.update, self.goto, "command")


def check_command(resume: Any, update: Any, goto: Any, what: str) -> None:
    """BadRequest (422) for a command with nothing to do: LangGraph would fail it inside
    the run, not up front (the protocol's runs and LangServe's inputs alike)."""
    from relaygraph.serve._errors import BadRequest

    if resume is None and update in (None, {}, []) and goto in (None, [], ""):
        raise BadRequest(f"{what} needs a resume value, an update or a goto; got none "
                         "(a null resume resumes nothing)")


class RunCreate(_Body):
    assistant_id: str = Field(min_length=1, max_length=64)
    input: dict[str, Any] | list[Any] | None = None
    command: CommandBody | None = None
    stream_mode: StreamModeName | list[StreamModeName] = "values"
    stream_subgraphs: bool = False
    stream_resumable: bool = False
    metadata: dict[str, Any] | None = None
    config: dict[str, Any] | None = None
    context: dict[str, Any] | None = None
    checkpoint: CheckpointRef | None = None
    checkpoint_id: str | None = None
    interrupt_before: Literal["*"] | list[str] | None = None
    interrupt_after: Literal["*"] | list[str] | None = None
    multitask_strategy: MultitaskStrategy | None = None
    if_not_exists: Literal["create", "reject"] | None = None
    on_disconnect: Literal["cancel", "continue"] | None = None
    on_completion: Literal["delete", "keep"] | None = None
    after_seconds: float | None = Field(None, ge=0, le=3600)
    webhook: str | None = None
    durability: Literal["sync", "async", "exit"] | None = None

    def modes(self) -> list[str]:
        return [self.stream_mode] if isinstance(self.stream_mode, str) else list(
            self.stream_mode)


class RunBatchItem(RunCreate):
    thread_id: str | None = None


class RunCancelMany(_Body):
    thread_id: str | None = None
    run_ids: list[str] | None = None
    status: Literal["pending", "running", "all"] | None = None


class ThreadPrune(_Body):
    thread_ids: list[str] = Field(min_length=1, max_length=1000)
    strategy: Literal["delete", "keep_latest"] = "delete"


class AssistantSearch(_Body):
    metadata: dict[str, Any] | None = None
    graph_id: str | None = None
    name: str | None = None
    limit: int = Field(10, ge=1, le=1000)
    offset: int = Field(0, ge=0, le=MAX_OFFSET)
    sort_by: str | None = None
    sort_order: Literal["asc", "desc"] | None = None
    select: list[str] | None = None


class AssistantCount(_Body):
    metadata: dict[str, Any] | None = None
    graph_id: str | None = None
    name: str | None = None


class AssistantCreate(_Body):
    graph_id: str | None = None
    assistant_id: str | None = None
    config: dict[str, Any] | None = None
    context: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    if_exists: Literal["raise", "do_nothing"] | None = None
    name: str | None = None
    description: str | None = None


# ------------------------------------------------------------------------------ responses


class CheckpointOut(_Out):
    thread_id: str
    checkpoint_ns: str = ""
    checkpoint_id: str | None = None
    checkpoint_map: dict[str, Any] | None = None


class InterruptOut(_Out):
    value: Any = None
    id: str


class TaskOut(_Out):
    id: str
    name: str
    error: str | None = None
    interrupts: list[InterruptOut] = Field(default_factory=list)
    checkpoint: CheckpointOut | None = None
    state: Any = None
    result: Any = None


class ThreadStateOut(_Out):
    values: Any
    next: list[str]
    checkpoint: CheckpointOut
    metadata: dict[str, Any] | None = None
    created_at: str | None = None
    parent_checkpoint: CheckpointOut | None = None
    tasks: list[TaskOut] = Field(default_factory=list)
    interrupts: list[InterruptOut] = Field(default_factory=list)


class ThreadOut(_Out):
    thread_id: str
    created_at: str
    updated_at: str
    metadata: dict[str, Any]
    status: SdkThreadStatus
    values: Any = None
    interrupts: dict[str, list[InterruptOut]] = Field(default_factory=dict)
    graph_id: str | None = None
    next: list[str] = Field(default_factory=list)
    relaygraph_status: str | None = None
    error: str | None = None


class RunOut(_Out):
    run_id: str
    thread_id: str
    assistant_id: str
    created_at: str
    updated_at: str
    status: Literal["pending", "running", "error", "success", "timeout", "interrupted"]
    metadata: dict[str, Any]
    multitask_strategy: MultitaskStrategy
    kwargs: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None


class AssistantOut(_Out):
    assistant_id: str
    graph_id: str
    config: dict[str, Any] = Field(default_factory=dict)
    context: dict[str, Any] = Field(default_factory=dict)
    created_at: str
    updated_at: str
    metadata: dict[str, Any] = Field(default_factory=dict)
    version: int = 1
    name: str
    description: str | None = None


class UpdateStateOut(_Out):
    checkpoint: CheckpointOut


class GraphSchemaOut(_Out):
    graph_id: str
    input_schema: dict[str, Any] | None = None
    output_schema: dict[str, Any] | None = None
    state_schema: dict[str, Any] | None = None
    config_schema: dict[str, Any] | None = None
    context_schema: dict[str, Any] | None = None


# ---------------------------------------------------------------------------- conversions


def interrupt_json(intr: Interrupt) -> dict[str, Any]:
    out: dict[str, Any] = {"value": to_json(intr.value), "id": intr.id}
    schema = getattr(intr, "response_schema", None)
    if isinstance(schema, dict):
        out["response_schema"] = schema
    return out


def _checkpoint(config: Mapping[str, Any] | None, external: str) -> CheckpointOut | None:
    if not config:
        return None
    conf = config.get("configurable") or {}
    return CheckpointOut(thread_id=external, checkpoint_ns=conf.get("checkpoint_ns") or "",
                         checkpoint_id=conf.get("checkpoint_id"),
                         checkpoint_map=conf.get("checkpoint_map"))


def _metadata_out(metadata: Mapping[str, Any] | None, internal: str, external: str
                  ) -> dict[str, Any]:
    out = to_json(dict(metadata or {}))
    if out.get("thread_id") == internal:
        out["thread_id"] = external
    return out  # type: ignore[no-any-return]


def state_out(snap: StateSnapshot, internal: str, external: str) -> ThreadStateOut:
    """A `StateSnapshot` as the SDK's ``ThreadState`` (client thread ids)."""
    tasks = []
    for t in snap.tasks:
        sub_state: Any = None
        sub_ckpt = None
        if isinstance(t.state, StateSnapshot):
            sub_state = state_out(t.state, internal, external)
        elif isinstance(t.state, Mapping):
            sub_ckpt = _checkpoint(t.state, external)
        tasks.append(TaskOut(
            id=t.id, name=t.name,
            error=None if t.error is None else f"{type(t.error).__name__}: {t.error}"
            if isinstance(t.error, BaseException) else str(t.error),
            interrupts=[InterruptOut(**interrupt_json(i)) for i in t.interrupts],
            checkpoint=sub_ckpt, state=sub_state, result=to_json(t.result)))
    checkpoint = _checkpoint(snap.config, external) or CheckpointOut(thread_id=external)
    return ThreadStateOut(
        values=to_json(snap.values), next=list(snap.next), checkpoint=checkpoint,
        metadata=_metadata_out(snap.metadata, internal, external),
        created_at=snap.created_at, parent_checkpoint=_checkpoint(snap.parent_config, external),
        tasks=tasks, interrupts=[InterruptOut(**interrupt_json(i)) for i in snap.interrupts])


def thread_out(external: str, meta: ThreadMeta | None, snap: StateSnapshot | None,
               status: str, *, graph_id: str | None, fallback_time: float) -> ThreadOut:
    """The SDK's ``Thread``; ``status`` is relaygraph's (`relaygraph.observe`)."""
    interrupts: dict[str, list[InterruptOut]] = {}
    if snap is not None:
        for t in snap.tasks:
            if t.interrupts:
                interrupts[t.id] = [InterruptOut(**interrupt_json(i)) for i in t.interrupts]
    created = meta.created_at if meta is not None else fallback_time
    updated = meta.updated_at if meta is not None else fallback_time
    updated_iso = iso(updated)
    if snap is not None and snap.created_at and snap.created_at > updated_iso:
        updated_iso = snap.created_at
    metadata = dict(meta.metadata) if meta is not None else {}
    if graph_id is not None:
        metadata.setdefault("graph_id", graph_id)
    return ThreadOut(
        thread_id=external, created_at=iso(created), updated_at=updated_iso,
        metadata=to_json(metadata), status=sdk_status(status),
        values=to_json(snap.values) if snap is not None else None, interrupts=interrupts,
        graph_id=graph_id, next=list(snap.next) if snap is not None else [],
        relaygraph_status=status,
    )


def run_out(rec: RunRecord, external: str) -> RunOut:
    return RunOut(run_id=rec.run_id, thread_id=external, assistant_id=rec.assistant_id,
                  created_at=iso(rec.created_at), updated_at=iso(rec.updated_at),
                  status=rec.status,  # type: ignore[arg-type]
                  metadata=rec.metadata,
                  multitask_strategy=rec.multitask_strategy,  # type: ignore[arg-type]
                  error=rec.error)


# ---------------------------------------------------------------------------- dependencies


class Caller:
    """The authenticated principal and the server context, with thread id mapping."""

    def __init__(self, principal: Principal, ctx: ServerContext) -> None:
        self.principal = principal
        self.ctx = ctx

    @property
    def tenant(self) -> str:
        return self.principal.tenant

    def internal(self, thread_id: str) -> str:
        return internal_thread_id(self.principal, thread_id)

    def external(self, internal: str) -> str:
        return external_thread_id(self.principal, internal)

    def graph(self, assistant_id: str) -> Any:
        if assistant_id not in self.ctx.graphs:
            raise HTTPException(
                404, f"assistant {assistant_id!r} not found; this server serves "
                     f"{', '.join(sorted(self.ctx.graphs))} (assistant id = graph name)")
        return self.ctx.graphs[assistant_id]


def get_caller(principal: Annotated[Principal, Depends(require_principal)],
               ctx: Annotated[ServerContext, Depends(get_context)]) -> Caller:
    """FastAPI dependency: who is calling, on which server."""
    return Caller(principal, ctx)


CallerDep = Annotated[Caller, Depends(get_caller)]
