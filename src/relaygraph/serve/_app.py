"""The HTTP app: LangServe routes per graph, thread and review endpoints, a review inbox."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import HTMLResponse
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.types import StateSnapshot

from relaygraph._errors import ConfigurationError
from relaygraph.serve._inbox import render_inbox
from relaygraph.serve._reviews import (
    InvalidReviewDecision,
    NotWaitingForReview,
    ReviewDecision,
    asubmit_review,
    is_review_request,
)
from relaygraph.serve._threads import (
    GRAPH_ID_KEY,
    ahistory_steps,
    alist_threads,
    athread_graph_id,
    interrupt_dicts,
    thread_config,
)

_CONFIG_PASSTHROUGH = ("thread_id", "checkpoint_id", "checkpoint_ns")


def to_json(value: Any) -> Any:
    """Make state values JSON-ready (messages and contracts become dicts, decimals strings)."""
    return jsonable_encoder(value, custom_encoder={Decimal: str, bytes: lambda b: b.hex()})


def _json_default(obj: Any) -> Any:
    from pydantic import BaseModel

    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json")
    if isinstance(obj, Decimal):
        return str(obj)
    if isinstance(obj, set | frozenset):
        return sorted(obj, key=repr)
    raise TypeError(f"cannot serialize {type(obj).__name__} to JSON")


def _langserve_serializer() -> Any:
    import orjson
    from langserve.serialization import WellKnownLCSerializer

    class StateSerializer(WellKnownLCSerializer):
        """LangServe's serializer, plus contracts with decimals, dates and enums."""

        def dumps(self, obj: Any) -> bytes:
            return orjson.dumps(obj, default=_json_default)

    return StateSerializer()


def _thread_config_modifier(graph_id: str) -> Any:
    async def modify(config: dict[str, Any], request: Request) -> dict[str, Any]:
        # LangServe keeps only the runnable's declared configurable fields; a checkpointed
        # graph also needs the thread id, so copy it from the raw request body.
        try:
            body = await request.json()
        except ValueError:
            body = {}
        sent = body.get("config") if isinstance(body, dict) else None
        sent_conf = sent.get("configurable") if isinstance(sent, dict) else None
        conf = dict(config.get("configurable") or {})
        if isinstance(sent_conf, dict):
            for key in _CONFIG_PASSTHROUGH:
                if key in sent_conf and sent_conf[key] is not None:
                    conf[key] = str(sent_conf[key])
        metadata = {**(config.get("metadata") or {}), GRAPH_ID_KEY: graph_id}
        return {**config, "configurable": conf, "metadata": metadata}

    return modify


def _state_json(snap: StateSnapshot, graph_id: str | None) -> dict[str, Any]:
    return {
        "thread_id": snap.config["configurable"].get("thread_id"),
        "graph_id": graph_id,
        "checkpoint_id": snap.config["configurable"].get("checkpoint_id"),
        "step": (snap.metadata or {}).get("step"),
        "created_at": snap.created_at,
        "next": list(snap.next),
        "interrupts": to_json(interrupt_dicts(snap.interrupts)),
        "values": to_json(snap.values),
    }


def create_app(
    graphs: Mapping[str, Any],
    *,
    checkpointer: BaseCheckpointSaver,
    title: str = "relaygraph",
    langserve_routes: bool = True,
    app: FastAPI | None = None,
) -> FastAPI:
    """Serve compiled graphs with LangServe, plus thread, review and inbox endpoints.

    Routes:
        * ``/graphs/{name}/invoke``, ``/stream``, ... : LangServe, per graph. Pass the thread
          in ``config.configurable.thread_id``; it is recorded with the graph id.
        * ``GET /threads``: threads, newest first, with status.
        * ``GET /threads/{thread_id}``: the current state.
        * ``GET /threads/{thread_id}/history``: steps, oldest first.
        * ``GET /threads/{thread_id}/timeline``: the run timeline (``relaygraph.observe``).
        * ``GET /reviews``: threads paused on a human review.
        * ``POST /reviews/{thread_id}``: submit a decision (422 malformed, 409 not waiting).
        * ``GET /inbox``: a review inbox page for browsers.

    Args:
        graphs: compiled graphs by name (the name is the URL segment and the graph id).
        checkpointer: the saver every graph was compiled with; it must implement the async
            methods (``AsyncSQLAlchemySaver`` or ``InMemorySaver``).
        title: the app title.
        langserve_routes: add LangServe routes (needs the ``serve`` extra).
        app: add the routes to this app instead of a new one.

    Raises:
        ConfigurationError: no graphs, a name that is not URL-safe, or a graph compiled
            without a checkpointer.

    Example::

        app = create_app({"refund": graph}, checkpointer=saver)
    """
    if not graphs:
        raise ConfigurationError("create_app needs at least one graph, got an empty mapping")
    for name, graph in graphs.items():
        if not name or not all(c.isalnum() or c in "-_" for c in name):
            raise ConfigurationError(
                f"graph names are used in URLs and must be letters, digits, '-' or '_', "
                f"got {name!r}")
        if getattr(graph, "checkpointer", None) is None:
            raise ConfigurationError(
                f"graph {name!r} has no checkpointer; compile it with "
                f"builder.compile(checkpointer=saver) using the saver passed to create_app")
    graphs = dict(graphs)
    app = app or FastAPI(title=title)

    if langserve_routes:
        try:
            from langserve import add_routes
        except ImportError as exc:  # pragma: no cover - depends on the environment
            from relaygraph._errors import MissingDependencyError

            raise MissingDependencyError("langserve", "serve", "create_app") from exc
        serializer = _langserve_serializer()
        for name, graph in graphs.items():
            add_routes(app, graph, path=f"/graphs/{name}", input_type=dict[str, Any],
                       output_type=dict[str, Any],
                       disabled_endpoints=["batch", "config_hashes"], serializer=serializer,
                       per_req_config_modifier=_thread_config_modifier(name))

    async def resolve(thread_id: str) -> tuple[str, Any]:
        try:
            gid = await athread_graph_id(checkpointer, thread_id)
        except KeyError:
            raise HTTPException(404, f"thread {thread_id!r} not found") from None
        if gid is None and len(graphs) == 1:
            gid = next(iter(graphs))
        if gid not in graphs:
            raise HTTPException(404, f"thread {thread_id!r} belongs to graph {gid!r}, which "
                                f"this server does not serve ({', '.join(sorted(graphs))})")
        return gid, graphs[gid]

    async def pending_reviews() -> list[dict[str, Any]]:
        out = []
        for th in await alist_threads(checkpointer, graphs):
            for intr in th.interrupts:
                if is_review_request(intr["value"]):
                    out.append({"thread_id": th.thread_id, "graph_id": th.graph_id,
                                "interrupt_id": intr["id"], "updated_at": th.updated_at,
                                "request": to_json(intr["value"])})
        return out

    @app.get("/threads", tags=["threads"])
    async def list_threads_route(
        graph: str | None = None, limit: int = Query(100, ge=1, le=10_000),
    ) -> list[dict[str, Any]]:
        """Threads, newest first, with their status."""
        threads = await alist_threads(checkpointer, graphs,
                                      limit=limit if graph is None else None)
        rows = [t.as_dict() for t in threads if graph is None or t.graph_id == graph]
        return to_json(rows[:limit])

    @app.get("/threads/{thread_id}", tags=["threads"])
    async def get_thread(thread_id: str) -> dict[str, Any]:
        """The thread's current state, next nodes and open interrupts."""
        gid, g = await resolve(thread_id)
        return _state_json(await g.aget_state(thread_config(thread_id)), gid)

    @app.get("/threads/{thread_id}/history", tags=["threads"])
    async def get_history(thread_id: str) -> list[dict[str, Any]]:
        """What ran, step by step, oldest first."""
        _, g = await resolve(thread_id)
        return to_json(await ahistory_steps(g, thread_config(thread_id)))

    @app.get("/threads/{thread_id}/timeline", tags=["threads"])
    async def get_timeline(thread_id: str) -> Any:
        """The run timeline: steps, handoffs, guard decisions, reviews, tokens and cost."""
        _, g = await resolve(thread_id)
        return to_json(await _timeline(g, thread_id))

    @app.get("/reviews", tags=["reviews"])
    async def list_reviews() -> list[dict[str, Any]]:
        """Threads paused on a human review, newest first."""
        return await pending_reviews()

    @app.post("/reviews/{thread_id}", tags=["reviews"])
    async def submit_review(thread_id: str, decision: ReviewDecision,
                            interrupt_id: str | None = None) -> dict[str, Any]:
        """Resume a thread paused on a human review with a decision.

        The body is ``{"action": "approve"}``, ``{"action": "edit", "edits": {...}}`` or
        ``{"action": "reject", "reason": "..."}``, with optional ``reviewer`` and
        ``comment``. A thread waiting on several reviews needs ``?interrupt_id=``.
        """
        gid, g = await resolve(thread_id)
        config = thread_config(thread_id, gid)
        try:
            await asubmit_review(g, config, decision, interrupt_id=interrupt_id)
        except NotWaitingForReview as exc:
            raise HTTPException(409, str(exc)) from None
        except InvalidReviewDecision as exc:
            raise HTTPException(422, [{"loc": ["body"], "msg": str(exc),
                                       "type": "invalid_review_decision"}]) from None
        return _state_json(await g.aget_state(config), gid)

    @app.get("/inbox", response_class=HTMLResponse, tags=["reviews"])
    async def inbox() -> HTMLResponse:
        """A review inbox for browsers: pending reviews with approve / edit / reject."""
        return HTMLResponse(render_inbox(await pending_reviews(), title=title))

    return app


async def _timeline(graph: Any, thread_id: str) -> Any:
    from relaygraph.observe import atimeline

    return (await atimeline(graph, thread_config(thread_id))).to_dict()
