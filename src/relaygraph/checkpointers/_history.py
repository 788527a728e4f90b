"""``get_delta_channel_history``: LangGraph ``DeltaChannel`` support in a constant
number of queries (ancestor walk, their frames, their writes)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import sqlalchemy as sa
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import DeltaChannelHistory

from relaygraph._sql import recursive_step
from relaygraph.checkpointers import _schema as S
from relaygraph.checkpointers._codec import EMPTY, Key4, Materializer
from relaygraph.checkpointers._corrupt import load_metadata
from relaygraph.checkpointers._protocol import Op, R

if TYPE_CHECKING:
    from relaygraph.checkpointers._base import BaseSQLAlchemySaver


def delta_history(saver: BaseSQLAlchemySaver, config: RunnableConfig,
                  channels: Sequence[str]) -> Op:
    if not channels:
        return {}
    thread_id, ns, cid = saver._ns(config)
    if cid:
        got = yield R(saver._cached("delta_head_by_id", lambda: _build_head(False)),
                      {"t": thread_id, "ns": ns, "cid": cid})
    else:
        got = yield R(saver._cached("delta_head_latest", lambda: _build_head(True)),
                      {"t": thread_id, "ns": ns})
    if not got:
        return {ch: {"writes": []} for ch in channels}
    cid = got[0].checkpoint_id
    # LangGraph counts the supersteps since each delta channel's last snapshot; the
    # walk never needs to go further back than that (plus one for the snapshot).
    md = load_metadata(got[0].metadata, thread_id, cid)
    counters = md.get("counters_since_delta_snapshot") or {}
    spans = [int(counters[ch][1]) for ch in channels
             if isinstance(counters.get(ch), list | tuple) and len(counters[ch]) > 1]
    max_depth = (max(spans) + 1) if spans and len(spans) == len(channels) else 1_000_000
    # 1. the ancestor chain, nearest first, in one recursive query
    lateral = saver._dialect.name == "postgresql"
    rows = yield R(saver._cached("delta_ancestors", lambda: _build_ancestors(lateral)),
                   {"t": thread_id, "ns": ns, "cid": cid, "depth": max_depth})
    dicts = yield from saver._op_dicts((r.thread_id, r.type, r.checkpoint) for r in rows[1:])
    ancestors = []
    seen: set[str] = set()
    for r in rows[1:]:  # the target's own writes and value are not part of the contract
        if r.checkpoint_id in seen:
            break
        seen.add(r.checkpoint_id)
        ancestors.append((r.checkpoint_id, saver._load_checkpoint(r, dicts)["channel_versions"]))
    # 2. the frames of those ancestors' versions: which hold a stored value
    frames = yield from saver._op_frames(list(
        {(thread_id, ns, str(cv[ch])) for _, cv in ancestors for ch in channels
         if ch in cv}))
    mat = Materializer(saver.serde, frames, shared=False)
    chain: dict[str, list[str]] = {ch: [] for ch in channels}
    seeds: dict[str, Key4] = {}
    for acid, cv in ancestors:
        for ch in channels:
            if ch in seeds:
                continue
            chain[ch].append(acid)
            if ch in cv:
                k = (thread_id, ns, ch, str(cv[ch]))
                e = mat.entry(k)
                if e is not None and e[0] != EMPTY:
                    seeds[ch] = k
        if len(seeds) == len(channels):
            break
    # 3. the writes on the path, oldest first
    order = {acid: i for i, (acid, _) in enumerate(ancestors)}
    ids = list(dict.fromkeys(x for ch in channels for x in chain[ch]))
    pending = (yield from saver._op_writes([(thread_id, ns, x) for x in ids],
                                          set(channels))) if ids else {}
    result: dict[str, DeltaChannelHistory] = {}
    for ch in channels:
        mine = set(chain[ch])
        writes = [pw for x in sorted(mine, key=lambda x: -order[x])
                  for pw in pending.get((thread_id, ns, x), []) if pw[1] == ch]
        entry: DeltaChannelHistory = {"writes": writes}
        if ch in seeds:
            present, val = mat.value(seeds[ch])
            if present:
                entry["seed"] = val
        result[ch] = entry
    return result


def _build_head(latest: bool) -> sa.Select:
    c = S.checkpoints
    q = sa.select(c.c.checkpoint_id, c.c.metadata).where(
        c.c.thread_id == sa.bindparam("t"), c.c.checkpoint_ns == sa.bindparam("ns"))
    return (q.order_by(c.c.checkpoint_id.desc()).limit(1) if latest
            else q.where(c.c.checkpoint_id == sa.bindparam("cid")))


def _build_ancestors(lateral: bool) -> sa.Select:
    """A checkpoint and its ancestors up to ``depth`` steps back, nearest first."""
    c = S.checkpoints
    anchor = (sa.select(c.c.checkpoint_id, c.c.parent_checkpoint_id,
                        sa.literal_column("0").label("depth"))
              .where(c.c.thread_id == sa.bindparam("t"), c.c.checkpoint_ns == sa.bindparam("ns"),
                     c.c.checkpoint_id == sa.bindparam("cid"))
              .cte("relaygraph_ancestors", recursive=True))
    c2 = c.alias("c2")
    step = sa.select(c2.c.checkpoint_id, c2.c.parent_checkpoint_id,
                     (anchor.c.depth + 1).label("depth")).where(
        c2.c.thread_id == sa.bindparam("t"), c2.c.checkpoint_ns == sa.bindparam("ns"),
        c2.c.checkpoint_id == anchor.c.parent_checkpoint_id,
        anchor.c.depth < sa.bindparam("depth"))
    walk = recursive_step(anchor, step, lateral=lateral, distinct=False)
    return sa.select(c.c.checkpoint_id, c.c.type, c.c.checkpoint, c.c.thread_id,
                     walk.c.depth).join(
        walk, sa.and_(c.c.thread_id == sa.bindparam("t"),
                      c.c.checkpoint_ns == sa.bindparam("ns"),
                      c.c.checkpoint_id == walk.c.checkpoint_id)).order_by(walk.c.depth)
