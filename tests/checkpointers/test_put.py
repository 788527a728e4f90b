"""A put that meets frames already stored: the same put again, or another put that
reuses a version (on PostgreSQL both go through the one-statement put)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from langgraph.checkpoint.base import empty_checkpoint

from relaygraph.checkpointers import _schema as S


def _checkpoint(cid: str, values: dict[str, Any], versions: dict[str, str]) -> Any:
    cp = empty_checkpoint()
    cp["id"] = cid
    cp["channel_values"] = values
    cp["channel_versions"] = versions
    return cp


def _frame_rows(backend: Any, thread_id: str) -> int:
    engine = sa.create_engine(backend.url, poolclass=sa.pool.NullPool)
    with engine.connect() as c:
        n = int(c.execute(sa.select(sa.func.count()).select_from(S.blobs).where(
            S.blobs.c.thread_id == thread_id)).scalar_one())
    engine.dispose()
    return n


async def test_a_repeated_put_stores_nothing_twice(any_saver, backend) -> None:
    saver = any_saver
    cfg = {"configurable": {"thread_id": "again", "checkpoint_ns": ""}}
    v = saver.get_next_version(None, None)
    cp = _checkpoint("1f000000-0000-6000-8000-000000000001",
                     {"a": ["x", "y"], "b": {"k": 1}}, {"a": v, "b": v})
    first = await saver.aput(cfg, cp, {"step": 0}, {"a": v, "b": v})
    rows = _frame_rows(backend, "again")
    assert await saver.aput(cfg, cp, {"step": 0}, {"a": v, "b": v}) == first
    assert _frame_rows(backend, "again") == rows
    got = await saver.aget_tuple(first)
    assert got is not None
    assert got.checkpoint["channel_values"] == {"a": ["x", "y"], "b": {"k": 1}}
    assert len([t async for t in saver.alist(cfg)]) == 1


async def test_a_version_reused_by_another_put_adds_its_channels(any_saver) -> None:
    saver = any_saver
    cfg = {"configurable": {"thread_id": "reuse", "checkpoint_ns": ""}}
    v = saver.get_next_version(None, None)
    one = await saver.aput(cfg, _checkpoint("1f000000-0000-6000-8000-000000000001",
                                            {"a": ["x"]}, {"a": v}), {"step": 0}, {"a": v})
    # another put stores channel b under the same version: the frame gains a part
    two = await saver.aput(one, _checkpoint("1f000000-0000-6000-8000-000000000002",
                                            {"a": ["x"], "b": {"k": 2}}, {"a": v, "b": v}),
                           {"step": 1}, {"b": v})
    first, second = await saver.aget_tuple(one), await saver.aget_tuple(two)
    assert first is not None and second is not None
    assert first.checkpoint["channel_values"] == {"a": ["x"]}
    assert second.checkpoint["channel_values"] == {"a": ["x"], "b": {"k": 2}}
    assert second.parent_config is not None
    assert second.parent_config["configurable"]["checkpoint_id"] == one[
        "configurable"]["checkpoint_id"]
