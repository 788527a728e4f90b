"""Hostile input: stored rows, identifiers, metadata, filters and resume values.

Each property runs on every reachable database. Stored rows are replaced with random
bytes, pickles (whose unpickling would create a marker file), compressed bombs and
well-formed rows naming classes outside the allowlist: a read either returns data that
is what the saver wrote, or raises ``CorruptCheckpointError`` naming the thread (and the
checkpoint, when one is read); nothing stored is ever executed. Identifiers and metadata
are stored and found again exactly, or refused before any SQL runs.
"""

from __future__ import annotations

import os
import pickle
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import ormsgpack
import pytest
import sqlalchemy as sa
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langchain_core.messages import HumanMessage
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.graph import START, StateGraph
from langgraph.types import Command
from typing_extensions import TypedDict

from checkpointers._graphs import chat_graph
from relaygraph.checkpointers import (
    CorruptCheckpointError,
    InvalidFilterError,
    InvalidKeyError,
    SQLAlchemySaver,
)
from relaygraph.checkpointers._codec import pack
from relaygraph.nodes import Contract, HumanReview, InvalidReviewDecision, submit_review
from relaygraph.nodes._contract import contract_serializer
from relaygraph.observe import thread_status

pytestmark = pytest.mark.reliability

SETTINGS = settings(max_examples=int(os.environ.get("RELAYGRAPH_HOSTILE_EXAMPLES", "40")),
                    deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])
MARKER = Path(os.environ.get("TMPDIR", "/tmp")) / f"relaygraph-pwned-{os.getpid()}"


class _Evil:
    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {MARKER}",))


EVIL_PICKLES = [pickle.dumps(_Evil(), protocol=p) for p in (0, 2, 4, 5)]


def _ext(module: str, name: str, kwargs: dict[str, Any]) -> bytes:
    """A msgpack value LangGraph would decode by calling ``module.name(**kwargs)``."""
    return ormsgpack.packb(ormsgpack.Ext(2, ormsgpack.packb([module, name, kwargs])))


BLOCKED = _ext("os", "system", {"command": f"touch {MARKER}"})
TABLES = {"relaygraph_checkpoints": "checkpoint", "relaygraph_blobs": "blob",
          "relaygraph_writes": "blob"}
KEYS = {"relaygraph_checkpoints": ("thread_id", "checkpoint_ns", "checkpoint_id"),
        "relaygraph_blobs": ("thread_id", "checkpoint_ns", "version", "part"),
        "relaygraph_writes": ("thread_id", "checkpoint_ns", "checkpoint_id", "task_id")}
THREAD = "victim"


@pytest.fixture
def victim(backend):
    """A thread of a few steps, its stored rows, and a way to change one row and back."""
    engine = sa.create_engine(backend.url)
    saver = SQLAlchemySaver(engine)
    saver.setup()
    graph = chat_graph(6).compile(checkpointer=saver)
    graph.invoke({"messages": [HumanMessage("refund order A-1", id="h")], "count": 0},
                 {"configurable": {"thread_id": THREAD}})
    rows = []
    with engine.connect() as c:
        for table, col in TABLES.items():
            t = sa.Table(table, sa.MetaData(), autoload_with=c)
            for r in c.execute(sa.select(t)).mappings():
                rows.append((t, col, {k: r[k] for k in KEYS[table]}, r["type"], r[col]))
    assert len(rows) > 20
    yield engine, rows
    engine.dispose()
    assert not MARKER.exists(), "a stored payload was executed"


def _replace(engine, row, type_: str, blob: bytes) -> None:
    t, col, key, _, _ = row
    with engine.begin() as c:
        n = c.execute(sa.update(t).where(*(t.c[k] == v for k, v in key.items()))
                      .values(type=type_, **{col: blob})).rowcount
    assert n == 1


def _read_all(engine) -> Literal["ok"] | CorruptCheckpointError:
    """Read the thread every way there is, through a saver with nothing cached."""
    saver = SQLAlchemySaver(engine)
    cfg = {"configurable": {"thread_id": THREAD}}
    try:
        saver.get_tuple(cfg)
        history = list(saver.list(cfg))
        for tup in history:
            saver.get_tuple(tup.config)
        list(chat_graph(6).compile(checkpointer=saver).get_state_history(cfg))
    except CorruptCheckpointError as exc:
        return exc
    return "ok"


def _bomb(size: int) -> bytes:
    return zstandard.ZstdCompressor(level=3).compress(b"\0" * size)


garbage = st.one_of(
    st.binary(min_size=1, max_size=512).map(lambda b: ("garbage", b)),
    st.sampled_from(EVIL_PICKLES).map(lambda b: ("pickle", b)),
    st.just(("bomb", _bomb(64 << 20))),
)
type_tags = st.sampled_from(["same", "pickle", "msgpack", "json", "rg1", "rg1|zs", "rg1|zf",
                             "rg1|zt", "rg1|z", "msgpack|zs", "msgpack|zf", "bytes"])


@SETTINGS
@given(data=st.data(), payload=garbage, tag=type_tags)
def test_corrupt_rows_give_a_clear_error_and_are_never_executed(victim, data, payload, tag):
    engine, rows = victim
    row = data.draw(st.sampled_from(rows))
    kind, blob = payload
    type_ = row[3] if tag == "same" else tag
    if tag == "same" and kind == "bomb" and not type_.endswith(("|zs", "|zf")):
        type_ += "|zf"
    try:
        _replace(engine, row, type_, blob)
        got = _read_all(engine)
    finally:
        _replace(engine, row, row[3], row[4])
    assert not MARKER.exists()
    if kind in ("pickle", "bomb") or len(blob) >= 64:
        # nothing of that kind decodes to a row of the right shape
        assert isinstance(got, CorruptCheckpointError), (row[0].name, type_, blob[:40])
    if isinstance(got, CorruptCheckpointError):
        assert got.thread_id == THREAD and repr(THREAD) in str(got)
        if got.checkpoint_id is not None:
            assert repr(got.checkpoint_id) in str(got)
    assert _read_all(engine) == "ok"  # restored: nothing else was touched


@pytest.mark.parametrize("table", list(TABLES))
def test_blocked_classes_in_well_formed_rows_are_refused(victim, table):
    """A row that decodes fine but names a class outside the allowlist: never constructed,
    never handed back as its raw data."""
    engine, rows = victim
    row = next(r for r in rows if r[0].name == table)
    if table == "relaygraph_checkpoints":
        type_, blob = "msgpack", BLOCKED
    elif table == "relaygraph_blobs":
        entries = ormsgpack.unpackb(_plain(row))
        ch = next(iter(entries))
        type_, blob = pack({ch: [0, "msgpack", BLOCKED]}, compress=False)
    else:
        items = ormsgpack.unpackb(_plain(row))
        items[0][2:] = ["msgpack", BLOCKED]
        type_, blob = pack(items, compress=False)
    _replace(engine, row, type_, blob)
    got = _read_all(engine)
    assert isinstance(got, CorruptCheckpointError)
    assert "os.system" in str(got) and "allowlist" in str(got) and repr(THREAD) in str(got)
    assert not MARKER.exists()


def _plain(row) -> bytes:
    from relaygraph.checkpointers._codec import _decompress

    return _decompress(row[3], row[4])[1]


def _declares(size: int) -> bytes:
    """A 17-byte zstd frame whose header declares ``size`` bytes of content."""
    magic = (0xFD2FB528).to_bytes(4, "little")
    descriptor = bytes([0xE0])  # 8-byte content size, single segment, no checksum
    rle_block = (1 | (1 << 1) | (1 << 3)).to_bytes(3, "little") + b"x"  # last, RLE, 1 byte
    return magic + descriptor + size.to_bytes(8, "little") + rle_block


@pytest.mark.parametrize("tag", ["|zf", "|zs"])
@pytest.mark.parametrize("table", list(TABLES))
def test_bombs_are_refused_before_decompressing(victim, table, tag):
    """A 17-byte row declaring 3 GB, and a 12.8 kB row of 400 MB: refused, not expanded."""
    engine, rows = victim
    row = next(r for r in rows if r[0].name == table)
    base = "msgpack" if table == "relaygraph_checkpoints" else "rg1"
    assert zstandard.frame_content_size(_declares(3 << 30)) == 3 << 30
    for blob in (_declares(3 << 30), _bomb(400 << 20)):
        _replace(engine, row, base + tag, blob)
        got = _read_all(engine)
        assert isinstance(got, CorruptCheckpointError), got
        assert "bound" in str(got) and repr(THREAD) in str(got)


# -- identifiers, metadata and filters ---------------------------------------------------

def _put(saver, thread_id: str, ns: str = "", metadata: dict[str, Any] | None = None):
    cp = empty_checkpoint()
    cp["channel_values"] = {"v": 1}
    cp["channel_versions"] = {"v": saver.get_next_version(None)}
    cfg = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns}}
    return saver.put(cfg, cp, metadata or {"source": "input", "step": -1},
                     dict(cp["channel_versions"]))


@pytest.fixture
def saver(backend):
    engine = sa.create_engine(backend.url)
    s = SQLAlchemySaver(engine)
    s.setup()
    yield s
    engine.dispose()


ids = st.text(min_size=1, max_size=80) | st.sampled_from(
    ["a/b", "a\\b", "' OR 1=1 --", "A", "a", "a ", " a", "é", "e\u0301", "\x00", "\ud800",
     "x" * 300, "🦜" * 10, "%", "_", "ns:with|sep", "\n", "\u202e"])


@SETTINGS
@given(thread_id=ids, ns=st.one_of(st.just(""), ids))
def test_hostile_thread_ids_and_namespaces_round_trip_or_are_refused(saver, thread_id, ns):
    try:
        cfg = _put(saver, thread_id, ns)
    except InvalidKeyError as exc:
        assert "thread_id" in str(exc) or "checkpoint_ns" in str(exc) or "namespace" in str(exc)
        return
    got = saver.get_tuple(cfg)
    assert got is not None
    assert got.config["configurable"]["thread_id"] == thread_id
    assert got.config["configurable"]["checkpoint_ns"] == ns
    found = list(saver.list({"configurable": {"thread_id": thread_id, "checkpoint_ns": ns}}))
    assert [t.config["configurable"]["checkpoint_id"] for t in found] == [
        cfg["configurable"]["checkpoint_id"]]
    saver.delete_thread(thread_id)
    assert saver.get_tuple(cfg) is None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                 max_size=4),
    max_leaves=12)


@SETTINGS
@given(metadata=st.dictionaries(st.text(min_size=1, max_size=20), json_values, max_size=5))
def test_hostile_metadata_round_trips_or_is_refused(saver, metadata):
    tid = f"md-{uuid.uuid4().hex}"
    try:
        cfg = _put(saver, tid, metadata={"source": "input", "step": -1, **metadata})
    except (InvalidKeyError, ValueError) as exc:
        # only values that cannot be stored as UTF-8 text are refused, and said so
        assert "surrogate" in str(exc) or "utf-8" in str(exc).lower(), exc
        return
    got = saver.get_tuple(cfg)
    assert got is not None
    for k, v in metadata.items():
        if k not in ("source", "step"):
            assert got.metadata.get(k) == v, k


@SETTINGS
@given(key=st.text(max_size=40), value=json_values)
def test_hostile_filter_keys_are_refused_or_answered(saver, key, value):
    try:
        out = list(saver.list(None, filter={key: value}))
    except InvalidFilterError as exc:
        assert repr(key) in str(exc)
        return
    assert all(t.metadata.get(key) == value for t in out)


# -- resume payloads ---------------------------------------------------------------------

class Case(Contract):
    order_id: str
    amount: Decimal


class ReviewState(TypedDict, total=False):
    case: Case
    outcome: str
    reviews: list[dict[str, Any]]


def _review_graph(saver):
    def intake(state: ReviewState) -> dict[str, Any]:
        return {"case": Case(order_id="A-1", amount=Decimal("42.50"))}

    def crm(state: ReviewState) -> dict[str, Any]:
        return {"outcome": f"refunded {state['case'].amount}"}

    def resolver(state: ReviewState) -> dict[str, Any]:
        return {"outcome": "sent back"}

    b = StateGraph(ReviewState)
    b.add_node("intake", intake)
    b.add_node("review", HumanReview("case", on_approve="crm", on_reject="resolver",
                                     agent="resolver", clock=lambda: 1.8e9))
    b.add_node("crm", crm)
    b.add_node("resolver", resolver)
    b.add_edge(START, "intake")
    b.add_edge("intake", "review")
    return b.compile(checkpointer=saver)


@pytest.fixture
def review_saver(backend):
    engine = sa.create_engine(backend.url)
    s = SQLAlchemySaver(engine, serde=contract_serializer(Case))
    s.setup()
    yield s
    engine.dispose()


resume_values = json_values | st.sampled_from([
    {"action": "approve", "extra": 1}, {"action": "edit", "edits": {"amount": "many"}},
    {"action": "edit", "edits": {"order_id": None}}, {"action": "reject"}, {"action": ["x"]},
    {"interrupt": "x"}, [{"action": "approve"}], "approve"])


@SETTINGS
@given(value=resume_values)
def test_resume_values_of_the_wrong_shape_change_nothing_or_reask(review_saver, value):
    graph = _review_graph(review_saver)
    cfg = {"configurable": {"thread_id": f"r-{uuid.uuid4().hex}"}}
    graph.invoke({}, cfg)
    before = graph.get_state(cfg)
    # through the library: validated before anything is written
    try:
        submit_review(graph, cfg, value)
    except InvalidReviewDecision:
        after = graph.get_state(cfg)
        assert (after.values, after.next, after.config) == (
            before.values, before.next, before.config)
    else:
        return  # a valid decision after all: the run went on
    if value is None:
        return  # Command(resume=None) is LangGraph's "no resume value" (its own error)
    # straight to LangGraph: the node asks again, carrying the error; nothing applied
    out = graph.invoke(Command(resume=value), cfg)
    asked = out["__interrupt__"][0].value
    # (an empty dict is an empty map of answers by interrupt id: the same question again)
    assert asked["error"] or value == {}, asked
    report = thread_status(graph.get_state(cfg))
    assert report.status == "waiting" and report.next == ("review",)
    assert graph.get_state(cfg).values["case"] == before.values["case"]
    final = submit_review(graph, cfg, {"action": "approve", "reviewer": "ana"})
    assert final["outcome"] == "refunded 42.50"
