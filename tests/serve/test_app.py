"""The app in process: auth, tenants, thread ids, graph loading, config, retention."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypedDict

import httpx
import pytest
from fastapi import Request
from fastapi.testclient import TestClient
from langchain_core.messages import HumanMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from pydantic import BaseModel

import relaygraph.serve
from relaygraph import ConfigurationError
from relaygraph.checkpointers import SQLAlchemySaver
from relaygraph.graphs import examples
from relaygraph.graphs.examples import EXAMPLES
from relaygraph.serve import Principal, ServerSettings, create_app
from relaygraph.serve._auth import api_key_authenticator, parse_api_keys
from relaygraph.serve._config import load_config, parse_duration
from relaygraph.serve._index import ThreadIndex
from relaygraph.serve._loader import compile_on, load_graph_spec
from relaygraph.serve._sweeper import sweep_once
from relaygraph.serve._tenancy import (
    InvalidThreadId,
    ThreadNotFound,
    check_thread_id,
    external_thread_id,
    internal_thread_id,
)

KEY_A = "tenant-a-key-0123456789"
KEY_B = "tenant-b-key-0123456789"
KEYS = {KEY_A: Principal("a", "ana"), KEY_B: Principal("b", "bo")}


def test_exports_are_pinned() -> None:
    assert sorted(relaygraph.serve.__all__) == sorted([
        "Authenticator", "Principal", "ServerConfig", "ServerContext", "ServerSettings",
        "ThreadSummary", "alist_threads", "api_key_authenticator", "compile_on", "create_app",
        "is_review_request", "list_threads", "load_config", "load_graph_spec", "run_server",
        "thread_config",
    ])
    for name in relaygraph.serve.__all__:
        assert getattr(relaygraph.serve, name) is not None


# ------------------------------------------------------------------------------- auth


def _request(headers: dict[str, str]) -> Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    return Request({"type": "http", "headers": raw, "method": "GET", "path": "/"})


def test_api_keys_parse_from_the_environment_format() -> None:
    keys = parse_api_keys(f"acme:{KEY_A}, globex:bob:{KEY_B},")
    assert keys == {KEY_A: Principal("acme", "acme"), KEY_B: Principal("globex", "bob")}
    with pytest.raises(ConfigurationError, match="at least 16"):
        parse_api_keys("acme:short")
    with pytest.raises(ConfigurationError, match="listed twice"):
        parse_api_keys(f"acme:{KEY_A},globex:{KEY_A}")
    with pytest.raises(ConfigurationError, match="tenant:key"):
        parse_api_keys(f"a:b:c:{KEY_A}")
    with pytest.raises(ConfigurationError, match="tenant names"):
        parse_api_keys(f"acme/evil:{KEY_A}")


def test_api_key_authenticator_matches_whole_keys_only() -> None:
    auth = api_key_authenticator(KEYS)
    assert auth(_request({"x-api-key": KEY_A})) == Principal("a", "ana")
    assert auth(_request({"authorization": f"Bearer {KEY_B}"})) == Principal("b", "bo")
    assert auth(_request({"x-api-key": KEY_A[:-1]})) is None
    assert auth(_request({"x-api-key": KEY_A + "x"})) is None
    assert auth(_request({})) is None
    with pytest.raises(ConfigurationError, match="no API keys"):
        api_key_authenticator({})


def test_no_keys_anywhere_refuses_to_build(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RELAYGRAPH_API_KEYS", raising=False)
    saver = InMemorySaver()
    graph = EXAMPLES["refund"].build().compile(checkpointer=saver)
    with pytest.raises(ConfigurationError, match="RELAYGRAPH_API_KEYS"):
        create_app({"refund": graph}, checkpointer=saver)
    monkeypatch.setenv("RELAYGRAPH_API_KEYS", f"env:{KEY_A}")
    app = create_app({"refund": graph}, checkpointer=saver)
    with TestClient(app) as c:
        assert c.get("/reviews", headers={"x-api-key": KEY_A}).status_code == 200


async def test_a_pluggable_async_authenticator() -> None:
    async def oidc_like(request: Request) -> Principal | None:
        token = request.headers.get("authorization", "")
        return Principal("acme", "carol") if token == "Bearer good-token" else None

    saver = InMemorySaver()
    graph = _counter().compile(checkpointer=saver)
    app = create_app({"counter": graph}, checkpointer=saver, auth=oidc_like)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as c:
        assert (await c.get("/reviews")).status_code == 401
        bad = await c.get("/reviews", headers={"authorization": "Bearer bad"})
        assert bad.status_code == 401
        ok = await c.get("/reviews", headers={"authorization": "Bearer good-token"})
        assert ok.status_code == 200 and ok.json() == {"reviews": [], "next_cursor": None}


# ----------------------------------------------------------------------------- tenancy


@pytest.mark.parametrize("bad", ["", "a/b", "nul\x00", "lone\ud800", "x" * 129, "tab\t",
                                 "del\x7f", 5, None])
def test_thread_ids_the_server_refuses(bad: Any) -> None:
    with pytest.raises(InvalidThreadId):
        check_thread_id(bad)


def test_thread_ids_are_namespaced_by_the_authenticated_tenant() -> None:
    a, b = Principal("a", "ana"), Principal("b", "bo")
    internal = internal_thread_id(a, "order-42 ✓")
    assert internal == "a/order-42 ✓"
    assert external_thread_id(a, internal) == "order-42 ✓"
    with pytest.raises(ThreadNotFound):
        external_thread_id(b, internal)
    # a tenant name that is a prefix of another does not reach into it
    with pytest.raises(ThreadNotFound):
        external_thread_id(Principal("a", "x"), "ab/thread")


# ------------------------------------------------------------------------------ loading


class Note(BaseModel):
    text: str


class NoteState(TypedDict, total=False):
    note: Note
    n: int


def _note_builder() -> StateGraph:
    b = StateGraph(NoteState)
    b.add_node("write", lambda s: {"note": Note(text="kept as a class"), "n": 1})
    b.add_edge(START, "write")
    b.add_edge("write", END)
    return b


note_builder = _note_builder()
note_compiled = _note_builder().compile()


def note_factory(checkpointer: Any = None) -> Any:
    return _note_builder().compile(checkpointer=checkpointer)


def _counter() -> StateGraph:
    class Counter(TypedDict, total=False):
        n: int

    b = StateGraph(Counter)
    b.add_node("bump", lambda s: {"n": s.get("n", 0) + 1})
    b.add_edge(START, "bump")
    b.add_edge("bump", END)
    return b


@pytest.mark.parametrize("attr", ["note_builder", "note_compiled", "note_factory",
                                  "_note_builder"])
def test_any_graph_kind_compiles_on_the_servers_saver_and_keeps_its_classes(
        attr: str, tmp_path: Path) -> None:
    name, obj = load_graph_spec(f"notes={__name__}:{attr}")
    assert name == "notes"
    url = f"sqlite:///{tmp_path / 'l.db'}"
    with SQLAlchemySaver.from_conn_string(url) as saver:  # the default, strict serializer
        saver.setup()
        graph = compile_on(obj, saver)
        assert graph.checkpointer is saver
        graph.invoke({}, {"configurable": {"thread_id": "t"}})
    with SQLAlchemySaver.from_conn_string(url) as saver:  # read back by a fresh saver
        note = compile_on(obj, saver).get_state({"configurable": {"thread_id": "t"}}
                                                ).values["note"]
    assert isinstance(note, Note) and note.text == "kept as a class"


@pytest.mark.parametrize(("spec", "message"), [
    ("notes", "NAME=module:attr"),
    ("no/slash=x:y", "graph names"),
    ("notes=no_such_module_xyz:graph", "cannot import"),
    (f"notes={__name__}:missing", "has no attribute"),
])
def test_bad_graph_specs_say_what_is_wrong(spec: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        load_graph_spec(spec)


def test_compile_on_refuses_what_is_not_a_graph() -> None:
    with pytest.raises(ConfigurationError, match="got int"):
        compile_on(42, InMemorySaver())
    with pytest.raises(ConfigurationError, match="returned str"):
        compile_on(lambda: "nope", InMemorySaver())


# ------------------------------------------------------------------------------- config


def test_config_file(tmp_path: Path) -> None:
    cfg = tmp_path / "r.toml"
    cfg.write_text(f"""
[database]
url = "sqlite:///x.db"
[graphs]
refund = "relaygraph.graphs.examples.refund:build_refund_graph"
[auth]
keys = [{{tenant = "acme", reviewer = "ana", key_env = "ACME_KEY"}},
        {{tenant = "globex", key = "{KEY_B}"}}]
[limits]
max_body_bytes = 5000
run_timeout = "2m"
[retention]
strategy = "prune"
[retention.graphs]
refund = "30d"
""")
    config = load_config(cfg, environ={"ACME_KEY": KEY_A})
    assert config.database_url == "sqlite:///x.db"
    assert config.graphs == {"refund": "relaygraph.graphs.examples.refund:build_refund_graph"}
    assert config.keys == {KEY_A: Principal("acme", "ana"), KEY_B: Principal("globex", "globex")}
    assert config.settings.max_body_bytes == 5000 and config.settings.run_timeout == 120
    assert config.settings.retention == {"refund": 30 * 86400}
    assert config.settings.retention_strategy == "prune"
    with pytest.raises(ConfigurationError, match="ACME_KEY"):
        load_config(cfg, environ={})
    cfg.write_text("[limits]\nmax_body = 5\n")
    with pytest.raises(ConfigurationError, match="unknown key"):
        load_config(cfg, environ={})
    cfg.write_text("[limits\n")
    with pytest.raises(ConfigurationError, match="not valid TOML"):
        load_config(cfg, environ={})
    assert parse_duration("45m", "x") == 2700
    with pytest.raises(ConfigurationError, match="duration"):
        parse_duration("soon", "x")


# -------------------------------------------------------------------------- in process


@pytest.fixture
def client() -> Iterator[TestClient]:
    saver = InMemorySaver(serde=examples.serde())
    graphs = {name: ex.build().compile(checkpointer=saver) for name, ex in EXAMPLES.items()}
    with TestClient(create_app(graphs, checkpointer=saver, auth=KEYS)) as c:
        c.headers["x-api-key"] = KEY_A
        yield c


def _start(client: TestClient, thread_id: str) -> dict[str, Any]:
    payload = {"input": EXAMPLES["refund"].make_input(),
               "config": {"configurable": {"thread_id": thread_id}}}
    payload["input"]["messages"] = [
        {"type": m.type, "content": m.content} for m in payload["input"]["messages"]]
    resp = client.post("/graphs/refund/invoke", json=payload)
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_review_flow_records_the_authenticated_reviewer(client: TestClient) -> None:
    _start(client, "t-2")
    reviews = client.get("/reviews").json()["reviews"]
    assert [r["thread_id"] for r in reviews] == ["t-2"]
    assert reviews[0]["request"]["value"]["order_id"] == "A-10293"
    ok = client.post("/reviews/t-2", json={"action": "approve", "comment": "fine"})
    assert ok.status_code == 200, ok.text
    body = ok.json()
    assert body["status"] == "finished" and body["next"] == []
    assert body["values"]["reviews"][-1]["reviewer"] == "ana"
    assert client.post("/reviews/t-2", json={"action": "approve"}).status_code == 409
    assert client.get("/reviews").json()["reviews"] == []


def test_reviews_are_per_tenant(client: TestClient) -> None:
    _start(client, "mine")
    other = client.get("/reviews", headers={"x-api-key": KEY_B}).json()["reviews"]
    assert other == []
    r = client.post("/reviews/mine", json={"action": "approve"}, headers={"x-api-key": KEY_B})
    assert r.status_code == 404


def test_example_compressor_is_linear_on_a_100kb_message() -> None:
    from relaygraph.graphs.examples.refund import RefundCase, scripted_compressor

    compress = scripted_compressor()
    for filler in ("a." * 50_000, "x" * 100_000, "a@" + "b-" * 50_000, "-" * 100_000):
        msgs = [HumanMessage("order A-10293, $249.99, ana@example.com"), HumanMessage(filler)]
        started = time.perf_counter()
        out = compress(msgs, RefundCase, None)
        # quadratic backtracking took 13-38 s on these inputs; linear takes milliseconds
        assert time.perf_counter() - started < 2.0
        assert out["customer_email"] == "ana@example.com"


async def test_retention_sweeper_deletes_expired_threads_only() -> None:
    now = [1_000_000.0]
    saver = InMemorySaver()
    graph = _counter().compile(checkpointer=saver)
    index = ThreadIndex(clock=lambda: now[0])
    settings = ServerSettings(retention={"counter": 3600})
    app = create_app({"counter": graph}, checkpointer=saver, auth=KEYS, settings=settings,
                     index=index)
    ctx = app.state.relaygraph
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app",
                                 headers={"x-api-key": KEY_A}) as c:
        for tid in ("old", "new"):
            if tid == "new":
                now[0] += 3000
            # one thread through LangServe, one through LangGraph's protocol
            if tid == "new":
                r = await c.post("/graphs/counter/invoke", json={
                    "input": {"n": 1}, "config": {"configurable": {"thread_id": tid}}})
            else:
                assert (await c.post("/threads", json={"thread_id": tid})).status_code == 200
                r = await c.post(f"/threads/{tid}/runs/wait",
                                 json={"assistant_id": "counter", "input": {"n": 1}})
            assert r.status_code == 200, r.text
        assert await sweep_once(ctx) == 0  # "old" is 3000 s old: kept
        now[0] += 1000  # "old" is now 4000 s old, "new" 1000 s
        assert await sweep_once(ctx) == 1
        assert await saver.aget_tuple({"configurable": {"thread_id": "a/old"}}) is None
        assert await saver.aget_tuple({"configurable": {"thread_id": "a/new"}}) is not None
        assert await index.aget("a/old") is None and await index.aget("a/new") is not None
        # LangGraph's protocol forgets the swept thread too
        assert (await c.get("/threads/old")).status_code == 404
        assert (await c.get("/threads/new")).status_code == 200


def test_configuration_errors_at_construction() -> None:
    saver = InMemorySaver()
    with pytest.raises(ConfigurationError, match="at least one graph"):
        create_app({}, checkpointer=saver, auth=KEYS)
    graph = EXAMPLES["refund"].build().compile(checkpointer=saver)
    with pytest.raises(ConfigurationError, match="got 'a/b'"):
        create_app({"a/b": graph}, checkpointer=saver, auth=KEYS)
    with pytest.raises(ConfigurationError, match="no checkpointer"):
        create_app({"refund": EXAMPLES["refund"].build().compile()}, checkpointer=saver,
                   auth=KEYS)
    with pytest.raises(ConfigurationError, match="max_body_bytes"):
        ServerSettings(max_body_bytes=10)


def test_docs_are_served_from_local_assets(client: TestClient) -> None:
    import re

    page = client.get("/docs")
    assert page.status_code == 200
    urls = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert urls and all(u.startswith("/docs/assets/") for u in urls), urls
    assert "http" not in page.text
    for url in urls:
        assert client.get(url).status_code == 200
    assert client.get("/openapi.json").status_code == 200


async def test_thread_index_pages_by_cursor_on_every_backend(engine: Any) -> None:
    now = [1000.0]
    index = ThreadIndex(engine, clock=lambda: now[0])
    await index.asetup()
    await index.asetup()  # idempotent
    for i in range(7):
        if i % 3 == 0:
            now[0] += 1  # several rows share an updated_at: the cursor breaks ties by id
        await index.aput(f"acme/t{i}", "acme", "refund", "waiting" if i % 2 else "finished",
                         {"next": [], "interrupts": [{"id": f"i{i}", "review": True}]},
                         review=bool(i % 2))
    await index.aput("globex/t0", "globex", "refund", "finished", {})
    seen, cursor = [], None
    while True:
        page = await index.apage("acme", limit=3, cursor=cursor)
        seen += [r.thread_id for r in page.rows]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == ["acme/t6", "acme/t5", "acme/t4", "acme/t3", "acme/t2", "acme/t1", "acme/t0"]
    reviews = await index.apage("acme", limit=10, review_only=True)
    assert [r.thread_id for r in reviews.rows] == ["acme/t5", "acme/t3", "acme/t1"]
    assert reviews.rows[0].summary["interrupts"][0]["id"] == "i5"
    # an update moves the thread to the top; expiry is by graph and age
    now[0] += 10
    await index.aput("acme/t0", "acme", "refund", "finished", {})
    assert (await index.apage("acme", limit=1)).rows[0].thread_id == "acme/t0"
    assert set(await index.aexpired("refund", older_than=1005)) == {
        f"acme/t{i}" for i in range(1, 7)} | {"globex/t0"}
    await index.adelete("acme/t0")
    assert await index.aget("acme/t0") is None and await index.acount("acme") == 6
    with pytest.raises(ValueError, match="invalid cursor"):
        await index.apage("acme", limit=3, cursor="garbage")


async def test_ready_is_503_when_the_database_is_unreachable() -> None:
    import sqlalchemy as sa

    saver = InMemorySaver()
    unreachable = sa.create_engine("postgresql+psycopg://postgres@127.0.0.1:9/none",
                                   connect_args={"connect_timeout": 2})
    app = create_app({"counter": _counter().compile(checkpointer=saver)}, checkpointer=saver,
                     auth=KEYS, index=ThreadIndex(unreachable))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as c:
        assert (await c.get("/health")).status_code == 200
        r = await c.get("/ready")
        assert r.status_code == 503 and "database unreachable" in r.text
    unreachable.dispose()


async def test_the_sweeper_leaves_a_running_thread_alone() -> None:
    now = [1_000_000.0]
    saver = InMemorySaver()
    index = ThreadIndex(clock=lambda: now[0])
    app = create_app({"counter": _counter().compile(checkpointer=saver)}, checkpointer=saver,
                     auth=KEYS, settings=ServerSettings(retention={"counter": 60}), index=index)
    ctx = app.state.relaygraph
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app",
                                 headers={"x-api-key": KEY_A}) as c:
        r = await c.post("/graphs/counter/invoke", json={
            "input": {"n": 1}, "config": {"configurable": {"thread_id": "busy"}}})
        assert r.status_code == 200
    now[0] += 3600
    lease = await ctx.leases.aacquire("a/busy", holder="a run")
    assert await sweep_once(ctx) == 0  # expired, but held by a run
    await ctx.leases.arelease(lease)
    assert await sweep_once(ctx) == 1
    assert await saver.aget_tuple({"configurable": {"thread_id": "a/busy"}}) is None


def test_the_playground_runs_as_the_signed_in_reviewer(client: TestClient) -> None:
    import re

    del client.headers["x-api-key"]  # a browser: no header, the inbox session cookie
    assert client.get("/graphs/refund/playground/").status_code == 401
    page = client.get("/inbox/signin")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token is not None
    signed = client.post("/inbox/signin", data={"csrf_token": token.group(1), "api_key": KEY_A,
                                                "next": "/inbox"}, follow_redirects=False)
    assert signed.status_code == 303
    assert client.get("/graphs/refund/playground/").status_code == 200
    body = {"input": {"messages": [{"type": "human", "content": "order A-10293, $249.99"}]},
            "config": {"configurable": {"thread_id": "play-1"}}}
    # the playground's own page posts with its origin; another site's page cannot
    foreign = client.post("/graphs/refund/invoke", json=body,
                          headers={"origin": "http://evil.example"})
    assert foreign.status_code == 401
    cross = client.post("/graphs/refund/invoke", json=body,
                        headers={"sec-fetch-site": "same-site"})
    assert cross.status_code == 401
    own = client.post("/graphs/refund/invoke", json=body,
                      headers={"origin": "http://testserver", "sec-fetch-site": "same-origin"})
    assert own.status_code == 200, own.text
    rows = client.get("/reviews", headers={"x-api-key": KEY_A}).json()["reviews"]
    assert [r["thread_id"] for r in rows] == ["play-1"]  # in the signed-in tenant
