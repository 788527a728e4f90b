"""The review inbox over HTTP: sign-in, CSRF, tenants, the list, reviews, decisions."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi.testclient import TestClient
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.memory import InMemorySaver

from relaygraph.graphs import examples
from relaygraph.graphs.examples import EXAMPLES
from relaygraph.graphs.examples.refund import build_refund_graph
from relaygraph.nodes import AutonomyPolicy
from relaygraph.serve import create_app
from relaygraph.serve._auth import Principal
from relaygraph.serve._inbox_review import moved_on
from relaygraph.serve._inbox_session import COOKIE, InboxOptions
from relaygraph.serve._index import ThreadIndex
from relaygraph.serve._runner import refresh, thread_config

ACME_KEY = "acme-key-0123456789"
BOB_KEY = "acme-bob-0123456789"
GLOBEX_KEY = "globex-key-0123456789"
KEYS = {ACME_KEY: Principal("acme", "ana"), BOB_KEY: Principal("acme", "bob"),
        GLOBEX_KEY: Principal("globex", "gus")}

UNREADABLE_ORDER = {"messages": [
    HumanMessage("My desk came broken. The order number is a10293 and I paid $249.99."),
    AIMessage("Sorry to hear that, I'm passing this on."),
]}


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def app(clock: Clock) -> Any:
    saver = InMemorySaver(serde=examples.serde())
    policy = AutonomyPolicy(min_approvals=3, target=0.5, floor=0.1, rng=lambda: 0.99)
    graphs = {
        "refund": build_refund_graph(policy=policy).compile(checkpointer=saver),
        "refund_unsure": build_refund_graph(confidence=0.5).compile(checkpointer=saver),
    }
    app = create_app(graphs, checkpointer=saver, langserve_routes=False, auth=KEYS,
                     index=ThreadIndex(None, clock=clock))
    app.state.relaygraph_inbox = InboxOptions(session_secret="test-secret", page_size=2,
                                              clock=clock)
    return app


@pytest.fixture
def client(app: Any) -> Iterator[TestClient]:
    with TestClient(app) as c:
        yield c


def start(client: TestClient, tenant: str, thread_id: str, graph_id: str = "refund",
          inp: dict[str, Any] | None = None) -> None:
    """Run a thread up to its first pause and index it, as the server does after a run."""
    app = client.app
    ctx = app.state.relaygraph  # type: ignore[attr-defined]
    internal = f"{tenant}/{thread_id}"

    async def go() -> None:
        await ctx.graphs[graph_id].ainvoke(inp or EXAMPLES["refund"].make_input(),
                                           thread_config(internal, graph_id))
        await refresh(ctx, internal, graph_id)

    client.portal.call(go)  # type: ignore[union-attr]


def state(client: TestClient, tenant: str, thread_id: str, graph_id: str = "refund") -> Any:
    ctx = client.app.state.relaygraph  # type: ignore[attr-defined]

    async def go() -> Any:
        return await ctx.graphs[graph_id].aget_state(thread_config(f"{tenant}/{thread_id}"))

    return client.portal.call(go)  # type: ignore[union-attr]


def csrf(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found is not None, page[:500]
    return found.group(1)


def sign_in(client: TestClient, key: str = ACME_KEY) -> None:
    page = client.get("/inbox/signin")
    resp = client.post("/inbox/signin", data={"csrf_token": csrf(page.text), "api_key": key,
                                              "next": "/inbox"}, follow_redirects=False)
    assert resp.status_code == 303, resp.text
    assert resp.headers["location"] == "/inbox"


def cards(page: str) -> list[str]:
    return [html.unescape(c) for c in re.findall(r'data-card="([^"]+)"', page)]


def review_form(client: TestClient, thread_id: str) -> tuple[str, dict[str, str]]:
    """The review page and the hidden fields its form posts."""
    page = client.get(f"/inbox/reviews/{thread_id}")
    assert page.status_code == 200, page.text
    intr = re.search(r'name="interrupt_id" value="([^"]+)"', page.text)
    assert intr is not None
    return page.text, {"csrf_token": csrf(page.text), "interrupt_id": html.unescape(
        intr.group(1))}


# --------------------------------------------------------------------------- sign-in


def test_pages_need_a_session_and_send_you_to_sign_in(client: TestClient) -> None:
    for path in ("/inbox", "/inbox/reviews/t-1", "/inbox/threads/t-1"):
        resp = client.get(path, follow_redirects=False)
        assert resp.status_code == 303
        assert resp.headers["location"].startswith("/inbox/signin?next=")
    assert client.get("/inbox/count").status_code == 401


def test_sign_in_checks_the_key_and_sets_a_signed_cookie(client: TestClient) -> None:
    page = client.get("/inbox/signin")
    assert page.status_code == 200
    assert "default-src 'self'" in page.headers["content-security-policy"]
    bad = client.post("/inbox/signin", data={"csrf_token": csrf(page.text),
                                             "api_key": "not-a-key-at-all-xx"})
    assert bad.status_code == 401
    assert "not valid" in bad.text
    good = client.post("/inbox/signin", data={"csrf_token": csrf(page.text),
                                              "api_key": ACME_KEY}, follow_redirects=False)
    assert good.status_code == 303
    cookie = good.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie.replace("Lax", "lax")
    assert ACME_KEY not in cookie  # the key itself is never stored
    inbox = client.get("/inbox")
    assert inbox.status_code == 200
    assert "ana" in inbox.text and "tenant acme" in inbox.text


def test_a_tampered_cookie_is_no_session(client: TestClient) -> None:
    sign_in(client)
    value = client.cookies[COOKIE]
    assert client.get("/inbox", follow_redirects=False).status_code == 200
    client.cookies.clear()
    client.cookies.set(COOKIE, value[:-3] + ("AAA" if value[-3:] != "AAA" else "BBB"))
    assert client.get("/inbox", follow_redirects=False).status_code == 303
    # a well-signed cookie from another secret is no session either
    from itsdangerous import URLSafeTimedSerializer

    forged = URLSafeTimedSerializer("guessed", salt="relaygraph-inbox-session").dumps(
        {"csrf": "x", "p": ["acme", "mallory"], "t": 0})
    client.cookies.clear()
    client.cookies.set(COOKIE, forged)
    assert client.get("/inbox", follow_redirects=False).status_code == 303


def test_sign_out_ends_the_session(client: TestClient) -> None:
    sign_in(client)
    page = client.get("/inbox")
    resp = client.post("/inbox/signout", data={"csrf_token": csrf(page.text)},
                       follow_redirects=False)
    assert resp.status_code == 303
    assert client.get("/inbox", follow_redirects=False).status_code == 303


def test_forms_without_the_sessions_csrf_token_are_refused(client: TestClient) -> None:
    page = client.get("/inbox/signin")
    assert client.post("/inbox/signin", data={"api_key": ACME_KEY}).status_code == 403
    assert client.post("/inbox/signin", data={"api_key": ACME_KEY,
                                              "csrf_token": "forged"}).status_code == 403
    sign_in(client)
    start(client, "acme", "t-1")
    _, hidden = review_form(client, "t-1")
    # the pre-sign-in token was rotated away at sign-in
    old = {**hidden, "csrf_token": csrf(page.text), "action": "approve"}
    resp = client.post("/inbox/reviews/t-1", data=old)
    assert resp.status_code == 403
    assert "security token" in resp.text
    missing = {k: v for k, v in hidden.items() if k != "csrf_token"}
    assert client.post("/inbox/reviews/t-1", data={**missing, "action": "approve"}
                       ).status_code == 403
    assert state(client, "acme", "t-1").next == ("review",)  # nothing was decided


# --------------------------------------------------------------------------- tenants


def test_a_tenant_sees_and_decides_only_its_own_reviews(app: Any, client: TestClient) -> None:
    start(client, "acme", "shared-name")
    start(client, "globex", "gx-1")
    sign_in(client, GLOBEX_KEY)
    page = client.get("/inbox").text
    assert [c.split(":")[0] for c in cards(page)] == ["gx-1"]
    assert "shared-name" not in page
    assert client.get("/inbox/count").json()["waiting"] == 1
    # acme's thread id does not exist for globex: 404 pages, not another tenant's data
    assert client.get("/inbox/reviews/shared-name").status_code == 404
    assert client.get("/inbox/threads/shared-name").status_code == 404
    _, hidden = review_form(client, "gx-1")
    resp = client.post("/inbox/reviews/shared-name", data={**hidden, "action": "approve"})
    assert resp.status_code == 404
    assert state(client, "acme", "shared-name").next == ("review",)


# --------------------------------------------------------------------------- the list


def test_filters_order_and_pages(client: TestClient, clock: Clock) -> None:
    start(client, "acme", "old-normal")
    clock.now += 7200
    start(client, "acme", "unsure", "refund_unsure")
    clock.now += 60
    start(client, "acme", "no-order", inp=UNREADABLE_ORDER)
    clock.now += 60
    sign_in(client)

    def ids(query: str) -> list[str]:
        resp = client.get("/inbox" + query)
        assert resp.status_code == 200, resp.text
        return [c.split(":")[0] for c in cards(resp.text)]

    assert ids("") == ["no-order", "unsure"]  # newest first, two per page
    assert ids("?page=2") == ["old-normal"]
    assert ids("?order=oldest") == ["old-normal", "unsure"]
    assert ids("?reason=failed_handoff") == ["no-order"]
    assert ids("?reason=guard_escalation") == ["unsure"]
    assert ids("?reason=full_review") == ["old-normal"]
    assert ids("?graph=refund_unsure") == ["unsure"]
    assert ids("?agent=resolver") == ["old-normal"]
    assert ids("?age=lt1h") == ["no-order", "unsure"]
    assert ids("?age=1h-1d") == ["old-normal"]
    page = client.get("/inbox").text
    assert "page 1 of 2" in page
    # a failed handoff shows the handoff's real reason, not null
    assert "order_id: &#39;unknown&#39; does not appear in the source" in page
    assert client.get("/inbox/count").json() == {"waiting": 3, "gone": []}


@pytest.mark.parametrize("query", ["?reason=bogus", "?page=0", "?page=x", "?graph=nope",
                                   "?order=sideways", "?age=forever"])
def test_bad_filters_get_a_422_page_that_says_why(client: TestClient, query: str) -> None:
    sign_in(client)
    resp = client.get("/inbox" + query)
    assert resp.status_code == 422
    assert resp.headers["content-type"].startswith("text/html")
    assert "must be" in resp.text


# --------------------------------------------------------------------------- one review


def test_review_page_highlights_provenance_and_shows_the_verdicts(client: TestClient) -> None:
    start(client, "acme", "t-1")
    sign_in(client)
    page, _ = review_form(client, "t-1")
    # the handoff's verbatim fields, highlighted at their spans in the source transcript
    assert re.search(r'<mark class="prov ok" data-field="order_id"[^>]*>A-10293<sup>', page)
    assert re.search(r'<mark class="prov ok" data-field="amount"[^>]*>\$249\.99<sup>', page)
    assert "✓ found in message 2" in page
    # the guard, the handoff's repairs, the policy's standing
    assert 'id="guard-score">0.92<' in page
    assert "Repairs tried: 1" in page
    assert "compressed by the function <code>scripted_compressor › compress</code>" in page
    assert "<b>0</b> of 0 reviews" in page
    # 3 in a row are required, but the lower bound of 3/3 is 0.44 < 0.5; 4/4 reaches 0.51
    assert "<b>4</b> more approvals in a row before sampling starts" in page
    # the typed form: an enum is a select, a decimal a checked text input
    assert re.search(r'<select id="in-action" name="f.action" data-kind="enum"', page)
    assert 'data-kind="decimal"' in page
    assert 'value="249.99"' in page
    # what each decision leads to, from the review node's routes
    assert ("What the run does next: approve → <b>issue</b> · edit → <b>issue</b> · "
            "reject → it ends</p>") in page


def test_failed_handoff_marks_what_the_source_says(client: TestClient) -> None:
    start(client, "acme", "no-order", inp=UNREADABLE_ORDER)
    sign_in(client)
    page, _ = review_form(client, "no-order")
    assert 'id="handoff-failure"' in page
    assert "order_id: &#39;unknown&#39; does not appear in the source" in page
    # the failed field is marked where the source writes the order number
    assert re.search(r'<mark class="prov fail" data-field="order_id"[^>]*>a10293<sup>', page)
    # the form starts from the compressor's draft, with the failing field flagged
    assert "the handoff could not verify this value" in page
    assert 'id="btn-reject"' in page and "Save contract" in page


def test_an_edit_that_breaks_the_contract_is_refused_with_422(client: TestClient) -> None:
    start(client, "acme", "t-1")
    start(client, "acme", "unsure", "refund_unsure")
    sign_in(client)
    _, hidden = review_form(client, "t-1")
    resp = client.post("/inbox/reviews/t-1", data={**hidden, "action": "approve",
                                                    "f.amount": "twelve"})
    assert resp.status_code == 422
    assert "enter a decimal number such as 12.40" in resp.text
    assert 'value="twelve"' in resp.text  # the reviewer's input is kept
    resp = client.post("/inbox/reviews/t-1", data={**hidden, "action": "approve",
                                                    "f.action": "bribe"})
    assert resp.status_code == 422
    assert "choose one of refund, replacement, store credit, deny" in resp.text
    # the schema's bounds (confidence <= 1), checked again on the server
    _, hidden2 = review_form(client, "unsure")
    resp = client.post("/inbox/reviews/unsure", data={**hidden2, "action": "approve",
                                                       "f.confidence": "1.7"})
    assert resp.status_code == 422
    assert "must be at most 1" in resp.text
    resp = client.post("/inbox/reviews/t-1", data={**hidden, "action": "edit"})
    assert resp.status_code == 422
    assert "change at least one field" in resp.text
    resp = client.post("/inbox/reviews/t-1", data={**hidden, "action": "reject"})
    assert resp.status_code == 422
    assert "say why you reject it" in resp.text
    assert state(client, "acme", "t-1").next == ("review",)
    assert state(client, "acme", "unsure", "refund_unsure").next == ("check_review",)


def test_an_edit_is_recorded_under_the_signed_in_reviewer(client: TestClient) -> None:
    start(client, "acme", "t-1")
    sign_in(client)
    _, hidden = review_form(client, "t-1")
    resp = client.post("/inbox/reviews/t-1", data={**hidden, "action": "approve",
                                                    "f.amount": "200.00",
                                                    "comment": "partial refund agreed"},
                       follow_redirects=False)
    assert resp.status_code == 303
    assert resp.headers["location"] == "/inbox/threads/t-1?decided=edit"
    values = state(client, "acme", "t-1").values
    assert values["resolution"].amount == Decimal("200.00")
    record = values["reviews"][-1]
    assert (record["decision"], record["reviewer"], record["edits"], record["comment"]) == (
        "edit", "ana", {"amount": "200.00"}, "partial refund agreed")
    timeline = client.get(resp.headers["location"])
    assert "Your decision (edit) was recorded under ana" in timeline.text


def test_a_second_decision_gets_409(client: TestClient) -> None:
    start(client, "acme", "t-1")
    sign_in(client)
    _, hidden = review_form(client, "t-1")
    first = client.post("/inbox/reviews/t-1", data={**hidden, "action": "approve"},
                        follow_redirects=False)
    assert first.status_code == 303
    second = client.post("/inbox/reviews/t-1", data={**hidden, "action": "reject",
                                                      "reason": "too late"})
    assert second.status_code == 409
    assert "already decided: approve by ana" in second.text
    reviews = state(client, "acme", "t-1").values["reviews"]
    assert [r["decision"] for r in reviews] == ["approve"]


def test_a_stale_card_says_the_thread_moved_on(client: TestClient) -> None:
    start(client, "acme", "t-1")
    sign_in(client)
    listed = cards(client.get("/inbox").text)
    assert [c.split(":")[0] for c in listed] == ["t-1"]
    _, hidden = review_form(client, "t-1")
    # another reviewer decides through the JSON API meanwhile
    resp = client.post("/reviews/t-1", json={"action": "reject", "reason": "duplicate"},
                       headers={"x-api-key": BOB_KEY})
    assert resp.status_code == 200, resp.text
    # the live count drops it and names the listed card as gone
    count = client.get("/inbox/count", params={"cards": ",".join(listed)}).json()
    assert count == {"waiting": 0, "gone": listed}
    # opening it says so; submitting the old form says so too, with 409 and no change
    page = client.get(f"/inbox/reviews/t-1?interrupt={hidden['interrupt_id']}")
    assert page.status_code == 200
    assert "already decided: reject by bob" in page.text
    resp = client.post("/inbox/reviews/t-1", data={**hidden, "action": "approve"})
    assert resp.status_code == 409
    assert "moved on" in resp.text
    assert [r["reviewer"] for r in state(client, "acme", "t-1").values["reviews"]] == ["bob"]


def test_a_link_to_another_review_of_a_waiting_thread_leads_to_the_one_waiting(
        client: TestClient) -> None:
    start(client, "acme", "t-1")
    sign_in(client)
    page = client.get("/inbox/reviews/t-1", params={"interrupt": "0" * 32})
    assert page.status_code == 200
    assert "This review has moved on" in page.text
    assert '<a href="/inbox/reviews/t-1" id="waiting-now">' in page.text
    assert 'id="decide"' in client.get("/inbox/reviews/t-1").text


def test_a_thread_that_never_had_a_review_says_so() -> None:
    finished = SimpleNamespace(values={"messages": []}, next=(), tasks=())
    gone = moved_on("research", "r-1", finished)
    assert gone.heading == "No review is waiting on this thread"
    assert gone.message == "This thread has had no review; the run has finished."
    assert not gone.waiting
    decided = SimpleNamespace(values={"reviews": [{"decision": "approve", "reviewer": "ana",
                                                   "at": "then"}]}, next=(), tasks=())
    gone = moved_on("refund", "t-1", decided)
    assert gone.heading == "This review has moved on"
    assert gone.message.startswith("This review was already decided: approve by ana")


def test_reject_with_a_reason_feeds_it_back(client: TestClient) -> None:
    start(client, "acme", "t-1")
    sign_in(client)
    _, hidden = review_form(client, "t-1")
    resp = client.post("/inbox/reviews/t-1", data={**hidden, "action": "reject",
                                                    "reason": "wrong customer"},
                       follow_redirects=False)
    assert resp.status_code == 303
    values = state(client, "acme", "t-1").values
    assert values["reviews"][-1]["reason"] == "wrong customer"
    assert values["reviews"][-1]["reviewer"] == "ana"


def test_the_timeline_page_shows_steps_records_and_the_path(client: TestClient) -> None:
    start(client, "acme", "t-1")
    sign_in(client)
    _, hidden = review_form(client, "t-1")
    client.post("/inbox/reviews/t-1", data={**hidden, "action": "approve"})
    page = client.get("/inbox/threads/t-1").text
    assert 'id="run-status">finished<' in page
    for node in ("intake", "to_resolver", "check", "resolver", "review"):
        assert f'<b class="node">{node}</b>' in page
    assert "handoff RefundCase" in page and "guard check" in page
    assert "review approve</b> by ana" in page
    assert re.search(r"180→23 tokens · \$0\.0000\d+", page)
    # the graph, with the nodes the run went through highlighted
    assert '<g class="node on" data-node="resolver">' in page
    assert '<g class="node" data-node="check_review">' in page
    assert '<path d="' in page and 'class="edge on' in page


# --------------------------------------------------------------------------- bad input


def test_markup_from_agents_users_and_ids_is_escaped(client: TestClient) -> None:
    evil = '<img src=x onerror=alert(1)>'
    inp = {"messages": [HumanMessage('<script>alert("m")</script> order A-10293, paid '
                                     '$249.99, email dana.k@example.com'),
                        AIMessage("<b>noted</b>")]}
    start(client, "acme", evil, inp=inp)
    sign_in(client)
    pages = [client.get("/inbox").text]
    review = client.get("/inbox/reviews/" + evil.replace(" ", "%20"))
    assert review.status_code == 200
    pages.append(review.text)
    pages.append(client.get("/inbox/threads/" + evil.replace(" ", "%20")).text)
    for page in pages:
        assert "<img src=x" not in page
        assert "<script>alert" not in page
        assert "<b>noted</b>" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in pages[0]
    assert "&lt;script&gt;alert(&#34;m&#34;)&lt;/script&gt;" in pages[1]


@pytest.mark.parametrize("path", [
    "/inbox/reviews/" + "x" * 300,      # longer than a thread id may be
    "/inbox/reviews/bad%00id",          # NUL
    "/inbox/threads/bad%01id",          # control character
    "/inbox/reviews/t-1?interrupt=" + "i" * 300,
    "/inbox/reviews/a%2Fb",             # a slash: no thread id has one
    "/inbox/threads/a/b",
    "/inbox/no-such-page",
])
def test_bad_ids_are_4xx_pages(client: TestClient, path: str) -> None:
    sign_in(client)
    resp = client.get(path)
    assert 400 <= resp.status_code < 500, resp.text
    assert resp.headers["content-type"].startswith("text/html")
    assert "Back to the inbox" in resp.text


def test_the_inbox_with_a_trailing_slash_is_the_inbox(client: TestClient) -> None:
    sign_in(client)
    resp = client.get("/inbox/", follow_redirects=False)
    assert resp.status_code in (303, 307) and resp.headers["location"].endswith("/inbox")


def test_unknown_thread_and_bad_form_posts_are_4xx(client: TestClient) -> None:
    start(client, "acme", "t-1")
    sign_in(client)
    assert client.get("/inbox/reviews/nope").status_code == 404
    _, hidden = review_form(client, "t-1")
    assert client.post("/inbox/reviews/t-1", data={**hidden, "action": "launch"}
                       ).status_code == 422
    assert client.post("/inbox/reviews/t-1", data={**hidden, "action": "approve",
                                                    "interrupt_id": "no-such-interrupt"}
                       ).status_code == 409
    assert client.post("/inbox/reviews/t-1", content=b"\xff\xfe",
                       headers={"content-type": "multipart/form-data; boundary=x"}
                       ).status_code in (400, 403)
    assert state(client, "acme", "t-1").next == ("review",)


def test_one_broken_index_row_does_not_break_the_list(client: TestClient) -> None:
    start(client, "acme", "t-1")
    ctx = client.app.state.relaygraph  # type: ignore[attr-defined]

    async def corrupt() -> None:
        await ctx.threads.aput("acme/broken", "acme", "refund", "waiting",
                               {"interrupts": ["not a dict", {"id": 3, "value": {
                                   "kind": "human_review", "attempt": "many"}}]},
                               review=True)
        await ctx.threads.aput("acme/gone-graph", "acme", "retired", "waiting",
                               {"interrupts": [{"id": "i", "value": {"kind": "human_review",
                                                                     "node": "r"}}]},
                               review=True)

    client.portal.call(corrupt)  # type: ignore[union-attr]
    sign_in(client)
    page = client.get("/inbox")
    assert page.status_code == 200
    assert "t-1" in page.text
    assert client.get("/inbox/reviews/gone-graph").status_code == 404
    assert client.get("/inbox/reviews/broken").status_code in (404, 409)


def test_assets_ship_in_the_package_and_pages_load_nothing_else(client: TestClient) -> None:
    css = client.get("/inbox/static/inbox.css")
    js = client.get("/inbox/static/inbox.js")
    assert css.status_code == js.status_code == 200
    assert js.headers["content-type"].startswith("text/javascript")
    assert client.get("/inbox/static/../_app.py").status_code == 404
    assert client.get("/inbox/static/nope.js").status_code == 404
    sign_in(client)
    start(client, "acme", "t-1")
    for path in ("/inbox", "/inbox/reviews/t-1", "/inbox/threads/t-1"):
        page = client.get(path).text
        for url in re.findall(r'(?:src|href)="([^"]+)"', page):
            assert url.startswith(("/inbox", "#", "data:", "?")), url


def test_the_server_checks_edits_against_the_contract_itself() -> None:
    """Rules a JSON schema cannot carry (validators) still refuse the edit, per field."""
    from pydantic import BaseModel, field_validator

    from relaygraph.serve._inbox_forms import form_fields, parse_form

    class Case(BaseModel):
        order_id: str
        amount: Decimal

        @field_validator("order_id")
        @classmethod
        def _shape(cls, v: str) -> str:
            if not v.startswith("A-"):
                raise ValueError("order ids start with A-")
            return v

    current = {"order_id": "A-1", "amount": "2.50"}
    fields = form_fields(Case, current)
    edits, errors = parse_form(fields, {"f.order_id": "B-7", "f.amount": "2.5"}, current, Case)
    assert errors == {"order_id": "Value error, order ids start with A-"}
    edits, errors = parse_form(fields, {"f.order_id": "A-7", "f.amount": "2.5"}, current, Case)
    assert (edits, errors) == ({"order_id": "A-7"}, {})  # 2.5 == 2.50: not an edit


def test_a_whole_number_too_long_to_read_is_refused_not_a_server_error() -> None:
    """Python will not parse more than 4300 digits: that is the reviewer's typo, a 422."""
    import sys

    from pydantic import BaseModel

    from relaygraph.serve._inbox_forms import form_fields, parse_form

    class Order(BaseModel):
        quantity: int

    current = {"quantity": 2}
    fields = form_fields(Order, current)
    limit = sys.get_int_max_str_digits()
    edits, errors = parse_form(fields, {"f.quantity": "9" * (limit + 1)}, current, Order)
    assert edits == {}
    assert errors == {"quantity": f"enter a whole number of at most {limit} digits"}
    edits, errors = parse_form(fields, {"f.quantity": "3"}, current, Order)
    assert (edits, errors) == ({"quantity": 3}, {})


def test_trust_page_shows_standing_and_resets_an_agent(client: TestClient) -> None:
    start(client, "acme", "t-1")
    start(client, "acme", "t-2")
    sign_in(client)
    for tid in ("t-1", "t-2"):
        _, hidden = review_form(client, tid)
        assert client.post(f"/inbox/reviews/{tid}", data={**hidden, "action": "approve"},
                           follow_redirects=False).status_code == 303
    page = client.get("/inbox/trust")
    assert page.status_code == 200
    row = re.search(r'<tr id="trust-0">(.*?)</tr>', page.text, re.S)
    assert row is not None
    assert "<b>resolver</b> · refund" in row.group(1)
    assert "2 of 2" in row.group(1)
    assert "2 more approvals in a row" in row.group(1)  # 4/4 reaches the 0.5 target
    resp = client.post("/inbox/trust/reset", data={"csrf_token": csrf(page.text),
                                                   "target": "refund:review"},
                       follow_redirects=False)
    assert resp.status_code == 303
    after = client.get(resp.headers["location"]).text
    assert "resolver · refund is back under full review" in after
    assert "streak last broken by: reset to full review by ana" in after
    assert "3 more approvals in a row" in after  # 5/5 reaches 0.5; 3 in a row needed
    # a link cannot put words of its own in the notice
    forged = client.get("/inbox/trust", params={"reset": "Your account is locked: call"}).text
    assert "reset-done" not in forged and "account is locked" not in forged
    assert client.post("/inbox/trust/reset", data={"csrf_token": csrf(page.text),
                                                   "target": "refund:nope"}
                       ).status_code == 404
    assert client.post("/inbox/trust/reset", data={"target": "refund:review"}
                       ).status_code == 403


def test_a_thread_whose_state_cannot_be_read_breaks_only_its_own_pages(
        client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    start(client, "acme", "t-1")
    start(client, "acme", "poisoned")
    graph = client.app.state.relaygraph.graphs["refund"]  # type: ignore[attr-defined]
    real = graph.aget_state

    async def aget_state(config: Any, **kw: Any) -> Any:
        if config["configurable"]["thread_id"] == "acme/poisoned":
            raise ValueError("blocked type in checkpoint")
        return await real(config, **kw)

    monkeypatch.setattr(graph, "aget_state", aget_state)
    sign_in(client)
    page = client.get("/inbox/reviews/poisoned")
    assert page.status_code == 500
    assert page.headers["content-type"].startswith("text/html")
    assert "ValueError: blocked type in checkpoint" in page.text
    listing = client.get("/inbox")
    assert listing.status_code == 200
    assert {c.split(":")[0] for c in cards(listing.text)} == {"t-1", "poisoned"}
    assert client.get("/inbox/reviews/t-1").status_code == 200


def test_workers_sharing_keys_share_the_session_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    from relaygraph.serve._inbox_session import default_secret

    monkeypatch.delenv("RELAYGRAPH_SESSION_SECRET", raising=False)
    monkeypatch.setenv("RELAYGRAPH_API_KEYS", "acme:acme-key-0123456789")
    first = default_secret()
    assert first == default_secret()  # every worker derives the same one
    assert "acme-key-0123456789" not in first
    monkeypatch.setenv("RELAYGRAPH_API_KEYS", "acme:rotated-key-0123456789")
    assert default_secret() != first  # rotating the keys ends the sessions
    monkeypatch.setenv("RELAYGRAPH_SESSION_SECRET", "explicit")
    assert default_secret() == "explicit"
    monkeypatch.delenv("RELAYGRAPH_SESSION_SECRET")
    monkeypatch.delenv("RELAYGRAPH_API_KEYS")
    assert default_secret() != default_secret()  # random per process


def test_saving_the_contract_of_a_failed_handoff_continues_the_run(client: TestClient) -> None:
    start(client, "acme", "no-order", inp=UNREADABLE_ORDER)
    sign_in(client)
    page, hidden = review_form(client, "no-order")
    assert 'value="unknown"' in page  # the draft, for the reviewer to fix
    assert 'id="btn-approve"' in page and 'value="edit" class="primary"' in page
    resp = client.post("/inbox/reviews/no-order", data={
        **hidden, "action": "edit", "f.order_id": "A-10293", "f.amount": "249.99",
        "f.customer_email": "", "f.reason": "Broken desk.", "f.wants": "refund",
        "f.confidence": "0.9"}, follow_redirects=False)
    assert resp.status_code == 303, resp.text
    snap = state(client, "acme", "no-order")
    assert snap.values["case"].order_id == "A-10293"
    assert snap.values["reviews"][-1]["decision"] == "edit"
    assert snap.next == ("review",)  # guard passed, resolver ran, the refund waits


def test_threads_page_lists_the_tenants_threads_with_their_timelines(
        client: TestClient, clock: Clock) -> None:
    start(client, "acme", "t-1")
    clock.now += 1
    start(client, "acme", "t-2")
    start(client, "globex", "gx-1")
    sign_in(client)
    _, hidden = review_form(client, "t-1")
    clock.now += 1
    client.post("/inbox/reviews/t-1", data={**hidden, "action": "approve"})
    page = client.get("/inbox/threads")  # most recently updated first: t-1 just finished
    assert page.status_code == 200
    assert re.findall(r'<a href="/inbox/threads/([^"]+)">', page.text) == ["t-1", "t-2"]
    assert "gx-1" not in page.text
    assert re.search(r't-1</a></td>\s*<td class="muted">refund</td>\s*<td><span class="status '
                     r'status-finished">finished</span>', page.text)
    waiting = client.get("/inbox/threads", params={"status": "waiting"}).text
    assert re.findall(r'<a href="/inbox/threads/([^"]+)">', waiting) == ["t-2"]
    assert 'href="/inbox/reviews/t-2">review</a>' in waiting
    assert client.get("/inbox/threads", params={"status": "sleeping"}).status_code == 422
    assert client.get("/inbox/threads", params={"cursor": "garbage"}).status_code == 422


def test_the_live_count_reads_card_ids_holding_commas_and_colons(client: TestClient) -> None:
    from urllib.parse import quote

    start(client, "acme", "a,b:c")
    start(client, "acme", "plain")
    sign_in(client)
    listed = cards(client.get("/inbox").text)
    assert sorted(c.rsplit(":", 1)[0] for c in listed) == ["a,b:c", "plain"]
    sent = ",".join(quote(c, safe="") for c in listed + ["a,b:c:gone-interrupt"])
    assert client.get("/inbox/count", params={"cards": sent}).json() == {
        "waiting": 2, "gone": ["a,b:c:gone-interrupt"]}


def test_guessing_keys_is_slowed_down(client: TestClient, clock: Clock) -> None:
    page = client.get("/inbox/signin")
    token = csrf(page.text)
    for _ in range(10):
        assert client.post("/inbox/signin", data={"csrf_token": token,
                                                  "api_key": "guess-0123456789xx"}
                           ).status_code == 401
    # even the right key waits now: the address has used up its attempts
    blocked = client.post("/inbox/signin", data={"csrf_token": token, "api_key": ACME_KEY})
    assert blocked.status_code == 429
    assert "Too many failed sign-ins" in blocked.text
    clock.now += 61
    assert client.post("/inbox/signin", data={"csrf_token": token, "api_key": ACME_KEY},
                       follow_redirects=False).status_code == 303


def test_a_run_started_through_the_protocol_appears_in_the_inbox(client: TestClient) -> None:
    from relaygraph.graphs.examples._data import REFUND_TRANSCRIPT

    headers = {"x-api-key": ACME_KEY}
    assert client.post("/threads", json={"thread_id": "via-sdk"}, headers=headers
                       ).status_code == 200
    messages = [{"role": "user" if who == "human" else "assistant", "content": text}
                for who, text in REFUND_TRANSCRIPT]
    run = client.post("/threads/via-sdk/runs/wait", headers=headers,
                      json={"assistant_id": "refund", "input": {"messages": messages}})
    assert run.status_code == 200, run.text
    sign_in(client)
    assert [c.split(":")[0] for c in cards(client.get("/inbox").text)] == ["via-sdk"]
    page, _ = review_form(client, "via-sdk")
    assert re.search(r'<mark class="prov ok" data-field="order_id"[^>]*>A-10293<sup>', page)
