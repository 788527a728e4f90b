"""The shared core of both SQLAlchemy checkpointers: reads, writes and row mapping.

Operations are generators (see ``_protocol``) that never touch a connection; the sync and
async savers only drive them. Statement building, row mapping, delta encoding and caching
therefore exist exactly once. Retention lives in ``_retention``, ``DeltaChannel`` history
in ``_history``.
"""

from __future__ import annotations

import builtins
import json
import random
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any, cast

import sqlalchemy as sa
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    PendingWrite,
    get_checkpoint_id,
    get_serializable_checkpoint_metadata,
    writes_sort_key,
)
from langgraph.checkpoint.serde.base import SerializerProtocol
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Dialect

from relaygraph._sql import recursive_step, upsert
from relaygraph.checkpointers import _history, _retention
from relaygraph.checkpointers import _schema as S
from relaygraph.checkpointers._codec import (
    DELTA,
    DELTA_OF_WRITES,
    FRAME,
    FRAME_REFS,
    FULL,
    SLICE,
    Key3,
    Key4,
    Materializer,
    Part,
    Squeeze,
    Tail,
    TailCache,
    dump,
    encode_channel,
    is_saver_version,
    load,
    pack,
    static_size,
    unpack,
)
from relaygraph.checkpointers._corrupt import load_metadata, reading
from relaygraph.checkpointers._errors import (
    CheckpointerError,
    CorruptCheckpointError,
    SchemaVersionError,
)
from relaygraph.checkpointers._fence import FENCE_KEY, WriteFence
from relaygraph.checkpointers._ids import check_filter, check_key
from relaygraph.checkpointers._protocol import (
    CONFLICT,
    After,
    Emit,
    Op,
    P,
    Q,
    R,
    ThreadInfo,
    _batches,
    _group_keys,
)
from relaygraph.checkpointers._refs import (
    REF,
    REF_MIN,
    REF_VALUE,
    REFS,
    pack_id,
    rebuild,
    ref_checkpoint,
)
from relaygraph.checkpointers._retry import RetryPolicy
from relaygraph.checkpointers._serde import RelaygraphSerializer, default_serde
from relaygraph.checkpointers._stop import per_run
from relaygraph.checkpointers._tdict import (
    DICT_TYPE,
    DICT_VERSION,
    NO_DICTS,
    TAG,
    Dictionaries,
    Pinned,
    Sampler,
    ThreadDict,
    dict_version,
    frame_dict_id,
    pays_on_held_out,
    train,
)

__all__ = ["CONFLICT", "After", "BaseSQLAlchemySaver", "Emit", "Op", "P", "Q", "R",
           "RelaygraphSerializer", "ThreadInfo", "default_serde"]

LIST_PAGE = 200
#: unpacked writes rows by checkpoint: ``[(task id, task path, [[idx, channel, type,
#: payload], ...]), ...]``
WritesRows = dict[tuple[str, str, str], list[tuple[str, str, list[Any]]]]
_PLAIN = object()  # marks entries stored in a frame's shared part 0


def _json_default(obj: Any) -> Any:
    if isinstance(obj, tuple | set | frozenset):
        return list(obj)
    raise TypeError(
        f"checkpoint metadata must be JSON-serializable; got a {type(obj).__name__}: {obj!r}"
    )


#: metadata as stored: compact JSON, non-ASCII as it is (one encoder, not one per put)
_METADATA_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"),
                                  default=_json_default)


class BaseSQLAlchemySaver(BaseCheckpointSaver[str]):
    """Logic shared by :class:`SQLAlchemySaver` and :class:`AsyncSQLAlchemySaver`."""

    _dialect: Dialect  # set by the shell from its engine

    def list_threads(self, *, limit: int | None = None) -> builtins.list[ThreadInfo]:
        """Threads, most recently checkpointed first, without decoding any state."""
        raise NotImplementedError

    async def alist_threads(self, *, limit: int | None = None) -> builtins.list[ThreadInfo]:
        """Async twin of :meth:`list_threads`."""
        raise NotImplementedError

    def __init__(
        self,
        *,
        serde: SerializerProtocol | None = None,
        segment_every: int = 32,
        compress: bool = True,
        cache_size: int = 4096,
        thread_dictionaries: bool = True,
        retry: RetryPolicy | None = None,
    ) -> None:
        super().__init__(serde=serde or default_serde())
        self.retry = retry if retry is not None else RetryPolicy()
        #: the lock and statement timeouts from_conn_string set, for error messages
        self._timeouts: dict[str, float | None] = {}
        if segment_every < 2:
            raise ValueError(f"segment_every must be >= 2, got {segment_every}")
        self.segment_every = segment_every
        self.compress = compress
        self.thread_dictionaries = thread_dictionaries
        self._cache = TailCache(cache_size)
        self._dicts = Dictionaries()
        self._stmts: dict[str, Any] = {}

    def _slice_stmt(self) -> Any:
        stmt = self._stmts.get("slice")
        if stmt is None:
            b = S.blobs
            stmt = sa.update(b).where(
                b.c.thread_id == sa.bindparam("k_thread"),
                b.c.checkpoint_ns == sa.bindparam("k_ns"),
                b.c.version == sa.bindparam("k_version"),
                b.c.channel == sa.bindparam("k_channel"),
                b.c.base == sa.bindparam("k_base"),
            ).values(base=sa.bindparam("new_base"), type=sa.bindparam("new_type"),
                     blob=sa.bindparam("new_blob"))
            self._stmts["slice"] = stmt
        return stmt

    def _upsert(self, name: str) -> Any:
        """Upsert statements, built once per saver (SQLAlchemy then caches their SQL)."""
        stmt = self._stmts.get(name)
        if stmt is None:
            if name == "blobs":
                stmt = upsert(self._dialect, S.blobs,
                              keys=["thread_id", "checkpoint_ns", "version", "part"])
            elif name == "writes":
                stmt = upsert(self._dialect, S.writes,
                              keys=["thread_id", "checkpoint_ns", "checkpoint_id", "task_id"])
            elif name == "checkpoints":
                stmt = upsert(self._dialect, S.checkpoints,
                              keys=["thread_id", "checkpoint_ns", "checkpoint_id"],
                              update=["parent_checkpoint_id", "run_id", "type", "checkpoint",
                                      "metadata"])
            else:
                raise KeyError(name)
            # inserted-row counts tell a new row from a conflict; SQLAlchemy keeps them for
            # INSERTs only when asked
            stmt = stmt.execution_options(preserve_rowcount=True)
            self._stmts[name] = stmt
        return stmt

    def _put_stmt(self, frames: int) -> Any:
        """PostgreSQL: ``frames`` frame rows and the checkpoint row in one statement.

        The frames are inserted in a data-modifying CTE (a conflict leaves a frame alone,
        as the ``blobs`` upsert does), the checkpoint row is upserted, and the statement
        returns how many frames were new. Parameters are ``f<i>_<column>`` and
        ``c_<column>``.
        """
        def build() -> Any:
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            b, c = S.blobs, S.checkpoints
            new_frames = (
                pg_insert(b).values([{col.name: sa.bindparam(f"f{i}_{col.name}", type_=col.type)
                                      for col in b.columns} for i in range(frames)])
                .on_conflict_do_nothing(index_elements=["thread_id", "checkpoint_ns",
                                                        "version", "part"])
                .returning(sa.literal_column("1")).cte("relaygraph_new_frames"))
            ck = pg_insert(c).values({col.name: sa.bindparam(f"c_{col.name}", type_=col.type)
                                      for col in c.columns})
            ck = ck.on_conflict_do_update(
                index_elements=["thread_id", "checkpoint_ns", "checkpoint_id"],
                set_={k: ck.excluded[k] for k in ("parent_checkpoint_id", "run_id", "type",
                                                  "checkpoint", "metadata")})
            return ck.returning(sa.select(sa.func.count()).select_from(new_frames)
                                .scalar_subquery().label("new_frames")).add_cte(new_frames)
        return self._cached(f"put_{frames}", build)

    # -- versions ---------------------------------------------------------------------

    @property
    def get_next_version(self) -> Callable[..., str]:  # type: ignore[override]
        """``get_next_version(current, channel=None)``: see :meth:`_next_version`.

        Each read hands out a function of its own: LangGraph reads it once per run, and
        calls it at every step boundary, where a run whose save failed stops (``_stop``).
        """
        return per_run(self._next_version)

    def _next_version(self, current: str | None, channel: None = None) -> str:
        """Monotonic, collision-free versions: ``<32-digit counter>.<random suffix>``.

        The random suffix keeps versions written on two branches of a fork distinct, which
        the per-version blob rows and delta pointers rely on.
        """
        if current is None:
            n = 0
        elif isinstance(current, int | float):
            n = int(current)
        else:
            n = int(str(current).split(".")[0])
        return f"{n + 1:012d}.{random.getrandbits(24):06x}"

    # -- helpers ----------------------------------------------------------------------

    @staticmethod
    def _ns(config: RunnableConfig) -> tuple[str, str, str | None]:
        conf = config.get("configurable") or {}
        if "thread_id" not in conf or conf["thread_id"] is None:
            raise ValueError(
                "config['configurable']['thread_id'] is required, e.g. "
                "{'configurable': {'thread_id': 'my-thread'}}"
            )
        thread_id = check_key(conf["thread_id"], "thread_id")
        ns = check_key(conf.get("checkpoint_ns") or "", "checkpoint_ns")
        cid = get_checkpoint_id(config)
        if cid is not None:
            cid = check_key(cid, "checkpoint_id", S.MAX_CHECKPOINT_ID)
        return thread_id, ns, cid

    # -- schema version ---------------------------------------------------------------

    #: set once the tables were found at the schema version this code reads and writes
    _schema_ok = False
    #: set when the ``from_conn_string`` block that created the saver ended (its engines
    #: are disposed; a disposed engine would quietly open new connections nobody closes)
    _closed = False

    def _close(self) -> None:
        self._closed = True
        self._schema_ok = False  # the next operation goes by ``_check_open``

    def _check_open(self) -> None:
        if self._closed:
            name = type(self).__name__
            raise CheckpointerError(
                f"this {name} was closed when its from_conn_string() block ended; use it "
                f"(compile and run the graph) inside the block, or create it with "
                f"{name}(engine) on an engine you keep and dispose of yourself")

    def _op_schema_version(self) -> Op:
        m = S.migrations_table
        rows = yield sa.select(sa.func.max(m.c.version)).where(m.c.component == S.COMPONENT)
        return int(rows[0][0] or 0)

    def _check_schema(self, version: int) -> None:
        """Refuse tables of another schema version before anything reads or writes them.

        Ids and versions are stored differently from one schema version to the next: a
        saver on tables that ``setup()`` has not upgraded would find nothing, or fail
        halfway, instead of reading them.
        """
        if version == S.LATEST:
            self._schema_ok = True
        elif version < S.LATEST:
            raise SchemaVersionError(
                f"the relaygraph checkpoint tables in this database are at schema version "
                f"{version}; this relaygraph reads and writes version {S.LATEST}. Call "
                f"saver.setup() (or await saver.asetup(), or run `relaygraph setup --db "
                f"URL`) once: it upgrades them in place and keeps every checkpoint",
                found=version, needed=S.LATEST)
        else:
            raise SchemaVersionError(
                f"the relaygraph checkpoint tables in this database are at schema version "
                f"{version}, newer than this relaygraph's {S.LATEST}: a newer relaygraph "
                f"upgraded them. Upgrade relaygraph in this process too",
                found=version, needed=S.LATEST)

    # -- thread dictionaries (``_tdict``) ---------------------------------------------

    def _forget(self, thread_ids: builtins.list[str]) -> None:
        """Drop what memory holds of these threads (deleted, pruned or copied over)."""
        self._cache.forget_threads(thread_ids)
        self._dicts.forget_threads(thread_ids)

    def _op_dicts(self, rows: Any) -> Op:
        """The thread dictionaries that ``(thread id, type, blob)`` rows name, as a
        :class:`Pinned` to decode them with (those not in memory are fetched)."""
        wanted = [(tid, frame_dict_id(blob)) for tid, type_, blob in rows
                  if type_ and type_.endswith(TAG) and blob]
        if not wanted:
            return NO_DICTS
        pinned, missing = self._dicts.pin(wanted)
        b = S.blobs
        for batch in _batches(missing):
            # one query for any number of threads: a dictionary's id is random, so the
            # pairs the IN lists also allow are not there
            got = yield sa.select(b.c.thread_id, b.c.blob).where(
                b.c.checkpoint_ns == "", b.c.part == 0,
                b.c.thread_id.in_(sorted({tid for tid, _ in batch})),
                b.c.version.in_(sorted({dict_version(i) for _, i in batch})))
            for r in got:
                pinned.add(r.thread_id, self._load_dict(r.thread_id, r.blob))
        return pinned

    def _load_dict(self, thread_id: str, data: bytes) -> ThreadDict:
        try:
            return self._dicts.add(thread_id, ThreadDict(data))
        except Exception as exc:
            raise CorruptCheckpointError(
                f"the compression dictionary stored for thread {thread_id!r} is unreadable: "
                f"{exc}", thread_id=thread_id) from exc

    def _op_new_dict(self, thread_id: str, sampler: Sampler) -> Op:
        """Store a dictionary for the thread (``None``: none is worth it).

        One stored before, by another process, is used as it is. Otherwise the
        dictionary this saver trained last is tried on the sampled rows it has not seen:
        threads of one graph share their names, framing and words, and a copy of it that
        compresses them as well as a dictionary of their own must (``MIN_GAIN`` over the
        fixed one) spares training one (a millisecond or two, and its compressors'
        set-up). Else one is trained on the thread's rows.
        """
        b = S.blobs

        def stored(*where: Any) -> Any:  # a dictionary row of the thread
            return sa.select(b.c.blob).where(
                b.c.thread_id == sa.bindparam("t"), b.c.checkpoint_ns == "", *where)

        got = yield R(self._cached("dict_of_thread", lambda: stored(
            b.c.version >= DICT_VERSION, b.c.version < DICT_VERSION[:-1] + "u").limit(1)),
            {"t": thread_id})
        if got:
            return self._load_dict(thread_id, got[0].blob)
        rows = sampler.rows
        fixed = (sampler.fixed if len(sampler.fixed) == len(rows)
                 else [static_size(r) for r in rows])
        td = self._dicts.recent
        if td is None or not pays_on_held_out(td, rows, fixed):
            td = train(rows, fixed)
            if td is None:
                return None
            self._dicts.recent = td
        key = dict_version(td.dict_id)
        inserted = yield Q(self._upsert("blobs"), [
            {"thread_id": thread_id, "checkpoint_ns": "", "version": key, "part": 0,
             "channel": None, "base": None, "type": DICT_TYPE, "blob": td.data}])
        if inserted != 1:  # the same id, stored first elsewhere: use that one
            got = yield R(self._cached("dict_by_version", lambda: stored(
                b.c.version == sa.bindparam("v"), b.c.part == 0)), {"t": thread_id, "v": key})
            return self._load_dict(thread_id, got[0].blob) if got else None
        return self._dicts.add(thread_id, td)

    @staticmethod
    def _writes_key(config: RunnableConfig) -> tuple[str, str, str] | None:
        """The checkpoint a ``put_writes`` stores at, or a put's parent, if any."""
        conf = config.get("configurable") or {}
        tid, cid = conf.get("thread_id"), conf.get("checkpoint_id")
        if tid is None or cid is None:
            return None
        return str(tid), str(conf.get("checkpoint_ns") or ""), str(cid)

    def _load_checkpoint(self, row: Any, dicts: Pinned = NO_DICTS) -> Checkpoint:
        try:
            body = load(self.serde, row.type, row.checkpoint, dicts, row.thread_id)
        except CorruptCheckpointError:
            raise
        except Exception as exc:
            raise CorruptCheckpointError(
                f"cannot decode checkpoint {row.checkpoint_id!r} of thread {row.thread_id!r} "
                f"(type {row.type!r}): {exc}", thread_id=row.thread_id) from exc
        if not isinstance(body, dict) or "channel_versions" not in body:
            raise CorruptCheckpointError(
                f"checkpoint {row.checkpoint_id!r} of thread {row.thread_id!r} is not a "
                f"checkpoint (decoded a {type(body).__name__})", thread_id=row.thread_id)
        if "id" not in body:
            body["id"] = row.checkpoint_id
        return body  # type: ignore[return-value]

    @staticmethod
    def _load_metadata(row: Any) -> Any:
        return load_metadata(row.metadata, row.thread_id, row.checkpoint_id)

    def _cached(self, name: str, build: Any) -> Any:
        stmt = self._stmts.get(name)
        if stmt is None:
            stmt = self._stmts[name] = build()
        return stmt

    def _in_list(self, name: str, values: Sequence[Any]) -> tuple[int | None, dict[str, Any]]:
        """How ``values`` bind to the cached statement ``name`` takes for an IN list.

        SQLite gets one parameter per value, padded (by repeating the last value) to the
        next power of two: a handful of statements, each compiled once and run on the
        driver connection, where an expanding parameter is compiled on every call.
        Elsewhere: ``(None, {name: values})`` (a PostgreSQL array, an expanding list).
        """
        if self._dialect.name != "sqlite" or not values:
            return None, {name: list(values)}
        n = 1 << (len(values) - 1).bit_length()
        padded = [*values, *[values[-1]] * (n - len(values))]
        return n, {f"{name}{i}": v for i, v in enumerate(padded)}

    @staticmethod
    def _in(column: Any, name: str, slots: int | None) -> Any:
        """``column IN`` the parameters :meth:`_in_list` binds."""
        if slots is None:
            return column.in_(sa.bindparam(name, expanding=True))
        return column.in_([sa.bindparam(f"{name}{i}", type_=column.type)
                           for i in range(slots)])

    def _chain_query(self, thread_id: str, ns: str, versions: Sequence[str], *,
                     keys_only: bool = False) -> R:
        """Every frame needed to rebuild these versions: one recursive query along ``base``.

        Keys are grouped by thread and namespace so that every lookup is a primary-key
        seek (SQLite does not use an index for a row-value ``IN`` list).
        """
        lateral = self._dialect.name == "postgresql"
        slots, params = (None, {"versions": list(versions)}) if lateral else self._in_list(
            "versions", versions)
        return R(self._cached(f"chain:{keys_only}:{slots}",
                              lambda: self._build_chain(keys_only, lateral=lateral,
                                                        slots=slots)),
                 {"t": thread_id, "ns": ns, **params})

    @classmethod
    def _build_chain(cls, keys_only: bool, *, lateral: bool = False,
                     slots: int | None = None) -> sa.Select:
        b = S.blobs
        if lateral:  # PostgreSQL: one statement text whatever the number of versions
            wanted = b.c.version == sa.any_(sa.bindparam("versions", type_=ARRAY(b.c.version.type)))
        else:
            wanted = cls._in(b.c.version, "versions", slots)
        anchor = (
            sa.select(b.c.thread_id, b.c.checkpoint_ns, b.c.version, b.c.channel, b.c.base)
            .where(b.c.thread_id == sa.bindparam("t"), b.c.checkpoint_ns == sa.bindparam("ns"),
                   wanted)
            .cte("relaygraph_chain", recursive=True)
        )
        b2 = b.alias("b2")
        step = sa.select(b2.c.thread_id, b2.c.checkpoint_ns, b2.c.version, b2.c.channel,
                         b2.c.base).where(
            b2.c.thread_id == anchor.c.thread_id,
            b2.c.checkpoint_ns == anchor.c.checkpoint_ns,
            b2.c.version == anchor.c.base,
            b2.c.channel == anchor.c.channel,
        )
        chain = recursive_step(anchor, step, lateral=lateral, distinct=True)
        cols = [b.c.thread_id, b.c.checkpoint_ns, b.c.version, b.c.part]
        if not keys_only:
            cols += [b.c.base, b.c.type, b.c.blob]
        return sa.select(*cols).join(
            chain,
            sa.and_(
                b.c.thread_id == chain.c.thread_id,
                b.c.checkpoint_ns == chain.c.checkpoint_ns,
                b.c.version == chain.c.version,
                sa.or_(b.c.channel == chain.c.channel,
                       sa.and_(b.c.channel.is_(None), chain.c.channel.is_(None))),
            ),
        )

    def _op_frames(self, keys: Sequence[Key3], known: WritesRows | None = None) -> Op:
        """Frames (all parts, in part order) for ``keys`` and every base they rest on.

        ``known`` holds writes rows the caller already fetched (see ``_op_fetch_writes``),
        which deltas that point at writes are rebuilt from before anything is queried.
        """
        got: dict[Key3, dict[int, Part]] = defaultdict(dict)
        with_refs: list[tuple[Key3, dict[str, list[Any]]]] = []
        for (tid, ns), versions in _group_keys(keys).items():
            for batch in _batches(versions):
                rows = yield self._chain_query(tid, ns, batch)
                dicts = yield from self._op_dicts((r.thread_id, r.type, r.blob) for r in rows)
                for r in rows:
                    entries = unpack(r.type, r.blob, f"frame {r.version!r}", r.thread_id,
                                     dicts)
                    key = (r.thread_id, r.checkpoint_ns, r.version)
                    got[key][r.part] = Part(r.base, entries)
                    if r.type.startswith(FRAME_REFS):
                        with_refs.append((key, entries))
        if with_refs:
            yield from self._op_resolve_refs(with_refs, known)
        # Frames of ``keys`` come with all their parts; frames reached along a chain come
        # with that channel's part only, so callers merge by part number.
        return got

    def _op_resolve_refs(self, parts: Sequence[tuple[Key3, dict[str, list[Any]]]],
                         known: WritesRows | None = None) -> Op:
        """Turn the entries that point at task writes into the deltas they stand for.

        The writes rows of every referenced checkpoint not in ``known`` are fetched (one
        query per thread and namespace); ``parts`` are updated in place.
        """
        known = {} if known is None else known
        cache = self._cache.writes
        todo = []
        for (tid, ns, version), entries in parts:
            for ch, e in entries.items():
                if e[0] in REFS:
                    rkey = cache.ref_key(tid, ns, e)
                    hit = cache.resolved(rkey)
                    if hit is not None:
                        entries[ch] = [FULL if e[0] == REF_VALUE else DELTA_OF_WRITES, *hit]
                    else:
                        todo.append((tid, ns, version, ch, e, entries, rkey))
        if not todo:
            return None
        wanted = {(tid, ns, ref_checkpoint(e)) for tid, ns, _, _, e, _, _ in todo}
        yield from self._op_fetch_writes(sorted(wanted), known)
        lookups: dict[Key3, dict[tuple[str, int], tuple[str, bytes]]] = {
            k: {(task_id, int(it[0])): (it[2], it[3])
                for task_id, _, items in known[k] for it in items}
            for k in wanted}
        done = []
        for tid, ns, version, ch, e, entries, rkey in todo:
            cid = ref_checkpoint(e)
            whole = e[0] == REF_VALUE
            t, b = rebuild(e[2][1], lookups[(tid, ns, cid)], thread_id=tid, channel=ch,
                           version=version, checkpoint_id=cid, whole=whole)
            entries[ch] = [FULL if whole else DELTA_OF_WRITES, t, b]
            done.append((rkey, (t, b)))
        cache.remember_resolved(done)
        return None

    def _op_fetch_writes(self, ckpts: Sequence[Key3], into: WritesRows) -> Op:
        """Fetch and unpack the writes rows of the checkpoints ``into`` lacks."""
        missing = [k for k in dict.fromkeys(ckpts) if k not in into]
        for k in missing:
            into[k] = []
        for (tid, ns), ids in _group_keys(missing).items():
            for batch in _batches(ids):
                slots, params = self._in_list("ids", batch)
                rows = yield R(self._writes_for(slots), {"t": tid, "ns": ns, **params})
                dicts = yield from self._op_dicts((r.thread_id, r.type, r.blob) for r in rows)
                for r in rows:
                    into[(r.thread_id, r.checkpoint_ns, r.checkpoint_id)].append(
                        (r.task_id, r.task_path,
                         unpack(r.type, r.blob, f"writes of task {r.task_id!r}", r.thread_id,
                                dicts, writes=True)))
        return into

    def _writes_for(self, slots: int | None) -> Any:
        w = S.writes
        return self._cached(f"writes_for:{slots}", lambda: sa.select(
            w.c.thread_id, w.c.checkpoint_ns, w.c.checkpoint_id, w.c.task_id,
            w.c.task_path, w.c.type, w.c.blob,
        ).where(w.c.thread_id == sa.bindparam("t"), w.c.checkpoint_ns == sa.bindparam("ns"),
                self._in(w.c.checkpoint_id, "ids", slots)))

    def _op_writes(self, ckpts: Sequence[Key3], channels: set[str] | None = None,
                   known: WritesRows | None = None) -> Op:
        """Pending writes of ``ckpts`` (those in ``known`` are not fetched again)."""
        known = {} if known is None else known
        yield from self._op_fetch_writes(ckpts, known)
        return {k: self._pending(k[0], known[k], channels) for k in ckpts if known[k]}

    def _pending(self, thread_id: str, tasks: Sequence[tuple[str, str, list[Any]]],
                 channels: set[str] | None = None) -> list[PendingWrite]:
        out = [w for task_id, task_path, items in tasks
               for w in self._decode_items(thread_id, task_id, task_path, items, channels)]
        return [pw for _, pw in sorted(out, key=lambda x: x[0])]

    def _decode_writes(self, thread_id: str, task_id: str, task_path: str, type_: str,
                       blob: bytes, dicts: Pinned = NO_DICTS,
                       channels: set[str] | None = None,
                       ) -> list[tuple[tuple[str, str, int], PendingWrite]]:
        items = unpack(type_, blob, f"writes of task {task_id!r}", thread_id, dicts,
                       writes=True)
        return self._decode_items(thread_id, task_id, task_path, items, channels)

    def _decode_items(self, thread_id: str, task_id: str, task_path: str, items: list[Any],
                      channels: set[str] | None = None,
                      ) -> list[tuple[tuple[str, str, int], PendingWrite]]:
        out = []
        for idx, channel, wtype, payload in items:
            if channels is not None and channel not in channels:
                continue
            try:
                val = self.serde.loads_typed((wtype, payload))
            except Exception as exc:
                raise CorruptCheckpointError(
                    f"cannot decode write {task_id!r}/{idx} to channel {channel!r} "
                    f"of thread {thread_id!r} (type {wtype!r}): {exc}",
                    thread_id=thread_id, channel=channel) from exc
            out.append((writes_sort_key(task_path, task_id, idx), (task_id, channel, val)))
        return out

    def _tuple(self, row: Any, checkpoint: Checkpoint, values: dict[str, Any],
               metadata: CheckpointMetadata, pending: list[PendingWrite]) -> CheckpointTuple:
        checkpoint = {**checkpoint, "channel_values": values}  # type: ignore[assignment]
        cfg: RunnableConfig = {"configurable": {
            "thread_id": row.thread_id, "checkpoint_ns": row.checkpoint_ns,
            "checkpoint_id": row.checkpoint_id}}
        parent: RunnableConfig | None = None
        if row.parent_checkpoint_id:
            parent = {"configurable": {
                "thread_id": row.thread_id, "checkpoint_ns": row.checkpoint_ns,
                "checkpoint_id": row.parent_checkpoint_id}}
        return CheckpointTuple(cfg, checkpoint, metadata, parent, pending)

    def _values(self, mat: Materializer, row: Any, checkpoint: Checkpoint) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for ch, ver in checkpoint["channel_versions"].items():
            present, val = mat.value((row.thread_id, row.checkpoint_ns, ch, str(ver)))
            if present:
                values[ch] = val
        return values

    _ckpt_cols = (
        S.checkpoints.c.thread_id, S.checkpoints.c.checkpoint_ns, S.checkpoints.c.checkpoint_id,
        S.checkpoints.c.parent_checkpoint_id, S.checkpoints.c.type, S.checkpoints.c.checkpoint,
        S.checkpoints.c.metadata,
    )

    # -- get_tuple --------------------------------------------------------------------

    def _build_head(self, latest: bool) -> sa.Select:
        """The checkpoint row and its writes in one query (one row per task's writes)."""
        c, w = S.checkpoints, S.writes
        q = sa.select(*self._ckpt_cols).where(c.c.thread_id == sa.bindparam("t"),
                                                c.c.checkpoint_ns == sa.bindparam("ns"))
        q = (q.order_by(c.c.checkpoint_id.desc()).limit(1) if latest
             else q.where(c.c.checkpoint_id == sa.bindparam("cid")))
        head = q.subquery("head")
        return sa.select(
            *head.c, w.c.task_id, w.c.task_path, w.c.type.label("w_type"),
            w.c.blob.label("w_blob"),
        ).select_from(head.outerjoin(w, sa.and_(
            w.c.thread_id == head.c.thread_id, w.c.checkpoint_ns == head.c.checkpoint_ns,
            w.c.checkpoint_id == head.c.checkpoint_id)))

    def _op_get_tuple(self, config: RunnableConfig) -> Op:
        thread_id, ns, cid = self._ns(config)
        if cid:
            rows = yield R(self._cached("head_by_id", lambda: self._build_head(False)),
                           {"t": thread_id, "ns": ns, "cid": cid})
        else:
            rows = yield R(self._cached("head_latest", lambda: self._build_head(True)),
                           {"t": thread_id, "ns": ns})
        if not rows:
            if not cid:
                # the thread is empty (perhaps deleted by another process): the task
                # writes of its next run must not use a dictionary it had before
                yield After(lambda: self._dicts.mark_empty(thread_id, ns))
            return None
        row = rows[0]
        with reading(thread_id, row.checkpoint_id):
            return (yield from self._op_decode_head(thread_id, ns, rows))

    def _op_decode_head(self, thread_id: str, ns: str, rows: Sequence[Any]) -> Op:
        row = rows[0]
        dicts = yield from self._op_dicts([(thread_id, row.type, row.checkpoint),
                                           *((thread_id, r.w_type, r.w_blob) for r in rows
                                             if r.task_id is not None)])
        pending = sorted((w for r in rows if r.task_id is not None
                          for w in self._decode_writes(thread_id, r.task_id, r.task_path,
                                                       r.w_type, r.w_blob, dicts)),
                         key=lambda x: x[0])
        checkpoint = self._load_checkpoint(row, dicts)
        keys = [(thread_id, ns, str(v)) for v in checkpoint["channel_versions"].values()]
        frames = (yield from self._op_frames(keys)) if keys else {}
        mat = Materializer(self.serde, frames, shared=False)
        values = self._values(mat, row, checkpoint)
        tails = [(k, t) for k, t in mat.tails]
        versions = dict(checkpoint["channel_versions"])
        used = (dicts.get(thread_id, frame_dict_id(row.checkpoint))
                if row.type.endswith(TAG) else None)

        def remember() -> None:
            self._cache.remember(tails, [((thread_id, ns, row.checkpoint_id), versions)])
            self._dicts.mark((thread_id, ns, row.checkpoint_id), used)

        yield After(remember)
        return self._tuple(row, checkpoint, values, self._load_metadata(row),
                           [pw for _, pw in pending])

    # -- list -------------------------------------------------------------------------

    def _op_list(self, config: RunnableConfig | None, filter: dict[str, Any] | None,
                 before: RunnableConfig | None, limit: int | None) -> Op:
        flt = check_filter(filter)
        c = S.checkpoints
        q = sa.select(*self._ckpt_cols)
        if config is not None:
            conf = config.get("configurable") or {}
            if conf.get("thread_id") is not None:
                q = q.where(c.c.thread_id == check_key(conf["thread_id"], "thread_id"))
            if conf.get("checkpoint_ns") is not None:
                q = q.where(c.c.checkpoint_ns == check_key(conf["checkpoint_ns"],
                                                           "checkpoint_ns"))
            if (cid := get_checkpoint_id(config)) is not None:
                q = q.where(c.c.checkpoint_id == check_key(cid, "checkpoint_id",
                                                           S.MAX_CHECKPOINT_ID))
        if before is not None and (bid := get_checkpoint_id(before)) is not None:
            q = q.where(c.c.checkpoint_id < check_key(bid, "checkpoint_id", S.MAX_CHECKPOINT_ID))
        q = q.order_by(c.c.checkpoint_id.desc(), c.c.thread_id, c.c.checkpoint_ns)
        if limit is not None and limit <= 0:
            return None
        page = LIST_PAGE if flt or limit is None else min(limit, LIST_PAGE)
        remaining = limit
        offset = 0
        frames: dict[Key3, dict[int, Part]] = defaultdict(dict)
        complete: set[Key3] = set()  # frames fetched with all their parts
        known: WritesRows = {}
        mat = Materializer(self.serde, frames, shared=True)
        while True:
            rows = yield q.limit(page).offset(offset)
            offset += len(rows)
            picked = []
            for row in rows:
                md: dict[str, Any] = dict(self._load_metadata(row))
                if flt and any(k not in md or md[k] != v for k, v in flt.items()):
                    continue
                picked.append((row, cast(CheckpointMetadata, md)))
                if remaining is not None and len(picked) >= remaining:
                    break
            if picked:
                dicts = yield from self._op_dicts(
                    (r.thread_id, r.type, r.checkpoint) for r, _ in picked)
                decoded: list[tuple[Any, CheckpointMetadata, Checkpoint]] = []
                for row, meta in picked:
                    with reading(row.thread_id, row.checkpoint_id):
                        decoded.append((row, meta, self._load_checkpoint(row, dicts)))
                keys = [(row.thread_id, row.checkpoint_ns, str(v))
                        for row, _, cp in decoded for v in cp["channel_versions"].values()]
                # these checkpoints' writes: their pending writes, and mostly also the
                # items of the deltas their children's versions point at
                first = decoded[0][0]
                with reading(first.thread_id, None if len(decoded) > 1 else first.checkpoint_id):
                    pending = yield from self._op_writes(
                        [(r.thread_id, r.checkpoint_ns, r.checkpoint_id) for r, _, _ in decoded],
                        known=known)
                    need = [k for k in dict.fromkeys(keys) if k not in complete]
                    if need:
                        for k, parts in (yield from self._op_frames(need, known)).items():
                            frames[k].update(parts)
                        complete.update(need)
                for row, meta, cp in decoded:
                    with reading(row.thread_id, row.checkpoint_id):
                        values = self._values(mat, row, cp)
                    yield Emit(self._tuple(
                        row, cp, values, meta,
                        pending.get((row.thread_id, row.checkpoint_ns, row.checkpoint_id), [])))
                if remaining is not None:
                    remaining -= len(picked)
                    if remaining <= 0:
                        return None
            if len(rows) < page:
                return None

    # -- put --------------------------------------------------------------------------

    def _op_put(self, config: RunnableConfig, checkpoint: Checkpoint,
                metadata: CheckpointMetadata, new_versions: ChannelVersions) -> Op:
        thread_id, ns, parent_id = self._ns(config)
        cid = check_key(checkpoint["id"], "checkpoint id", S.MAX_CHECKPOINT_ID)
        # the id is the row's key: not stored twice
        body = {k: v for k, v in checkpoint.items() if k not in ("channel_values", "id")}
        values = checkpoint["channel_values"]
        z: Squeeze = None
        sampler: Sampler | None = None
        if self.compress and self.thread_dictionaries:
            z = self._dicts.for_put(thread_id, ns, parent_id)
            if isinstance(z, Sampler) and z.ready():
                sampler = z
                z = yield from self._op_new_dict(thread_id, z)
        ctype, cblob = dump(self.serde, body, self.compress, z)
        md = get_serializable_checkpoint_metadata(config, metadata)
        md_json = _METADATA_JSON.encode(md)
        parent_versions = (self._cache.versions((thread_id, ns, parent_id))
                           if parent_id else None)
        # version -> base -> {channel: entry}
        groups: dict[str, dict[str, tuple[Any, list[Any]]]] = defaultdict(dict)
        tails: list[tuple[Key4, Tail]] = []
        superseded: list[Key4] = []
        rewrites: list[dict[str, Any]] = []
        resolved: list[tuple[Any, tuple[str, bytes]]] = []  # references and their bytes
        for ch, ver in new_versions.items():
            check_key(ch, "channel name", S.MAX_CHANNEL)
            sver = check_key(str(ver), "channel version", S.VERSION_LEN)
            pver = parent_versions.get(ch) if parent_versions else None
            pver_s = str(pver) if pver is not None else None
            tail = self._cache.tail((thread_id, ns, ch, pver_s)) if pver_s else None
            if tail is not None and pver_s is not None and pver_s != sver:
                superseded.append((thread_id, ns, ch, pver_s))
            base, entry, new_tail, slices = encode_channel(
                self.serde, value=values.get(ch), present=ch in values, version=sver,
                parent_version=pver_s, tail=tail, segment_every=self.segment_every)
            if parent_id is not None and entry[0] in (DELTA, FULL) and (
                    entry[0] == FULL) == (new_tail is None) and len(entry[2]) >= REF_MIN:
                # the parent's writes hold these very bytes: point at them (a delta then
                # needs no rewrite when its segment is written)
                whole = entry[0] == FULL
                parent = (thread_id, ns, parent_id)
                refs = (self._cache.writes.match_value(parent, ch, entry[1], entry[2])
                        if whole else
                        self._cache.writes.match(parent, ch, entry[1], entry[2]))
                if refs is not None:
                    pointer = [REF_VALUE if whole else REF, entry[1],
                               [pack_id(parent_id), refs]]
                    resolved.append((self._cache.writes.ref_key(thread_id, ns, pointer),
                                     (entry[1], entry[2])))
                    entry = pointer
                    if new_tail is not None:
                        new_tail = Tail(new_tail.items, new_tail.depth, new_tail.seg_start,
                                        new_tail.seg_version, new_tail.window[:-1])
            for v, old_base, count in slices:
                t, b = pack({ch: [SLICE, "", count]}, False)
                rewrites.append({"k_thread": thread_id, "k_ns": ns, "k_version": v,
                                 "k_channel": ch, "k_base": old_base, "new_base": sver,
                                 "new_type": t, "new_blob": b})
            # values that are not lists share part 0; each list channel gets its own part
            listy = isinstance(values.get(ch), list)
            groups[sver][ch] = (base if listy else _PLAIN, entry)
            if new_tail is not None:
                tails.append(((thread_id, ns, ch, sver), new_tail))
        frame_rows = []
        for ver, by_channel in groups.items():
            parts: list[tuple[str | None, str | None, dict[str, list[Any]]]] = []
            plain = {ch: e for ch, (b, e) in by_channel.items() if b is _PLAIN}
            listed = [(ch, b, e) for ch, (b, e) in sorted(by_channel.items())
                      if b is not _PLAIN]
            # a reference is never rewritten as a slice: it shares the plain values' row
            ref = next((x for x in listed if x[2][0] == REF), None)
            if ref is not None:
                listed.remove(ref)
                parts.append((ref[0], ref[1], {**plain, ref[0]: ref[2]}))
            elif plain:
                parts.append((None, None, plain))
            for ch, base, entry in listed:
                parts.append((ch, base, {ch: entry}))
            for part, (channel, base, entries) in enumerate(parts):
                kind = (FRAME_REFS if any(e[0] in REFS for e in entries.values())
                        else FRAME)
                t, b = pack(entries, self.compress, kind, z)
                frame_rows.append({"thread_id": thread_id, "checkpoint_ns": ns, "version": ver,
                                   "part": part, "channel": channel, "base": base, "type": t,
                                   "blob": b})
        ckpt = Q(self._upsert("checkpoints"), [
            {"thread_id": thread_id, "checkpoint_ns": ns, "checkpoint_id": cid,
             "parent_checkpoint_id": parent_id, "run_id": _run_id(md), "type": ctype,
             "checkpoint": cblob, "metadata": md_json}])
        if all(is_saver_version(v) for v in groups):
            # The saver's own versions are unique per put (a counter plus a random
            # suffix), so an existing frame is this very put repeated: the writes go out
            # together (frames, then slices, then the checkpoint row that makes them
            # visible), and the rare leftover conflict is merged after.
            if (self._dialect.name == "postgresql" and not rewrites
                    and 0 < len(frame_rows) <= PUT_FRAMES_MAX):
                # one statement stores both (atomic on its own; cheaper than a pipeline)
                params = {f"f{i}_{k}": v for i, row in enumerate(frame_rows)
                          for k, v in row.items()}
                params.update({f"c_{k}": v for k, v in ckpt.params[0].items()})
                rows = yield R(self._put_stmt(len(frame_rows)), params)
                if int(rows[0][0]) != len(frame_rows):
                    yield from self._op_frames_conflict(frame_rows)
            else:
                writes = [Q(self._upsert("blobs"), frame_rows)] if frame_rows else []
                if rewrites:
                    writes.append(Q(self._slice_stmt(), rewrites))
                counts = yield P([*writes, ckpt])
                if frame_rows and counts[0] != len(frame_rows):
                    yield from self._op_frames_conflict(frame_rows)
        else:
            if frame_rows:
                inserted = yield Q(self._upsert("blobs"), frame_rows)
                if inserted != len(frame_rows):
                    yield from self._op_frames_conflict(frame_rows)
            if rewrites:
                # the new segment holds these deltas' items: keep only a count in them
                yield Q(self._slice_stmt(), rewrites)
            yield ckpt
        versions = dict(checkpoint["channel_versions"])
        used = z if isinstance(z, ThreadDict) else None

        def remember() -> None:
            self._cache.remember(tails, [((thread_id, ns, cid), versions)], superseded)
            if sampler is not None:
                self._dicts.installed(thread_id, ns, used)
            self._dicts.mark((thread_id, ns, cid), used)
            self._cache.writes.remember_resolved(resolved)
            if parent_id is not None:
                # the parent's writes served this put's references; like the superseded
                # tails, only a fork from the parent would look at them again
                self._cache.writes.drop((thread_id, ns, parent_id))

        yield After(remember)
        return {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns,
                                 "checkpoint_id": cid}}

    @staticmethod
    def _fence(config: RunnableConfig) -> WriteFence | None:
        """The write fence a run put in its config (see ``_fence``), if any."""
        conf = config.get("configurable")
        return conf.get(FENCE_KEY) if conf else None

    def _op_fenced(self, fence: WriteFence, make: Any, *args: Any) -> Op:
        """``make(*args)`` behind ``fence``: its statement runs first, in the same
        transaction, and holds its lock until the op's writes are committed."""
        stmt, params = fence.fence_statement()
        fence.fence_check((yield R(stmt, params)))
        return (yield from make(*args))

    # -- put_writes -------------------------------------------------------------------

    def _op_put_writes(self, config: RunnableConfig, writes: Sequence[tuple[str, Any]],
                       task_id: str, task_path: str, merge: bool = True) -> Op:
        """Store a task's writes as one row.

        With ``merge=False`` (one autocommitted statement, the common case) a conflict
        with writes already stored for the task returns :data:`CONFLICT` so the caller
        can redo it with ``merge=True`` in a transaction.
        """
        thread_id, ns, cid = self._ns(config)
        if cid is None:
            raise ValueError("put_writes needs config['configurable']['checkpoint_id']")
        task_id = check_key(task_id, "task_id", S.MAX_TASK_ID)
        items: list[list[Any]] = []
        for i, (channel, value) in enumerate(writes):
            check_key(channel, "channel name", S.MAX_CHANNEL)
            t, b = self.serde.dumps_typed(value)
            items.append([WRITES_IDX_MAP.get(channel, i), channel, t, b])
        if not items:
            return None
        key = {"thread_id": thread_id, "checkpoint_ns": ns, "checkpoint_id": cid,
               "task_id": task_id}
        z = (self._dicts.for_writes(thread_id, ns, cid)
             if self.compress and self.thread_dictionaries else None)
        t, b = pack(items, self.compress, z=z)
        inserted = yield Q(self._upsert("writes"), [
            {**key, "task_path": task_path or "", "type": t, "blob": b}])
        ckpt_key = (thread_id, ns, cid)
        if inserted == 1:
            yield After(lambda: self._cache.writes.add(ckpt_key, task_id, task_path or "",
                                                       items))
            return None
        if not merge:
            return CONFLICT
        # merged with writes stored before: deltas do not point at this checkpoint's
        yield After(lambda: self._cache.writes.drop(ckpt_key))
        # The task already has writes here: regular writes keep the first value per index,
        # special ones (errors, interrupts, resumes) replace theirs.
        w = S.writes
        rows = yield sa.select(w.c.type, w.c.blob).where(*(w.c[k] == v for k, v in key.items()))
        dicts = yield from self._op_dicts((thread_id, r.type, r.blob) for r in rows)
        merged: dict[int, list[Any]] = {int(it[0]): it for it in unpack(
            rows[0].type, rows[0].blob, "writes", thread_id, dicts, writes=True)} if rows else {}
        special = all(wr[0] in WRITES_IDX_MAP for wr in writes)
        for it in items:
            idx = int(it[0])
            if special or idx not in merged:
                merged[idx] = it
        t, b = pack(sorted(merged.values(), key=lambda it: it[0]), self.compress,
                    z=z if isinstance(z, ThreadDict) else None)
        yield sa.update(w).where(*(w.c[k] == v for k, v in key.items())).values(
            type=t, blob=b, task_path=task_path or "")
        return None

    def _op_frames_conflict(self, frame_rows: list[dict[str, Any]]) -> Op:
        """Some frames already existed: store ours as extra parts (first entry wins)."""
        b = S.blobs
        for row in frame_rows:
            existing = yield sa.select(b.c.part, b.c.type, b.c.blob).where(
                b.c.thread_id == row["thread_id"], b.c.checkpoint_ns == row["checkpoint_ns"],
                b.c.version == row["version"])
            if any(e.type == row["type"] and e.blob == row["blob"] for e in existing):
                continue  # this very frame was stored before (a repeated put)
            row = {**row, "part": max(e.part for e in existing) + 1}
            yield sa.insert(b).values(**row)

    # -- deletion, copy, retention (``_retention``) and DeltaChannel (``_history``) --------

    _op_delete_thread = _retention.delete_thread
    _op_delete_for_runs = _retention.delete_for_runs
    _op_delete_checkpoints = _retention.delete_checkpoints
    _op_gc_blobs = _retention.gc_blobs
    _op_copy_thread = _retention.copy_thread
    _op_prune = _retention.prune
    _op_delta_history = _history.delta_history

    # -- threads ------------------------------------------------------------------------

    def _op_threads(self, limit: int | None) -> Op:
        c = S.checkpoints
        latest: Any = sa.func.max(c.c.checkpoint_id)
        if self._dialect.name == "postgresql":
            # PostgreSQL has no max() over bytea; hex text in the C collation sorts alike
            latest = sa.func.decode(sa.func.max(
                sa.func.encode(c.c.checkpoint_id, "hex").collate("C")), "hex",
                type_=c.c.checkpoint_id.type)
        q = (sa.select(c.c.thread_id, latest.label("latest"), sa.func.count().label("n"))
             .where(c.c.checkpoint_ns == "").group_by(c.c.thread_id)
             .order_by(latest.desc(), c.c.thread_id))
        if limit is not None:
            q = q.limit(limit)
        rows = yield q
        return [ThreadInfo(r.thread_id, r.latest, int(r.n)) for r in rows]

#: the most frame rows one put stores in a single statement on PostgreSQL (more go out
#: as a pipeline); a statement is cached for each count up to this
PUT_FRAMES_MAX = 8


def _run_id(md: CheckpointMetadata) -> str | None:
    rid = md.get("run_id")
    if rid is None:
        return None
    return check_key(rid, "run_id")

