"""The HTTP app: LangServe routes, thread endpoints, review endpoints and the inbox."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypedDict

import httpx
import pytest
from fastapi.testclient import TestClient
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph

import relaygraph.serve
from relaygraph import ConfigurationError
from relaygraph.checkpointers import SQLAlchemySaver
from relaygraph.graphs import examples
from relaygraph.graphs.examples import EXAMPLES
from relaygraph.serve import create_app


def test_exports_are_pinned() -> None:
    assert sorted(relaygraph.serve.__all__) == sorted([
        "ThreadSummary", "alist_threads", "create_app", "is_review_request",
        "list_threads", "thread_config",
    ])
    for name in relaygraph.serve.__all__:
        assert getattr(relaygraph.serve, name) is not None


@pytest.fixture(params=["memory", "sqlite"])
def saver(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    if request.param == "memory":
        yield InMemorySaver(serde=examples.serde())
        return
    url = f"sqlite:///{tmp_path / 'serve.db'}"
    with SQLAlchemySaver.from_conn_string(url, serde=examples.serde()) as s:
        s.setup()
        yield s


@pytest.fixture
def client(saver: Any) -> Iterator[TestClient]:
    graphs = {name: ex.build().compile(checkpointer=saver) for name, ex in EXAMPLES.items()}
    with TestClient(create_app(graphs, checkpointer=saver)) as c:
        yield c


def _start(client: TestClient, thread_id: str) -> dict[str, Any]:
    payload = {"input": EXAMPLES["refund"].make_input(),
               "config": {"configurable": {"thread_id": thread_id}}}
    # messages are LangChain objects: send them as the JSON LangServe expects
    payload["input"]["messages"] = [
        {"type": m.type, "content": m.content} for m in payload["input"]["messages"]]
    resp = client.post("/graphs/refund/invoke", json=payload)
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_invoke_pauses_on_review_and_threads_show_it(client: TestClient) -> None:
    out = _start(client, "t-1")
    assert out["output"]["case"]["order_id"] == "A-10293"

    threads = client.get("/threads").json()
    assert [t["thread_id"] for t in threads] == ["t-1"]
    assert threads[0]["graph_id"] == "refund"
    assert threads[0]["status"] == "waiting"
    assert threads[0]["next"] == ["review"]
    assert client.get("/threads", params={"graph": "research"}).json() == []

    state = client.get("/threads/t-1").json()
    assert state["next"] == ["review"]
    assert state["values"]["resolution"]["amount"] == "249.99"
    assert len(state["interrupts"]) == 1
    assert state["interrupts"][0]["value"]["kind"] == "human_review"

    nodes = [row["node"] for row in client.get("/threads/t-1/history").json()]
    assert nodes == ["__start__", "intake", "to_resolver", "check", "resolver", "review"]
    timeline = client.get("/threads/t-1/timeline").json()
    assert timeline["thread_id"] == "t-1"
    assert [s["node"] for s in timeline["steps"]][-1] == "review"
    assert timeline["steps"][-1]["status"] == "interrupted"
    assert timeline["cost"] > 0 and set(timeline["cost_by_agent"]) >= {"intake", "resolver"}


def test_review_flow_validation_conflict_and_approve(client: TestClient) -> None:
    _start(client, "t-2")
    reviews = client.get("/reviews").json()
    assert len(reviews) == 1 and reviews[0]["thread_id"] == "t-2"
    assert reviews[0]["request"]["value"]["order_id"] == "A-10293"

    bad = client.post("/reviews/t-2", json={"action": "maybe"})
    assert bad.status_code == 422
    detail = bad.json()["detail"]
    assert detail[0]["ctx"]["discriminator"] == "'action'" and "maybe" in detail[0]["msg"]
    extra = client.post("/reviews/t-2", json={"action": "approve", "bogus": 1})
    assert extra.status_code == 422
    no_reason = client.post("/reviews/t-2", json={"action": "reject"})
    assert no_reason.status_code == 422
    assert "reason" in no_reason.text
    broken = client.post("/reviews/t-2", json={"action": "edit", "edits": {"amount": "lots"}})
    assert broken.status_code == 422, broken.text
    assert "amount" in broken.json()["detail"][0]["msg"]
    assert client.get("/threads/t-2").json()["next"] == ["review"]  # nothing changed

    ok = client.post("/reviews/t-2", json={"action": "approve", "reviewer": "ana"})
    assert ok.status_code == 200, ok.text
    body = ok.json()
    assert body["next"] == [] and body["interrupts"] == []
    assert body["values"]["reviews"][-1]["decision"] == "approve"
    assert body["values"]["reviews"][-1]["reviewer"] == "ana"

    again = client.post("/reviews/t-2", json={"action": "approve"})
    assert again.status_code == 409
    assert "not waiting" in again.json()["detail"]
    assert client.get("/reviews").json() == []
    assert client.get("/threads").json()[0]["status"] == "finished"


def test_unknown_thread_is_404(client: TestClient) -> None:
    assert client.get("/threads/nope").status_code == 404
    assert client.get("/threads/nope/history").status_code == 404
    assert client.post("/reviews/nope", json={"action": "approve"}).status_code == 404


def test_inbox_lists_pending_reviews_and_escapes(client: TestClient) -> None:
    empty = client.get("/inbox")
    assert empty.status_code == 200 and "No reviews are waiting" in empty.text
    _start(client, "<b>t-3</b>")
    page = client.get("/inbox")
    assert page.headers["content-type"].startswith("text/html")
    assert "&lt;b&gt;t-3&lt;/b&gt;" in page.text and "<b>t-3</b>" not in page.text
    assert "A-10293" in page.text
    assert "(1 waiting)" in page.text
    assert "<script src" not in page.text and "cdn" not in page.text.lower()
    assert "function decide" in page.text
    assert 'href="threads/%3Cb%3Et-3%3C%2Fb%3E/timeline"' in page.text


def test_configuration_errors_at_construction() -> None:
    saver = InMemorySaver()
    with pytest.raises(ConfigurationError, match="at least one graph"):
        create_app({}, checkpointer=saver)
    graph = EXAMPLES["refund"].build().compile(checkpointer=saver)
    with pytest.raises(ConfigurationError, match="got 'a/b'"):
        create_app({"a/b": graph}, checkpointer=saver)
    with pytest.raises(ConfigurationError, match="no checkpointer"):
        create_app({"refund": EXAMPLES["refund"].build().compile()}, checkpointer=saver)


async def test_async_client_on_a_plain_graph() -> None:
    class Counter(TypedDict, total=False):
        n: int

    def bump(state: Counter) -> dict[str, int]:
        return {"n": state.get("n", 0) + 1}

    b = StateGraph(Counter)
    b.add_node("bump", bump)
    b.add_edge(START, "bump")
    b.add_edge("bump", END)
    saver = InMemorySaver()
    app = create_app({"counter": b.compile(checkpointer=saver)}, checkpointer=saver)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as c:
        r = await c.post("/graphs/counter/invoke",
                         json={"input": {"n": 41}, "config": {"configurable": {"thread_id": "c"}}})
        assert r.status_code == 200, r.text
        assert r.json()["output"] == {"n": 42}
        state = (await c.get("/threads/c")).json()
        assert state["values"] == {"n": 42} and state["graph_id"] == "counter"
        r = await c.post("/reviews/c", json={"action": "approve"})
        assert r.status_code == 409


async def test_async_saver_end_to_end(tmp_path: Path) -> None:
    from relaygraph.checkpointers import AsyncSQLAlchemySaver

    url = f"sqlite+aiosqlite:///{tmp_path / 'async.db'}"
    async with AsyncSQLAlchemySaver.from_conn_string(url, serde=examples.serde()) as saver:
        await saver.asetup()
        graphs = {"refund": EXAMPLES["refund"].build().compile(checkpointer=saver)}
        app = create_app(graphs, checkpointer=saver)
        chat = [{"type": m.type, "content": m.content}
                for m in EXAMPLES["refund"].make_input()["messages"]]
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as c:
            r = await c.post("/graphs/refund/invoke", json={
                "input": {"messages": chat}, "config": {"configurable": {"thread_id": "a1"}}})
            assert r.status_code == 200, r.text
            pending = (await c.get("/reviews")).json()
            assert [p["thread_id"] for p in pending] == ["a1"]
            r = await c.post("/reviews/a1", json={"action": "reject", "reason": "duplicate"})
            assert r.status_code == 200, r.text
            assert r.json()["values"]["reviews"][-1]["decision"] == "reject"
            assert (await c.get("/threads")).json()[0]["status"] == "finished"
