"""Schema migrations: a database written by schema version 2 (ids and versions as text)
upgrades in place to the current version (both as bytes) and reads back exactly what it
held."""

from __future__ import annotations

import random
import uuid
from typing import Any

import pytest
import sqlalchemy as sa
from langchain_core.messages import HumanMessage
from langgraph.checkpoint.base import empty_checkpoint
from sqlalchemy.ext.asyncio import create_async_engine

from relaygraph._sql import (
    Key,
    _IdKey,
    id_from_db,
    id_to_db,
    version_from_db,
    version_to_db,
)
from relaygraph.checkpointers import AsyncSQLAlchemySaver, SQLAlchemySaver
from relaygraph.checkpointers import _schema as S
from relaygraph.checkpointers._errors import SetupRequiredError

from ._graphs import chat_graph

# -- the id encoding ------------------------------------------------------------------


@pytest.mark.parametrize("value", [
    str(uuid.uuid4()), "1f1e7df5-faa5-63a2-803c-7e9732c7f0a7",
    "1F1E7DF5-FAA5-63A2-803C-7E9732C7F0A7",  # not canonical: kept as text
    "1f1e7df5faa563a2803c7e9732c7f0a7", "x" * 16, "é" * 8, "ü" * 15 + "a", "x" * 15,
    "x" * 17, "", "1", "checkpoint-2", "日本語のid", "a'b\"c%d_e", "x" * 64,
])
def test_id_round_trip(value: str) -> None:
    raw = id_to_db(value)
    assert id_from_db(raw) == value
    canonical = len(value) == 36 and value == str(uuid.UUID(value))
    assert (len(raw) == 16) == canonical


def test_id_encoding_keeps_order_within_each_form() -> None:
    uuids = sorted(str(uuid.uuid4()) for _ in range(200))
    assert sorted(uuids, key=id_to_db) == uuids
    others = ["", "a", "a" * 15, "a" * 16, "a" * 16 + "\x01", "a" * 16 + "b", "a" * 17, "b",
              "é" * 8, "é" * 8 + "z", "z" * 16, "日"]
    assert sorted(others, key=id_to_db) == sorted(others)
    assert len({id_to_db(v) for v in others + uuids}) == len(others + uuids)


@pytest.mark.parametrize("value", [
    "000000000062.488740", "000000000000.000000", "999999999999.ffffff",
    "000000000062.48874A",  # not the saver's form (upper case): kept as text
    "12345678", "1234567", "123456789", "", "1", "1.5",
    "00000000000000000000000000000002.0.5184212958357536", "٣" * 12 + ".488740",
])
def test_version_round_trip(value: str) -> None:
    raw = version_to_db(value)
    assert version_from_db(raw) == value
    assert (len(raw) == 8) == (value[:12].isascii() and value[:12].isdigit()
                               and value[12:13] == "." and len(value) == 19
                               and value[13:] == value[13:].lower())


def test_version_encoding_keeps_order_within_each_form() -> None:
    rng = random.Random(7)
    mine = sorted(f"{rng.randrange(10**12):012d}.{rng.getrandbits(24):06x}" for _ in range(300))
    assert sorted(mine, key=version_to_db) == mine
    others = ["", "1", "12345678", "12345678\x01", "123456789", "2", "v2", "ü" * 4]
    assert sorted(others, key=version_to_db) == sorted(others)
    assert len({version_to_db(v) for v in mine + others}) == len(mine + others)


# -- upgrading a version-2 database ---------------------------------------------------


def _v2_metadata() -> tuple[sa.MetaData, list[sa.Table]]:
    """The three tables as schema version 2 defined them: ids as text keys."""
    md = sa.MetaData()
    tables = []
    for t in S.TABLES:
        cols = [sa.Column(c.name, Key(c.type.chars) if isinstance(c.type, _IdKey) else c.type,
                          primary_key=c.primary_key, nullable=c.nullable) for c in t.columns]
        tables.append(sa.Table(t.name, md, *cols, sqlite_with_rowid=False))
    sa.Index("relaygraph_checkpoints_run_id", tables[0].c.run_id)
    return md, tables


def _snapshot(saver: SQLAlchemySaver) -> list[Any]:
    return [(t.config, t.checkpoint, t.metadata, t.parent_config, t.pending_writes)
            for t in saver.list(None)]


def _downgrade(engine: sa.Engine) -> None:
    """Rewrite the saver's tables as schema version 2 stored them."""
    with engine.begin() as c:
        rows = {t.name: [dict(r._mapping) for r in c.execute(sa.select(t))] for t in S.TABLES}
    md, old = _v2_metadata()
    with engine.begin() as c:
        for t in reversed(S.TABLES):
            t.drop(c)
        md.create_all(c)
        for t in old:
            if rows[t.name]:
                c.execute(t.insert(), rows[t.name])
        c.execute(S.migrations_table.delete().where(
            S.migrations_table.c.component == S.COMPONENT, S.migrations_table.c.version > 2))


def _put_odd_ids(saver: SQLAlchemySaver) -> None:
    """A thread whose checkpoint, task and run ids are not UUIDs, some 16 bytes long."""
    parent = None
    for i, cid in enumerate(["checkpoint-00001", "checkpoint-00002", "checkpoint-3"]):
        cp = empty_checkpoint()
        cp["id"] = cid
        cp["channel_values"] = {"n": i}
        # versions of another saver's format too, one of them 8 bytes long
        cp["channel_versions"] = {"n": ["12345678", "v2", "000000000003.abcdef"][i]}
        conf: dict[str, Any] = {"configurable": {"thread_id": "odd", "checkpoint_ns": ""}}
        if parent:
            conf["configurable"]["checkpoint_id"] = parent
        saved = saver.put(conf, cp, {"source": "loop", "step": i, "run_id": "run-é-0000000001"},
                          dict(cp["channel_versions"]))
        saver.put_writes(saved, [("n", i + 1)], "task-16-chars-xy" if i else "t", "path")
        parent = cid


def _run_index_is_partial(engine: sa.Engine) -> bool:
    with engine.connect() as c:
        if engine.dialect.name == "postgresql":
            ddl = c.execute(sa.text("SELECT indexdef FROM pg_indexes "
                                    "WHERE indexname = 'relaygraph_checkpoints_run_id'")).scalar()
        elif engine.dialect.name == "sqlite":
            ddl = c.execute(sa.text("SELECT sql FROM sqlite_master "
                                    "WHERE name = 'relaygraph_checkpoints_run_id'")).scalar()
        else:
            return False
    return "WHERE" in ddl.upper()


def test_run_index_leaves_out_rows_without_a_run_id(backend) -> None:
    """delete_for_runs still finds its rows through the partial index."""
    engine = sa.create_engine(backend.url)
    saver = SQLAlchemySaver(engine)
    saver.setup()
    assert _run_index_is_partial(engine) == (backend.kind in ("postgres", "sqlite"))
    graph = chat_graph(3).compile(checkpointer=saver)
    run = uuid.uuid4()
    graph.invoke({"count": 0}, {"configurable": {"thread_id": "with"},
                                "metadata": {"run_id": str(run)}})
    graph.invoke({"count": 0}, {"configurable": {"thread_id": "without"}})
    saver.delete_for_runs([str(run)])
    assert list(saver.list({"configurable": {"thread_id": "with"}})) == []
    assert len(list(saver.list({"configurable": {"thread_id": "without"}}))) > 3
    engine.dispose()


def test_version_2_database_upgrades_in_place(backend) -> None:
    engine = sa.create_engine(backend.url)
    saver = SQLAlchemySaver(engine)
    saver.setup()
    graph = chat_graph().compile(checkpointer=saver)
    for t in ("a", "b"):
        cfg = {"configurable": {"thread_id": t}, "metadata": {"run_id": str(uuid.uuid4())}}
        graph.invoke({"messages": [HumanMessage("hi", id="h")], "count": 0}, cfg)
    _put_odd_ids(saver)
    before = _snapshot(saver)
    assert len(before) > 6
    _downgrade(engine)
    with engine.connect() as c:  # the text form, as version 2 stored it
        cid = c.execute(sa.text("SELECT checkpoint_id FROM relaygraph_checkpoints "
                                "WHERE thread_id = 'a'")).scalars().first()
    assert len(cid) == 36

    fresh = SQLAlchemySaver(engine)  # no caches from before
    # not upgraded yet: refused with the way out, before anything reads or writes
    with pytest.raises(SetupRequiredError, match=r"schema version 2.*saver\.setup\(\)"):
        fresh.get_tuple({"configurable": {"thread_id": "a"}})
    with pytest.raises(SetupRequiredError, match="schema version 2"):
        list(fresh.list(None))
    with pytest.raises(SetupRequiredError, match="schema version 2"):
        fresh.put_writes(before[0][0], [("n", 1)], "t2")
    fresh.setup()
    with engine.connect() as c:
        versions = c.execute(sa.select(S.migrations_table.c.version).where(
            S.migrations_table.c.component == S.COMPONENT)).scalars().all()
        raw = c.execute(sa.text(
            "SELECT checkpoint_id, parent_checkpoint_id, run_id FROM relaygraph_checkpoints "
            "WHERE thread_id = 'a' AND parent_checkpoint_id IS NOT NULL")).first()
        odd = c.execute(sa.text("SELECT task_id FROM relaygraph_writes "
                                "WHERE thread_id = 'odd'")).scalars().all()
        odd_versions = c.execute(sa.text("SELECT version FROM relaygraph_blobs "
                                         "WHERE thread_id = 'odd'")).scalars().all()
        a_versions = c.execute(sa.text("SELECT version FROM relaygraph_blobs "
                                       "WHERE thread_id = 'a'")).scalars().all()
    assert sorted(versions) == list(range(1, S.LATEST + 1))
    assert _run_index_is_partial(engine) == (backend.kind in ("postgres", "sqlite"))
    assert len(bytes(raw[0])) == 16 and len(bytes(raw[1])) == 16 and len(bytes(raw[2])) == 16
    assert sorted(bytes(x) for x in odd) == [b"t", *[b"task-16-chars-xy\x00"] * 2]
    assert sorted(bytes(v) for v in odd_versions) == [
        bytes.fromhex("0000000003abcdef"), b"12345678\x00", b"v2"]
    assert {len(bytes(v)) for v in a_versions} == {8}
    assert _snapshot(fresh) == before
    fresh.setup()  # nothing left to do: the same state
    assert _snapshot(SQLAlchemySaver(engine)) == before
    # and the upgraded thread goes on
    out = chat_graph(9).compile(checkpointer=fresh).invoke(
        {"count": 6}, {"configurable": {"thread_id": "a"}})
    assert out["count"] == 9 and len(out["messages"]) == 10
    # the input, its __start__ step, then the three agents
    assert len(_snapshot(fresh)) == len(before) + 5
    engine.dispose()


async def test_tables_of_a_newer_schema_are_refused(backend) -> None:
    engine = sa.create_engine(backend.url)
    SQLAlchemySaver(engine).setup()
    with engine.begin() as c:
        c.execute(S.migrations_table.insert().values(component=S.COMPONENT,
                                                     version=S.LATEST + 1))
    with pytest.raises(SetupRequiredError, match="newer than this relaygraph"):
        SQLAlchemySaver(engine).get_tuple({"configurable": {"thread_id": "x"}})
    aengine = create_async_engine(backend.async_url)
    with pytest.raises(SetupRequiredError, match="newer than this relaygraph"):
        await AsyncSQLAlchemySaver(aengine).aget_tuple({"configurable": {"thread_id": "x"}})
    with pytest.raises(SetupRequiredError, match="newer than this relaygraph"):
        [t async for t in AsyncSQLAlchemySaver(aengine).alist(None)]
    await aengine.dispose()
    engine.dispose()


async def test_async_saver_refuses_tables_setup_has_not_upgraded(backend) -> None:
    engine = sa.create_engine(backend.url)
    saver = SQLAlchemySaver(engine)
    saver.setup()
    chat_graph(3).compile(checkpointer=saver).invoke(
        {"count": 0}, {"configurable": {"thread_id": "a"}})
    before = _snapshot(saver)
    _downgrade(engine)
    aengine = create_async_engine(backend.async_url)
    asaver = AsyncSQLAlchemySaver(aengine)
    with pytest.raises(SetupRequiredError, match="schema version 2"):
        await asaver.aget_tuple({"configurable": {"thread_id": "a"}})
    await asaver.asetup()
    assert [(t.config, t.checkpoint, t.metadata, t.parent_config, t.pending_writes)
            async for t in asaver.alist(None)] == before
    await aengine.dispose()
    engine.dispose()
