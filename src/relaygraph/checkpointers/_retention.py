"""Deleting, copying and pruning threads without breaking delta chains.

Each function is an operation generator of the shared core (see ``_protocol``); the saver
classes bind them as methods.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from relaygraph.checkpointers import _schema as S
from relaygraph.checkpointers._codec import DELTA, DELTA_OF_WRITES, FRAME_REFS, Key3, pack, unpack
from relaygraph.checkpointers._corrupt import load_metadata
from relaygraph.checkpointers._ids import check_key, check_keys
from relaygraph.checkpointers._protocol import After, Op, _batches, _group_keys
from relaygraph.checkpointers._refs import REFS, ref_checkpoint
from relaygraph.checkpointers._tdict import TAG, frame_dict_id, parse_dict_version

if TYPE_CHECKING:
    from relaygraph.checkpointers._base import BaseSQLAlchemySaver


def delete_thread(saver: BaseSQLAlchemySaver, thread_id: str) -> Op:
    tid = check_key(thread_id, "thread_id")
    for t in (S.writes, S.blobs, S.checkpoints):
        yield sa.delete(t).where(t.c.thread_id == tid)
    yield After(lambda: saver._forget([tid]))


def delete_for_runs(saver: BaseSQLAlchemySaver, run_ids: Sequence[str]) -> Op:
    runs = check_keys(run_ids, "run_id", "delete_for_runs")
    if not runs:
        return None
    c = S.checkpoints
    doomed: list[tuple[str, str, str]] = []
    for batch in _batches(runs):
        rows = yield sa.select(c.c.thread_id, c.c.checkpoint_ns, c.c.checkpoint_id).where(
            c.c.run_id.in_(list(batch)))
        doomed.extend((r.thread_id, r.checkpoint_ns, r.checkpoint_id) for r in rows)
    yield from delete_checkpoints(saver, doomed)
    threads = sorted({d[0] for d in doomed})
    yield After(lambda: saver._forget(threads))


def delete_checkpoints(saver: BaseSQLAlchemySaver, keys: Sequence[tuple[str, str, str]]) -> Op:
    """Delete checkpoints, the frames no other checkpoint reaches, and their writes.

    Deltas of surviving frames that point at the doomed checkpoints' writes get those
    items copied in first (see ``_refs``), so no reachable chain breaks.
    """
    groups = _group_keys(keys)
    c, w = S.checkpoints, S.writes
    for (tid, ns), ids in groups.items():
        for batch in _batches(ids):
            yield sa.delete(c).where(c.c.thread_id == tid, c.c.checkpoint_ns == ns,
                                     c.c.checkpoint_id.in_(list(batch)))
    yield from gc_blobs(saver, sorted({tid for tid, _ in groups}))
    for (tid, ns), ids in groups.items():
        yield from inline_refs(saver, tid, ns, set(ids))
        for batch in _batches(ids):
            yield sa.delete(w).where(w.c.thread_id == tid, w.c.checkpoint_ns == ns,
                                     w.c.checkpoint_id.in_(list(batch)))


def inline_refs(saver: BaseSQLAlchemySaver, tid: str, ns: str, doomed: set[str]) -> Op:
    """Copy into their frames the items of deltas that point at ``doomed``'s writes."""
    b = S.blobs
    rows = yield sa.select(b.c.version, b.c.part, b.c.channel, b.c.base, b.c.type,
                           b.c.blob).where(b.c.thread_id == tid, b.c.checkpoint_ns == ns,
                                           b.c.type.startswith(FRAME_REFS))
    dicts = yield from saver._op_dicts((tid, r.type, r.blob) for r in rows)
    parts = []
    for r in rows:
        entries = unpack(r.type, r.blob, f"frame {r.version!r}", tid, dicts)
        if any(e[0] in REFS and ref_checkpoint(e) in doomed for e in entries.values()):
            parts.append(((tid, ns, r.version), entries, r))
    if not parts:
        return None
    yield from saver._op_resolve_refs([(key, entries) for key, entries, _ in parts])
    # the rewritten frames keep a dictionary the thread already uses, if any
    z = next((dicts.get(tid, frame_dict_id(r.blob)) for _, _, r in parts
              if r.type.endswith(TAG)), None)
    for (_, _, version), entries, r in parts:
        where = (b.c.thread_id == tid, b.c.checkpoint_ns == ns, b.c.version == version)
        # every reference of the part is resolved now: whole values are plain entries
        delta = {ch: [DELTA, e[1], e[2]] for ch, e in entries.items() if e[0] == DELTA_OF_WRITES}
        rest = {ch: e for ch, e in entries.items() if ch not in delta}
        if not delta:
            t, blob = pack(rest, saver.compress, z=z)
            yield sa.update(b).where(*where, b.c.part == r.part).values(type=t, blob=blob)
        elif rest:
            # the reference shared the row of the plain values; as a delta it may be
            # rewritten as a slice some day, so it moves to a part of its own
            top = yield sa.select(sa.func.max(b.c.part)).where(*where)
            t, blob = pack(delta, saver.compress, z=z)
            yield sa.insert(b).values(thread_id=tid, checkpoint_ns=ns, version=version,
                                      part=int(top[0][0]) + 1, channel=r.channel,
                                      base=r.base, type=t, blob=blob)
            t, blob = pack(rest, saver.compress, z=z)
            yield sa.update(b).where(*where, b.c.part == r.part).values(
                channel=None, base=None, type=t, blob=blob)
        else:
            t, blob = pack(delta, saver.compress, z=z)
            yield sa.update(b).where(*where, b.c.part == r.part).values(type=t, blob=blob)
    return None


def gc_blobs(saver: BaseSQLAlchemySaver, thread_ids: Sequence[str]) -> Op:
    """Delete frames no remaining checkpoint of these threads can reach."""
    c, b = S.checkpoints, S.blobs
    for tid in thread_ids:
        rows = yield sa.select(*saver._ckpt_cols).where(c.c.thread_id == tid)
        dicts = yield from saver._op_dicts((tid, r.type, r.checkpoint) for r in rows)
        wanted: list[Key3] = []
        for row in rows:
            cp = saver._load_checkpoint(row, dicts)
            wanted.extend((tid, row.checkpoint_ns, str(v))
                          for v in cp["channel_versions"].values())
        keep: set[tuple[str, str, str, int]] = set()
        for (_, ns), versions in _group_keys(wanted).items():
            for batch in _batches(versions):
                got = yield saver._chain_query(tid, ns, batch, keys_only=True)
                keep.update((r[0], r[1], r[2], r[3]) for r in got)
        have = yield sa.select(b.c.thread_id, b.c.checkpoint_ns, b.c.version, b.c.part).where(
            b.c.thread_id == tid)
        # the thread's dictionaries stay as long as it has a checkpoint: rows use them
        drop = [tuple(r) for r in have if tuple(r) not in keep
                and not (rows and r[1] == "" and parse_dict_version(r[2]) is not None)]
        for batch in _batches(drop):
            # (version, part) pairs within one thread: a primary-key range per row
            yield sa.delete(b).where(b.c.thread_id == tid, sa.or_(*(
                sa.and_(b.c.checkpoint_ns == r[1], b.c.version == r[2], b.c.part == r[3])
                for r in batch)))


def copy_thread(saver: BaseSQLAlchemySaver, source: str, target: str) -> Op:
    src = check_key(source, "source thread_id")
    dst = check_key(target, "target thread_id")
    if src == dst:
        return None
    for t in (S.writes, S.blobs, S.checkpoints):
        yield sa.delete(t).where(t.c.thread_id == dst)
    for t in (S.checkpoints, S.blobs, S.writes):
        cols = [col.name for col in t.columns]
        sel = sa.select(*[sa.literal(dst, t.c.thread_id.type).label("thread_id")
                          if n == "thread_id" else t.c[n] for n in cols]).where(
            t.c.thread_id == src)
        yield sa.insert(t).from_select(cols, sel)
    yield After(lambda: saver._forget([dst]))


def prune(saver: BaseSQLAlchemySaver, thread_ids: Sequence[str], strategy: str,
          keep_last: int) -> Op:
    if strategy not in ("keep_latest", "delete"):
        raise ValueError(f"strategy must be 'keep_latest' or 'delete', got {strategy!r}")
    if keep_last < 1:
        raise ValueError(f"keep_last must be >= 1, got {keep_last}")
    tids = check_keys(thread_ids, "thread_id", "prune")
    if strategy == "delete":
        for tid in tids:
            yield from delete_thread(saver, tid)
        return None
    c = S.checkpoints
    for tid in tids:
        rows = yield sa.select(c.c.checkpoint_ns, c.c.checkpoint_id,
                               c.c.parent_checkpoint_id, c.c.metadata).where(
            c.c.thread_id == tid).order_by(c.c.checkpoint_ns, c.c.checkpoint_id.desc())
        by_ns: dict[str, list[Any]] = defaultdict(list)
        for r in rows:
            by_ns[r.checkpoint_ns].append(r)
        doomed: list[tuple[str, str, str]] = []
        for ns, items in by_ns.items():
            kept = {r.checkpoint_id for r in items[:keep_last]}
            kept |= _delta_ancestors(tid, items, items[:keep_last])
            doomed.extend((tid, ns, r.checkpoint_id) for r in items
                          if r.checkpoint_id not in kept)
        yield from delete_checkpoints(saver, doomed)
    yield After(lambda: saver._forget(tids))


def _delta_ancestors(thread_id: str, items: Sequence[Any], kept: Sequence[Any]) -> set[str]:
    """Ancestors a kept checkpoint's DeltaChannel values are rebuilt from.

    LangGraph's ``DeltaChannel`` stores values as writes replayed from the nearest
    snapshot, recorded per channel in ``counters_since_delta_snapshot``; those ancestors
    (and their writes) must survive a prune.
    """
    by_id = {r.checkpoint_id: r for r in items}
    out: set[str] = set()
    for r in kept:
        md = load_metadata(r.metadata, thread_id, r.checkpoint_id)
        counters = md.get("counters_since_delta_snapshot") or {}
        depth = max((int(v[1]) for v in counters.values() if isinstance(v, list | tuple)),
                    default=0)
        cur = r
        for _ in range(depth):
            pid = cur.parent_checkpoint_id
            if not pid or pid not in by_id:
                break
            out.add(pid)
            cur = by_id[pid]
    return out
