"""The review inbox end to end in headless Chromium (Debian's ``chromium``, no download).

A real server on a loopback port, driven by Playwright with ``executable_path``: sign in,
find the refund run's review, see the order id and amount highlighted in the transcript,
edit the amount (an invalid value is refused inline), approve with the keyboard, see the
run finish on its timeline. Another tenant sees none of it.

Screenshots of the inbox, a review page and a timeline page go to ``$RELAYGRAPH_SHOTS``
when set (``make screenshots`` writes them under ``docs/``), else to a temporary folder.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.memory import InMemorySaver

from relaygraph.graphs import examples
from relaygraph.graphs.examples import EXAMPLES
from relaygraph.graphs.examples.refund import build_refund_graph
from relaygraph.nodes import AutonomyPolicy
from relaygraph.serve import create_app
from relaygraph.serve._auth import Principal
from relaygraph.serve._inbox_session import InboxOptions
from relaygraph.serve._runner import refresh, thread_config

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--no-first-run"]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

ACME_KEY = "acme-key-0123456789"
GLOBEX_KEY = "globex-key-0123456789"
INITECH_KEY = "initech-key-0123456789"
KEYS = {ACME_KEY: Principal("acme", "ana"), GLOBEX_KEY: Principal("globex", "gus"),
        INITECH_KEY: Principal("initech", "ian")}
PHONE = {"width": 390, "height": 844}

sync_api = pytest.importorskip("playwright.sync_api")


def _require_chromium() -> None:
    if not Path(CHROMIUM).exists():
        message = f"{CHROMIUM} is missing: apt-get install chromium"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _populate(app: Any) -> None:
    ctx = app.state.relaygraph
    await ctx.threads.asetup()

    async def run(tenant: str, tid: str, gid: str, inp: dict[str, Any]) -> None:
        internal = f"{tenant}/{tid}"
        await ctx.graphs[gid].ainvoke(inp, thread_config(internal, gid))
        await refresh(ctx, internal, gid)

    refund = EXAMPLES["refund"].make_input
    await run("acme", "refund-1041", "refund", refund())
    await run("acme", "refund-1042", "refund_unsure", refund())
    await run("acme", "refund-1043", "refund", {"messages": [
        HumanMessage("My desk came broken. The order number is a10293 and I paid $249.99."),
        AIMessage("Sorry to hear that, I'm passing this on.")]})
    await run("acme", "refund-1044", "refund", refund())
    await run("globex", "gx-7", "refund", refund())


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    _require_chromium()
    import uvicorn

    saver = InMemorySaver(serde=examples.serde())
    policy = AutonomyPolicy(min_approvals=5, target=0.8, rng=lambda: 0.99)
    graphs = {
        "refund": build_refund_graph(policy=policy).compile(checkpointer=saver),
        "refund_unsure": build_refund_graph(confidence=0.5).compile(checkpointer=saver),
    }
    app = create_app(graphs, checkpointer=saver, langserve_routes=False, auth=KEYS)
    app.state.relaygraph_inbox = InboxOptions(session_secret="browser-test-secret")
    asyncio.run(_populate(app))
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                        lifespan="on"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    try:
        # wait for the server's own startup flag, not a fixed delay
        import time

        deadline = time.monotonic() + 30
        while not srv.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(timeout=15)


@pytest.fixture(scope="module")
def browser(server: str) -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    where = os.environ.get("RELAYGRAPH_SHOTS")
    out = Path(where) if where else tmp_path
    out.mkdir(parents=True, exist_ok=True)
    return out


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    yield from _page(browser, {"width": 1360, "height": 900})


@pytest.fixture
def phone(browser: Any) -> Iterator[Any]:
    yield from _page(browser, PHONE)


def _page(browser: Any, viewport: dict[str, int]) -> Iterator[Any]:
    context = browser.new_context(viewport=viewport)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    # a 4xx page the test asks for is logged as a failed load; anything else is an error
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error"
          and "status of 4" not in m.text else None)
    pg.on("request", lambda r: errors.append(f"off-site request {r.url}")
          if not r.url.startswith(("http://127.0.0.1", "data:")) else None)
    yield pg
    context.close()
    assert errors == [], errors


def sign_in(page: Any, server: str, key: str) -> None:
    page.goto(f"{server}/inbox")
    assert "/inbox/signin" in page.url
    page.fill("#api_key", key)
    page.click("button[type=submit]")
    page.wait_for_url(f"{server}/inbox")


def start_run(server: str, key: str, thread_id: str, messages: list[tuple[str, str]]) -> None:
    """Run the refund graph on a new thread through the HTTP API, up to its review."""
    import httpx

    resp = httpx.post(f"{server}/threads/{thread_id}/runs/wait", headers={"x-api-key": key},
                      json={"assistant_id": "refund", "if_not_exists": "create",
                            "input": {"messages": [{"type": role, "content": text}
                                                   for role, text in messages]}},
                      timeout=60)
    assert resp.status_code == 200, resp.text


def test_review_a_refund_end_to_end(page: Any, server: str, shots: Path) -> None:
    expect = sync_api.expect
    sign_in(page, server, ACME_KEY)
    expect(page.locator("#waiting-count")).to_have_text("4")
    cards = page.locator(".card")
    expect(cards).to_have_count(4)
    expect(page.locator(".card .chip-failed_handoff")).to_have_count(1)
    expect(page.locator(".card .chip-guard_escalation")).to_have_count(1)
    page.screenshot(path=str(shots / "inbox-list.png"), full_page=True)

    # find the refund run's review by keyboard: j selects cards, Enter opens one
    target = page.locator('.card[data-card^="refund-1041:"]')
    index = [c.get_attribute("data-card") for c in cards.all()].index(
        target.get_attribute("data-card"))
    for _ in range(index + 1):
        page.keyboard.press("j")
    expect(target).to_have_class("card reason-full_review selected")
    page.keyboard.press("Enter")
    page.wait_for_url("**/inbox/reviews/refund-1041?interrupt=*")

    # the order id and amount, highlighted where the source says them
    order = page.locator('mark.prov.ok[data-field="order_id"]')
    amount = page.locator('mark.prov.ok[data-field="amount"]')
    expect(order).to_be_visible()
    expect(order).to_contain_text("A-10293")
    expect(amount).to_contain_text("$249.99")
    expect(page.locator("#guard-score")).to_have_text("0.92")
    page.screenshot(path=str(shots / "inbox-review.png"), full_page=True)

    # an invalid amount is refused inline, before anything is sent
    posts: list[str] = []
    page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)
    page.fill("#in-amount", "249,99 USD")
    expect(page.locator("#err-amount")).to_be_visible()
    expect(page.locator("#err-amount")).to_contain_text("decimal number")
    page.keyboard.press("Escape")
    page.keyboard.press("a")
    expect(page.locator("#err-amount")).to_be_visible()
    assert "/inbox/reviews/refund-1041" in page.url
    assert posts == []  # the browser refused it; the server was not asked
    page.screenshot(path=str(shots / "inbox-review-invalid.png"), full_page=True)

    # a valid one, approved with the keyboard: an edit under the signed-in reviewer
    page.fill("#in-amount", "200.00")
    expect(page.locator("#err-amount")).to_be_hidden()
    expect(page.locator("#btn-approve")).to_contain_text("Approve with 1 edit")
    page.keyboard.press("Escape")
    page.keyboard.press("a")
    page.wait_for_url("**/inbox/threads/refund-1041?decided=edit")
    expect(page.locator("#decided")).to_contain_text("recorded under ana")
    expect(page.locator("#run-status")).to_have_text("finished")
    expect(page.locator(".record.review")).to_contain_text("review edit by ana")
    expect(page.locator('svg.graph g.node.on[data-node="review"]')).to_have_count(1)
    expect(page.locator('svg.graph g.node.on[data-node="__end__"]')).to_have_count(1)
    page.screenshot(path=str(shots / "inbox-timeline.png"), full_page=True)

    # the inbox now counts one fewer
    page.goto(f"{server}/inbox")
    expect(page.locator("#waiting-count")).to_have_text("3")

    # the resolver's standing: an edit is a review, but not an approval
    page.click("text=Trust")
    row = page.locator("#trust-0")
    expect(row).to_contain_text("resolver · refund")
    expect(row).to_contain_text("0 of 1")
    page.screenshot(path=str(shots / "inbox-trust.png"), full_page=True)


def test_a_stale_card_is_marked_without_a_reload(page: Any, server: str) -> None:
    import httpx

    expect = sync_api.expect
    sign_in(page, server, ACME_KEY)
    card = page.locator('.card[data-card^="refund-1044:"]')
    expect(card).to_be_visible()
    resp = httpx.post(f"{server}/reviews/refund-1044", json={"action": "approve"},
                      headers={"x-api-key": ACME_KEY}, timeout=30)
    assert resp.status_code == 200, resp.text
    # the page refreshes its count when it becomes visible (and on a timer)
    page.evaluate("document.dispatchEvent(new Event('visibilitychange'))")
    expect(card.locator(".stale-note")).to_be_visible()
    expect(card).to_have_class("card reason-full_review stale")
    card.locator("a.thread").click()
    expect(page.locator(".stale-note")).to_contain_text("already decided: approve by ana")


def test_another_tenant_sees_none_of_it(page: Any, server: str) -> None:
    expect = sync_api.expect
    sign_in(page, server, GLOBEX_KEY)
    expect(page.locator(".card")).to_have_count(1)
    expect(page.locator(".card a.thread")).to_have_text("gx-7")
    expect(page.locator("body")).not_to_contain_text("refund-104")
    resp = page.goto(f"{server}/inbox/reviews/refund-1043")
    assert resp is not None and resp.status == 404
    expect(page.locator("h1")).to_contain_text("Not found")


def test_the_pages_fit_a_phone_screen(phone: Any, server: str) -> None:
    """Nothing is wider than a 390 px screen: long ids and tables wrap or scroll inside."""
    from relaygraph.graphs.examples._data import REFUND_TRANSCRIPT

    long_id = "case-" + "7" * 100
    start_run(server, INITECH_KEY, long_id, REFUND_TRANSCRIPT)
    sign_in(phone, server, INITECH_KEY)
    for path in (f"/inbox/reviews/{long_id}", "/inbox", f"/inbox/threads/{long_id}",
                 "/inbox/threads"):
        phone.goto(server + path)
        sync_api.expect(phone.locator("h1").first).to_be_visible()
        wide = phone.evaluate("document.documentElement.scrollWidth")
        assert wide <= PHONE["width"], f"{path} is {wide} px wide on a {PHONE['width']} px screen"
        # the top bar keeps the brand on one line and the pages side by side
        brand = phone.locator(".brand").bounding_box()
        pages = [phone.locator(".top nav a").nth(i).bounding_box() for i in range(3)]
        assert brand["height"] < 30, brand
        assert len({round(b["y"]) for b in pages}) == 1, pages


def test_pressing_approve_twice_sends_one_decision(page: Any, server: str) -> None:
    """A second ``a`` before the page has left sends nothing: the reviewer sees their own
    decision recorded, not a "moved on" page caused by their own second request."""
    from relaygraph.graphs.examples._data import REFUND_TRANSCRIPT

    start_run(server, INITECH_KEY, "twice-1", REFUND_TRANSCRIPT)
    sign_in(page, server, INITECH_KEY)
    page.goto(f"{server}/inbox/reviews/twice-1")
    posts: list[str] = []
    page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)
    page.keyboard.press("a")
    page.keyboard.press("a")
    page.wait_for_url("**/inbox/threads/twice-1?decided=approve")
    sync_api.expect(page.locator("#decided")).to_contain_text("recorded under ian")
    assert len(posts) == 1, posts


def test_save_edits_without_changes_leaves_the_buttons_usable(page: Any, server: str) -> None:
    """"Save edits" with nothing changed sends nothing and points at the first field; the
    reviewer can still approve or reject afterwards."""
    from relaygraph.graphs.examples._data import REFUND_TRANSCRIPT

    start_run(server, INITECH_KEY, "noedit-1", REFUND_TRANSCRIPT)
    sign_in(page, server, INITECH_KEY)
    page.goto(f"{server}/inbox/reviews/noedit-1")
    posts: list[str] = []
    page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)
    page.click("#btn-edit")
    sync_api.expect(page.locator("#in-action")).to_be_focused()
    page.evaluate("() => new Promise(r => setTimeout(r, 50))")  # the page's own timers run
    for button in ("#btn-approve", "#btn-edit", "#btn-reject"):
        sync_api.expect(page.locator(button)).to_be_enabled()
    assert posts == []
    page.click("#btn-approve")
    page.wait_for_url("**/inbox/threads/noedit-1?decided=approve")
