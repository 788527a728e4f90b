"""What each kind of bad input gets: a clear error or an exact round trip, never a hang."""

from __future__ import annotations

import pickle
import re
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import create_async_engine

from conftest import require_backend
from relaygraph._errors import ConfigurationError, MissingDependencyError
from relaygraph.checkpointers import (
    AsyncSQLAlchemySaver,
    CheckpointerError,
    CorruptCheckpointError,
    DatabaseUnavailableError,
    InvalidFilterError,
    InvalidKeyError,
    RelaygraphSerializer,
    RetryPolicy,
    SetupRequiredError,
    SQLAlchemySaver,
)
from relaygraph.checkpointers._codec import pack
from relaygraph.checkpointers._schema import blobs
from relaygraph.checkpointers._urls import resolve_url


def _put(saver, thread_id, ns="", values=None, metadata=None):
    cp = empty_checkpoint()
    values = values or {}
    cp["channel_values"] = values
    cp["channel_versions"] = {k: saver.get_next_version(None) for k in values}
    cfg = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns}}
    return saver.put(cfg, cp, metadata or {"source": "input", "step": -1},
                     dict(cp["channel_versions"]))


# -- URLs and drivers --------------------------------------------------------------------

@pytest.mark.parametrize("url", ["oracle://scott@localhost/db", "mongodb://x/y", "nonsense"])
def test_unknown_scheme_names_the_supported_ones(url) -> None:
    with pytest.raises(ConfigurationError, match="sqlite|cannot parse"):
        with SQLAlchemySaver.from_conn_string(url):
            pass


@pytest.mark.parametrize(("url", "extra"), [
    ("postgresql://u@127.0.0.1/db", "postgres"),
    ("mysql://u@127.0.0.1/db", "mysql"),
])
def test_missing_driver_names_the_extra(monkeypatch, url, extra) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("psycopg", "pymysql") else real(name, *a))
    with pytest.raises(MissingDependencyError, match=rf"relaygraph\[{extra}\]"):
        resolve_url(url, async_=False)


def test_uninstalled_alternative_driver_names_the_extra() -> None:
    with pytest.raises(MissingDependencyError, match=r"relaygraph\[postgres\]"):
        resolve_url("postgresql+asyncpg://u@127.0.0.1/db", async_=True)


async def test_a_url_naming_the_other_kind_of_driver_opens_the_same_database(backend) -> None:
    # "sqlite+aiosqlite://" for the sync saver failed with SQLAlchemy's MissingGreenlet,
    # "mysql+pymysql://" for the async one with "requires an async driver"
    with SQLAlchemySaver.from_conn_string(backend.async_url) as saver:
        saver.setup()
        _put(saver, "t")
    async with AsyncSQLAlchemySaver.from_conn_string(backend.url) as asaver:
        got = await asaver.aget_tuple({"configurable": {"thread_id": "t"}})
    assert got is not None


@pytest.mark.parametrize("url", [
    "postgresql://postgres@127.0.0.1:1/test",  # nothing listens on port 1
    "mysql://root@127.0.0.1:1/test",
])
def test_database_down_is_a_clear_error_within_seconds(url) -> None:
    # a refused connection is retried (the server may be restarting) for the retry
    # window, 10 s by default, and the error then says so
    start = time.monotonic()
    with pytest.raises(DatabaseUnavailableError, match=r"(?s)127.0.0.1.*tried \d+ times"):
        with SQLAlchemySaver.from_conn_string(url, retry=RetryPolicy(window=2)) as saver:
            saver.setup()
    assert time.monotonic() - start < 5


@pytest.mark.parametrize(("kind", "url"), [
    ("postgres", "postgresql://no_such_role_rg@127.0.0.1:5432/test"),
    ("mysql", "mysql://no_such_user_rg:wrong@127.0.0.1:3306/test"),
])
def test_refused_login_is_a_clear_error(kind, url) -> None:
    require_backend(kind)
    with pytest.raises(DatabaseUnavailableError, match="no_such"):
        with SQLAlchemySaver.from_conn_string(url) as saver:
            saver.setup()


@pytest.mark.parametrize("url", [
    "postgresql://no_such_role_rg@127.0.0.1:5432/test",
    "postgresql://postgres@127.0.0.1:5432/no_such_db_rg",
])
def test_a_refused_login_is_not_retried(url) -> None:
    # psycopg words it "connection failed: ...", as it does a refused connection, and the
    # saver retried it for its whole window (10 s) before giving the same answer
    require_backend("postgres")
    start = time.monotonic()
    with pytest.raises(DatabaseUnavailableError, match="no_such") as err:
        with SQLAlchemySaver.from_conn_string(url) as saver:
            saver.setup()
    assert "tried" not in str(err.value)
    assert time.monotonic() - start < 5


async def test_a_sqlite_file_in_a_missing_folder_is_explained_by_setup(tmp_path) -> None:
    # setup() raised SQLAlchemy's bare OperationalError "unable to open database file"
    folder = tmp_path / "no" / "such"
    url = f"sqlite:///{folder / 'x.db'}"
    said = rf"unable to open.*its folder {re.escape(str(folder))} does not exist: create it"
    with SQLAlchemySaver.from_conn_string(url) as saver:
        with pytest.raises(DatabaseUnavailableError, match=said):
            saver.setup()
        with pytest.raises(DatabaseUnavailableError, match=said):
            saver.get_tuple({"configurable": {"thread_id": "t"}})
    async with AsyncSQLAlchemySaver.from_conn_string(url) as asaver:
        with pytest.raises(DatabaseUnavailableError, match=said):
            await asaver.asetup()
    assert not (tmp_path / "no").exists()


async def test_a_saver_used_after_its_block_ended_says_so(backend) -> None:
    # it went on working on the disposed engines, opening connections nobody closed
    cfg = {"configurable": {"thread_id": "t"}}
    said = r"closed when its from_conn_string\(\) block ended"
    with SQLAlchemySaver.from_conn_string(backend.url) as saver:
        saver.setup()
        _put(saver, "t")
    for call in (lambda: saver.get_tuple(cfg), lambda: _put(saver, "t"),
                 lambda: list(saver.list(cfg)), saver.setup):
        with pytest.raises(CheckpointerError, match=said):
            call()
    async with AsyncSQLAlchemySaver.from_conn_string(backend.async_url) as asaver:
        assert await asaver.aget_tuple(cfg) is not None
    with pytest.raises(CheckpointerError, match=said):
        await asaver.aget_tuple(cfg)
    with pytest.raises(CheckpointerError, match=said):
        await asaver.asetup()


def test_a_string_where_a_list_of_ids_goes_is_refused(backend) -> None:
    # prune("case-42") pruned the threads "c", "a", "s", "e", "-", "4" and "2"
    engine = sa.create_engine(backend.url)
    try:
        saver = SQLAlchemySaver(engine)
        saver.setup()
        for tid in ("a", "b"):
            _put(saver, tid)
            _put(saver, tid)
        with pytest.raises(InvalidKeyError, match=r"list of ids.*prune\(\['ab'\]\)"):
            saver.prune("ab", strategy="delete")
        with pytest.raises(InvalidKeyError, match=r"delete_for_runs\(\['ab'\]\)"):
            saver.delete_for_runs("ab")
        for tid in ("a", "b"):
            assert len(list(saver.list({"configurable": {"thread_id": tid}}))) == 2
    finally:
        engine.dispose()


def test_using_the_saver_before_setup_says_so(tmp_path) -> None:
    with SQLAlchemySaver.from_conn_string(f"sqlite:///{tmp_path / 'x.db'}") as saver:
        with pytest.raises(SetupRequiredError, match=r"setup\(\)"):
            saver.get_tuple({"configurable": {"thread_id": "t"}})


def test_engine_type_mistakes_are_explained() -> None:
    with pytest.raises(TypeError, match="from_conn_string"):
        SQLAlchemySaver("sqlite:///x.db")  # type: ignore[arg-type]
    aengine = create_async_engine("sqlite+aiosqlite://")
    with pytest.raises(TypeError, match=r"AsyncSQLAlchemySaver\(engine\)"):
        SQLAlchemySaver(aengine)  # type: ignore[arg-type]


# -- hostile identifiers and metadata ------------------------------------------------------

HOSTILE = ["it's", 'say "hi"', "100%", "%s %(x)s", "ünïcödé 🚀 中文", "trailing ",
           "Trailing", "back\\slash", "'; DROP TABLE relaygraph_checkpoints; --", "x" * 255]


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_ids_are_stored_and_found_exactly(backend, value) -> None:
    engine = sa.create_engine(backend.url)
    saver = SQLAlchemySaver(engine)
    saver.setup()
    cfg = _put(saver, value, ns=value, values={"v": value}, metadata={"note": value})
    _put(saver, value[:-1] + "_", ns=value)  # a near-miss id must stay distinct
    tup = saver.get_tuple(cfg)
    assert tup.config["configurable"]["thread_id"] == value
    assert tup.config["configurable"]["checkpoint_ns"] == value
    assert tup.checkpoint["channel_values"] == {"v": value}
    found = list(saver.list({"configurable": {"thread_id": value}}, filter={"note": value}))
    assert [t.config["configurable"]["checkpoint_id"] for t in found] == [
        cfg["configurable"]["checkpoint_id"]]
    engine.dispose()


def test_case_and_trailing_space_ids_stay_distinct(backend) -> None:
    engine = sa.create_engine(backend.url)
    saver = SQLAlchemySaver(engine)
    saver.setup()
    for tid in ("abc", "ABC", "abc "):
        _put(saver, tid, values={"who": tid})
    for tid in ("abc", "ABC", "abc "):
        got = saver.get_tuple({"configurable": {"thread_id": tid}})
        assert got.checkpoint["channel_values"]["who"] == tid
    engine.dispose()


@pytest.mark.parametrize(("value", "why"), [
    ("x" * 10_000, "10000 characters long; the limit is 255"),
    ("nul\x00byte", "NUL"),
    ("lone\ud800surrogate", "surrogate"),
])
def test_unstorable_ids_are_refused_before_any_sql(sqlite_backend, value, why) -> None:
    with SQLAlchemySaver.from_conn_string(sqlite_backend.url) as saver:
        saver.setup()
        with pytest.raises(InvalidKeyError, match=why):
            _put(saver, value)
        with pytest.raises(InvalidKeyError, match=why):
            _put(saver, "ok", ns=value)
        assert list(saver.list(None)) == []  # nothing half-written


def test_large_unicode_metadata_round_trips(backend) -> None:
    engine = sa.create_engine(backend.url)
    saver = SQLAlchemySaver(engine)
    saver.setup()
    big = "ünï 'q' %s \\ " * 800  # ~10 kB
    md = {"source": "input", "step": -1, "big": big, "nested": {"nul": "a\x00b", "pct": "%(x)s"}}
    cfg = _put(saver, "md", metadata=md)
    got = saver.get_tuple(cfg).metadata
    assert got["big"] == big and got["nested"] == {"nul": "a\x00b", "pct": "%(x)s"}
    assert len(list(saver.list(None, filter={"big": big}))) == 1
    engine.dispose()


@pytest.mark.parametrize("key", [
    "source') OR 1=1 --", "a; DROP TABLE relaygraph_checkpoints", "$.x", "a b", "", 7,
])
def test_injection_shaped_filter_keys_are_refused(sqlite_backend, key) -> None:
    with SQLAlchemySaver.from_conn_string(sqlite_backend.url) as saver:
        saver.setup()
        _put(saver, "t")
        with pytest.raises(InvalidFilterError, match="not allowed"):
            list(saver.list(None, filter={key: "x"}))
        assert len(list(saver.list(None))) == 1


# -- unsafe payloads ----------------------------------------------------------------------

class _Boom:
    def __reduce__(self):
        return (Path.touch, (Path("/tmp/relaygraph-pwned"),))


def test_pickled_blob_is_never_executed(backend) -> None:
    marker = Path("/tmp/relaygraph-pwned")
    marker.unlink(missing_ok=True)
    engine = sa.create_engine(backend.url)
    saver = SQLAlchemySaver(engine)
    saver.setup()
    cfg = _put(saver, "evil", values={"v": 1})
    evil = pickle.dumps(_Boom())
    # a whole row in pickle format
    with engine.begin() as c:
        c.execute(sa.update(blobs).values(type="pickle", blob=evil))
    with pytest.raises(CorruptCheckpointError, match="unknown row format 'pickle'"):
        saver.get_tuple(cfg)
    # a well-formed frame whose entry claims to be a pickle
    t, b = pack({"v": [0, "pickle", evil]}, compress=False)
    with engine.begin() as c:
        c.execute(sa.update(blobs).values(type=t, blob=b))
    with pytest.raises(CorruptCheckpointError, match="Unknown serialization type: pickle"):
        saver.get_tuple(cfg)
    assert not marker.exists()
    engine.dispose()


class Secret(BaseModel):
    code: str


def test_type_outside_the_allowlist_is_refused_naming_thread_and_checkpoint(
        sqlite_backend) -> None:
    """A blocked class is never constructed, and never handed back as its raw data."""
    engine = sa.create_engine(sqlite_backend.url)
    permissive = SQLAlchemySaver(engine, serde=JsonPlusSerializer(allowed_msgpack_modules=True))
    permissive.setup()
    cfg = _put(permissive, "blocked", values={"v": Secret(code="x1")})
    strict = SQLAlchemySaver(engine)
    with pytest.raises(CorruptCheckpointError) as err:
        strict.get_tuple(cfg)
    text = str(err.value)
    assert "'blocked'" in text and "Secret" in text and "allow(Secret)" in text
    assert err.value.thread_id == "blocked" and err.value.channel == "v"
    assert err.value.checkpoint_id == cfg["configurable"]["checkpoint_id"]
    with pytest.raises(CorruptCheckpointError, match="allow"):
        list(strict.list(cfg))
    allowed = strict.with_allowlist([(Secret.__module__, "Secret")])
    assert isinstance(allowed.get_tuple(cfg).checkpoint["channel_values"]["v"], Secret)
    # LangGraph's own fallback, for whoever asks for it
    plain = SQLAlchemySaver(engine, serde=RelaygraphSerializer(on_blocked="plain"))
    value = plain.get_tuple(cfg).checkpoint["channel_values"]["v"]
    assert value == {"code": "x1"} and not isinstance(value, Secret)
    engine.dispose()


def test_missing_delta_base_names_thread_channel_and_version(backend) -> None:
    from langchain_core.messages import HumanMessage

    from ._graphs import chat_graph

    engine = sa.create_engine(backend.url)
    saver = SQLAlchemySaver(engine, segment_every=50)
    saver.setup()
    g = chat_graph(6).compile(checkpointer=saver)
    cfg = {"configurable": {"thread_id": "broken"}}
    g.invoke({"messages": [HumanMessage("hi", id="h")], "count": 0}, cfg)
    with engine.begin() as c:
        # drop the frame the latest message delta extends
        base = c.execute(sa.select(blobs.c.base).where(blobs.c.base.is_not(None)).order_by(
            blobs.c.version.desc()).limit(1)).scalar()
        c.execute(sa.delete(blobs).where(blobs.c.version == base))
    with pytest.raises(CorruptCheckpointError, match=r"'broken'.*'messages'.*version") as err:
        g.get_state(cfg)
    assert err.value.thread_id == "broken" and err.value.channel == "messages"
    engine.dispose()
