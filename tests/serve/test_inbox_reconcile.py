"""The inbox shows a reconcile() conflict side by side and decides it with an edit."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from typing import Annotated, Any

import pytest
from fastapi.testclient import TestClient
from langgraph.checkpoint.memory import InMemorySaver
from pydantic import Field
from tests._fan_out import fan_out_graph
from tests.serve.test_inbox import (
    ACME_KEY,
    KEYS,
    Clock,
    cards,
    review_form,
    sign_in,
    start,
    state,
)

from relaygraph.graphs import RelayState
from relaygraph.nodes import Contract, Verbatim, contract_serializer, reconcile
from relaygraph.serve import create_app
from relaygraph.serve._inbox_session import InboxOptions
from relaygraph.serve._index import ThreadIndex
from relaygraph.state import append_records

QUESTION = "When is PostgreSQL worth it over SQLite for checkpoints?"
AGENTS = ("alpha", "beta", "gamma")
FINDING = {
    "alpha": "SQLite in WAL mode handles a few hundred writes per second.",
    "beta": "PostgreSQL lets many workers <b>share</b> one database & resume any thread.",
    "gamma": "Deltas keep bytes per step flat as a thread grows.",
}
SOURCES = {"alpha": ["notes/alpha.md"], "beta": ["notes/beta.md", "bench/pg.csv"],
           "gamma": ["notes/gamma.md"]}
CONFIDENCE = {"alpha": 0.6, "beta": 0.8, "gamma": 0.7}


class Brief(Contract):
    """What the writer needs from the researchers."""

    question: str = Field(description="the research question")
    finding: Annotated[str, Verbatim()] = Field(description="the key finding, quoted")
    sources: list[str] = Field(description="where the finding comes from")
    confidence: float = Field(ge=0, le=1)


class FanState(RelayState, total=False):
    drafts: Annotated[list[Any], append_records]
    brief: Brief | None
    report: str | None


def build() -> Any:
    """Three researchers write a Brief each (fan-out with Send); reconcile asks a human."""

    def researcher(agent: str) -> dict[str, Any]:
        brief = Brief(question=QUESTION, finding=FINDING[agent], sources=SOURCES[agent],
                      confidence=CONFIDENCE[agent])
        quote = {"quote": FINDING[agent], "message": 3}
        return {"source": agent, "contract": brief.model_dump(mode="json"),
                "provenance": {"notes": f"notes/{agent}.md", "finding": quote}}

    merge = reconcile(Brief, source="drafts", target="brief", policy="review",
                      on_success="writer", on_conflict="halt")
    return fan_out_graph(FanState, AGENTS, researcher, merge, lambda brief: brief.finding)


@pytest.fixture
def client() -> Iterator[TestClient]:
    clock = Clock()
    saver = InMemorySaver(serde=contract_serializer(Brief))
    app = create_app({"research_fan": build().compile(checkpointer=saver)},
                     checkpointer=saver, langserve_routes=False, auth=KEYS,
                     index=ThreadIndex(None, clock=clock))
    app.state.relaygraph_inbox = InboxOptions(session_secret="test-secret", clock=clock)
    with TestClient(app) as c:
        yield c


def begin(client: TestClient, thread_id: str = "fan-1") -> None:
    start(client, "acme", thread_id, "research_fan", {})
    sign_in(client, ACME_KEY)


def row(page: str, name: str) -> str:
    found = re.search(rf'<tr id="conflict-{name}" class="conflict".*?</tr>', page, re.S)
    assert found is not None, name
    return found.group(0)


def cells(row_html: str) -> dict[str, str]:
    return {m.group(1): m.group(2) for m in re.finditer(
        r'<td data-source="([^"]+)">(.*?)</td>', row_html, re.S)}


def test_the_inbox_lists_the_conflict_and_shows_it_side_by_side(client: TestClient) -> None:
    begin(client)
    assert [c.split(":")[0] for c in cards(client.get("/inbox").text)] == ["fan-1"]
    # its own reason, and its own filter
    assert 'class="card reason-agents_disagree"' in client.get("/inbox").text
    assert len(cards(client.get("/inbox?reason=agents_disagree").text)) == 1
    assert cards(client.get("/inbox?reason=full_review").text) == []
    assert "agents disagree" in client.get("/inbox/reviews/fan-1").text
    page, _ = review_form(client, "fan-1")
    # one column per candidate, the fields they disagree on as rows
    assert re.findall(r'<th scope="col" class="candidate" data-source="([^"]+)">', page) \
        == list(AGENTS)
    assert "candidates disagree on finding, sources, confidence" in page
    finding = cells(row(page, "finding"))
    assert list(finding) == list(AGENTS)
    assert FINDING["alpha"] in finding["alpha"]
    assert FINDING["gamma"] in finding["gamma"]
    # each candidate's provenance for the field: the quote it recorded
    assert "provenance</span> quote: " + FINDING["alpha"] + "; message: 3" in finding["alpha"]
    sources = cells(row(page, "sources"))
    assert "<li>notes/beta.md</li><li>bench/pg.csv</li>" in sources["beta"]
    confidence = cells(row(page, "confidence"))
    assert {k: re.sub(r"<[^>]+>", "", v).split()[0] for k, v in confidence.items()} == {
        "alpha": "0.6", "beta": "0.8", "gamma": "0.7"}
    # the candidate's provenance as a whole heads its column
    assert '<small class="cand-prov">notes: notes/gamma.md</small>' in page
    # the agreed field is listed as agreed and filled in the form
    assert re.search(r'<tr class="agreed" data-field="question">', page)
    assert f'name="f.question" value="{html.escape(QUESTION)}"' in page
    # the conflicts start empty, marked, with the candidates' values to pick
    for name in ("finding", "confidence"):
        assert re.search(rf'<input id="in-{name}" name="f.{name}" value=""', page), name
    assert re.search(r'<div class="field conflict" data-field="finding">', page)
    assert 'name="pick.confidence" value="1" data-fill-target="in-confidence" ' \
           'data-fill="0.8"' in page
    # only what reconcile accepts: decide (an edit) or reject, never approve
    assert 'id="btn-decide"' in page and 'value="edit"' in page
    assert 'id="btn-reject"' in page
    assert 'value="approve"' not in page and 'id="btn-approve"' not in page


def test_markup_in_a_candidate_value_is_escaped(client: TestClient) -> None:
    begin(client)
    page, _ = review_form(client, "fan-1")
    assert "<b>share</b>" not in page
    beta = cells(row(page, "finding"))["beta"]
    assert "many workers &lt;b&gt;share&lt;/b&gt; one database &amp; resume" in beta
    assert 'data-fill="PostgreSQL lets many workers &lt;b&gt;share&lt;/b&gt; one database ' \
           '&amp; resume any thread."' in page


def test_deciding_every_conflict_resumes_the_thread_to_the_decided_values(
        client: TestClient) -> None:
    begin(client)
    _, hidden = review_form(client, "fan-1")
    resp = client.post("/inbox/reviews/fan-1", data={
        **hidden, "action": "edit", "f.question": QUESTION,
        "f.finding": "", "pick.finding": "1",          # beta's value, picked
        "f.sources": '["notes/alpha.md", "bench/pg.csv"]',  # entered by the reviewer
        "f.confidence": "0.75", "comment": "merged by hand"}, follow_redirects=False)
    assert resp.status_code == 303, resp.text
    assert resp.headers["location"] == "/inbox/threads/fan-1?decided=edit"
    snap = state(client, "acme", "fan-1", "research_fan")
    assert snap.next == ()
    assert snap.values["brief"] == Brief(question=QUESTION, finding=FINDING["beta"],
                                         sources=["notes/alpha.md", "bench/pg.csv"],
                                         confidence=0.75)
    assert snap.values["report"] == FINDING["beta"]
    [report] = snap.values["reconciles"]
    assert report["resolution"] == "review"
    assert report["decisions"] == {"finding": FINDING["beta"],
                                   "sources": ["notes/alpha.md", "bench/pg.csv"],
                                   "confidence": 0.75}
    # recorded under the signed-in reviewer, never a name the form could claim
    assert (report["reviewer"], report["comment"]) == ("ana", "merged by hand")
    # the thread's timeline shows the reconcile: who decided, what, and whom it overruled
    timeline = client.get(resp.headers["location"]).text
    assert "<b>reconcile Brief</b>: 3 candidates (alpha, beta, gamma) → review by ana" \
        in timeline
    assert "overruled alpha" in timeline and "“merged by hand”" in timeline
    assert cards(client.get("/inbox").text) == []


def test_a_decision_leaving_a_conflict_open_is_refused_and_loses_nothing(
        client: TestClient) -> None:
    begin(client)
    _, hidden = review_form(client, "fan-1")
    resp = client.post("/inbox/reviews/fan-1", data={
        **hidden, "action": "edit", "f.question": QUESTION, "f.finding": "",
        "f.sources": '["notes/gamma.md"]', "f.confidence": "0.7",
        "comment": "keep me"})
    assert resp.status_code == 422
    assert "decide this conflict" in resp.text
    assert re.search(r'<div class="field invalid conflict" data-field="finding">', resp.text)
    # what the reviewer entered is still there
    assert 'name="f.confidence" value="0.7"' in resp.text
    assert "notes/gamma.md" in resp.text and 'value="keep me"' in resp.text
    # a value outside the contract, and approve, are refused the same way
    bad = client.post("/inbox/reviews/fan-1", data={
        **hidden, "action": "edit", "f.finding": "x", "pick.sources": "0",
        "f.confidence": "1.7"})
    assert bad.status_code == 422 and "must be at most 1" in bad.text
    assert 'name="pick.sources" value="0" data-fill-target="in-sources" ' in bad.text
    approve = client.post("/inbox/reviews/fan-1", data={**hidden, "action": "approve"})
    assert approve.status_code == 422 and "decide every conflicting field" in approve.text
    # the thread still waits at the same review, asked once
    snap = state(client, "acme", "fan-1", "research_fan")
    assert snap.next == ("merge",)
    assert "brief" not in snap.values or snap.values["brief"] is None
    page, again = review_form(client, "fan-1")
    assert again["interrupt_id"] == hidden["interrupt_id"]
    assert "asked 2 times" not in page


def test_reject_routes_to_on_conflict(client: TestClient) -> None:
    begin(client)
    _, hidden = review_form(client, "fan-1")
    resp = client.post("/inbox/reviews/fan-1", data={**hidden, "action": "reject",
                                                      "reason": "none of them cites a source"},
                       follow_redirects=False)
    assert resp.status_code == 303, resp.text
    values = state(client, "acme", "fan-1", "research_fan").values
    assert values["report"] == "halted"
    assert values["reconciles"][-1]["failure"] == \
        "rejected by reviewer: none of them cites a source"
