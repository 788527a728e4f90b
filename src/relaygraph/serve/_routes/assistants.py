"""Assistants (LangGraph's client protocol): one per served graph, ``assistant_id`` = its name.

Assistants here are fixed by the server's configuration: they can be read, searched, drawn
and described, not created or changed over HTTP.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, HTTPException, Query

from relaygraph.serve._protocol import (
    AssistantCount,
    AssistantCreate,
    AssistantOut,
    AssistantSearch,
    CallerDep,
    GraphSchemaOut,
)

router = APIRouter(tags=["assistants"])

_STARTED = time.time()


def _assistant(name: str, graph: Any) -> AssistantOut:
    from relaygraph.serve._runstore import iso

    doc = getattr(graph, "description", None)
    return AssistantOut(assistant_id=name, graph_id=name, created_at=iso(_STARTED),
                        updated_at=iso(_STARTED), metadata={"created_by": "system"},
                        name=name, description=doc if isinstance(doc, str) else None)


def _matches(a: AssistantOut, graph_id: str | None, name: str | None,
             metadata: dict[str, Any] | None) -> bool:
    if graph_id is not None and a.graph_id != graph_id:
        return False
    if name is not None and name.lower() not in a.name.lower():
        return False
    return all(a.metadata.get(k) == v for k, v in (metadata or {}).items())


@router.post("/assistants/search", response_model=list[AssistantOut])
async def search_assistants(body: AssistantSearch, *, caller: CallerDep
                            ) -> list[AssistantOut]:
    """Served graphs as assistants, by name."""
    found = [a for n, g in sorted(caller.ctx.graphs.items())
             if _matches(a := _assistant(n, g), body.graph_id, body.name, body.metadata)]
    if body.sort_order == "desc":
        found.reverse()
    return found[body.offset:body.offset + body.limit]


@router.post("/assistants/count", response_model=int)
async def count_assistants(body: AssistantCount, *, caller: CallerDep) -> int:
    return sum(_matches(_assistant(n, g), body.graph_id, body.name, body.metadata)
               for n, g in caller.ctx.graphs.items())


@router.post("/assistants", response_model=AssistantOut)
async def create_assistant(body: AssistantCreate, *, caller: CallerDep
                           ) -> AssistantOut:
    """Only the served graphs' own assistants exist; asking for one of them returns it."""
    gid = body.graph_id or body.assistant_id
    if gid in caller.ctx.graphs and body.if_exists == "do_nothing" and (
            body.assistant_id in (None, gid)):
        return _assistant(gid, caller.ctx.graphs[gid])
    raise HTTPException(
        409 if gid in caller.ctx.graphs else 422,
        "assistants are fixed by the server's configuration: one per served graph "
        f"({', '.join(sorted(caller.ctx.graphs))}); create with if_exists='do_nothing' "
        "returns an existing one")


@router.patch("/assistants/{assistant_id}")
@router.delete("/assistants/{assistant_id}")
@router.post("/assistants/{assistant_id}/latest")
async def change_assistant(assistant_id: str, *, caller: CallerDep) -> None:
    """Assistants cannot be changed over HTTP (405 with the reason)."""
    caller.graph(assistant_id)
    raise HTTPException(405, "assistants are fixed by the server's configuration: one per "
                             "served graph; change the graph and restart the server")


@router.get("/assistants/{assistant_id}", response_model=AssistantOut)
async def get_assistant(assistant_id: str, *, caller: CallerDep
                        ) -> AssistantOut:
    return _assistant(assistant_id, caller.graph(assistant_id))


@router.post("/assistants/{assistant_id}/versions", response_model=list[AssistantOut])
async def assistant_versions(assistant_id: str, *, caller: CallerDep
                             ) -> list[AssistantOut]:
    return [_assistant(assistant_id, caller.graph(assistant_id))]


@router.get("/assistants/{assistant_id}/graph")
async def get_assistant_graph(assistant_id: str, xray: int | bool = Query(False),
                              *, caller: CallerDep) -> dict[str, Any]:
    """The graph's nodes and edges (LangChain's drawable graph JSON)."""
    graph = caller.graph(assistant_id)
    drawn = graph.get_graph(xray=xray)
    return drawn.to_json()  # type: ignore[no-any-return]


@router.get("/assistants/{assistant_id}/schemas", response_model=GraphSchemaOut)
async def get_assistant_schemas(assistant_id: str, *, caller: CallerDep
                                ) -> GraphSchemaOut:
    """JSON schemas of the graph's input, output, state, config and context."""
    graph = caller.graph(assistant_id)

    def schema(make: Any) -> dict[str, Any] | None:
        try:
            out = make()
        except Exception:  # noqa: BLE001 - "missing if unable to generate", as the SDK says
            return None
        return out if isinstance(out, dict) else None

    return GraphSchemaOut(
        graph_id=assistant_id,
        input_schema=schema(graph.get_input_jsonschema),
        output_schema=schema(graph.get_output_jsonschema),
        state_schema=schema(lambda: graph.get_output_jsonschema()),
        config_schema=schema(graph.get_config_jsonschema),
        context_schema=schema(lambda: graph.get_context_jsonschema()),
    )


@router.get("/assistants/{assistant_id}/subgraphs")
async def get_assistant_subgraphs(assistant_id: str, *, caller: CallerDep
                                  ) -> dict[str, Any]:
    caller.graph(assistant_id)
    return {}
