"""Value encoding: serde + compression, frames, and append-delta storage of list channels.

Frames. All channels a put stores under one version go into one row, a *frame*: a
msgpack map ``{channel: [kind, serde type, payload]}``, compressed as a whole. Writes are
packed the same way, one row per task. Fewer, larger rows keep bytes per step low and
writes fast.

Deltas. A list channel whose new value extends the value stored for its previous
version (items appended) is stored as only the appended items, in a frame part whose
``base`` is that previous version. Every ``segment_every`` deltas a *segment* entry
merges the items appended since the previous segment and points straight at it, so a
read touches at most ``len/segment_every + segment_every`` rows (one recursive query)
while each item is written at most twice: bytes per step stay flat as a thread grows.
Values that are edited, removed, reordered or not lists are stored whole. When a
segment is written, the deltas it merges are rewritten as *slices* of it (a count, no
payload), so in the end each item is stored once, in its segment. Most deltas never
hold a payload at all: they point at the task writes that hold the same items (see
``_refs``), and those need no rewrite.

Identity of items: an item is unchanged when it is the same object as, or equal to, the
item the saver last stored or loaded at that position. Like LangGraph's reducers, the
saver treats checkpointed values as immutable: mutate a message in place after it was
checkpointed and the change is not seen (return a new message instead).
"""

from __future__ import annotations

import operator
import re
import threading
import zlib
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import ormsgpack
import zstandard
from langgraph.checkpoint.serde.base import SerializerProtocol

from relaygraph.checkpointers._errors import CorruptCheckpointError
from relaygraph.checkpointers._lru import Lru
from relaygraph.checkpointers._refs import REFS, WriteCache
from relaygraph.checkpointers._tdict import TAG, Pinned, Sampler, ThreadDict, frame_dict_id
from relaygraph.checkpointers._zdict import (
    LEVELS,
    SMALL_MAX,
    ZDICT_V1,
    ZDICT_ZS_V1,
    ZDICT_ZS_V2,
)

FULL, DELTA, SEGMENT, EMPTY, SLICE = 0, 1, 2, 3, 4
# 5 is ``_refs.REF`` (stored); a REF entry reads back as a delta of this kind, which a
# later segment leaves alone: it holds no payload to reclaim
DELTA_OF_WRITES = 6
_Z = "|z"  # zlib (read only: rows written by earlier versions)
_ZD = "|zd"  # zlib with the preset dictionary ZDICT_V1 (read only, likewise)
_ZS = "|zs"  # zstandard with ZDICT_ZS_V1 as a raw-content dictionary (read only, likewise)
_ZF = "|zf"  # zstandard with ZDICT_ZS_V2, the same content with entropy tables
FRAME = "rg1"
FRAME_REFS = "rg1r"  # a frame part holding references to task writes (see ``_refs``)
# Rows from 64 bytes are tried (and kept compressed when that saves an eighth): a step's
# row of references is mostly framing and channel names, which the dictionary holds.
COMPRESS_MIN = 64
# Deltas need versions that sort as strings: the saver's own fixed-width format.
_DELTA_VERSION = re.compile(r"^\d{12}\.[0-9a-f]{6}$")
#: A stored row is never decompressed to more than ``MAX_EXPANSION`` times its size (or
#: ``EXPANSION_FLOOR`` bytes for small rows): a row of random bytes or a zstd bomb is
#: refused from its frame header, before anything is allocated. The writer keeps to the
#: same bound (a value that would compress further is stored uncompressed), so every row
#: the saver wrote reads back; zlib, which older versions wrote, never exceeds ~1032x.
MAX_EXPANSION = 2048
EXPANSION_FLOOR = 1 << 20


def expansion_limit(size: int) -> int:
    """The most bytes a stored row of ``size`` bytes may decompress to."""
    return max(EXPANSION_FLOOR, size * MAX_EXPANSION)


def _fits(raw: bytes, packed: bytes) -> bool:
    """``packed`` saves an eighth of ``raw`` and stays within the read bound."""
    return len(packed) <= len(raw) - (len(raw) >> 3) and len(raw) <= expansion_limit(
        len(packed))


def _zstd_dict(level: int | None, data: bytes = ZDICT_ZS_V2) -> zstandard.ZstdCompressionDict:
    d = zstandard.ZstdCompressionDict(data, dict_type=(
        zstandard.DICT_TYPE_FULLDICT if data is ZDICT_ZS_V2 else zstandard.DICT_TYPE_RAWCONTENT))
    if level is not None:
        d.precompute_compress(level=level)
    return d


_ZSTD_DICTS = (_zstd_dict(LEVELS[0]), _zstd_dict(LEVELS[1]), _zstd_dict(None),
               _zstd_dict(None, ZDICT_ZS_V1))
# zstandard (de)compressors are not thread-safe, and making one costs far more than a
# small row's compression (LangGraph runs puts on short-lived threads): a free list hands
# each caller one at a time. list.pop/append are atomic, so no lock is needed.
_FREE: tuple[list[Any], ...] = ([], [], [], [])
_DECOMPRESS = 2  # and 3: the dictionary of ``|zs`` rows


def _make(which: int) -> Any:
    if which >= _DECOMPRESS:
        return zstandard.ZstdDecompressor(dict_data=_ZSTD_DICTS[which])
    return zstandard.ZstdCompressor(dict_data=_ZSTD_DICTS[which], write_content_size=True,
                                    write_checksum=False, write_dict_id=False)


def _zstd(which: int, fn: str, data: bytes) -> bytes:
    """Run ``fn`` (compress/decompress) on a pooled (de)compressor: 0 fast, 1 strong, then
    decompressors: 2 of ``|zf`` rows, 3 of ``|zs`` rows."""
    free = _FREE[which]
    try:
        z = free.pop()
    except IndexError:
        z = _make(which)
    try:
        if which >= _DECOMPRESS:
            return bounded_decompress(z, data)
        return getattr(z, fn)(data)  # type: ignore[no-any-return]
    finally:
        free.append(z)


class RowTooLargeError(ValueError):
    """A stored row would decompress beyond :func:`expansion_limit`."""


def bounded_decompress(dctx: Any, data: bytes) -> bytes:
    """One zstd frame, decompressed only if it stays within :func:`expansion_limit`.

    The size a frame declares is checked before any output is allocated; a frame that
    declares none is decompressed with the limit as its output bound.
    """
    limit = expansion_limit(len(data))
    declared = zstandard.frame_content_size(data)
    if declared > limit:
        raise RowTooLargeError(
            f"a row of {len(data)} bytes declares {declared} bytes of content, beyond the "
            f"{limit}-byte bound (rows expand at most {MAX_EXPANSION}x): not decompressed")
    try:
        return dctx.decompress(  # type: ignore[no-any-return]
            data, max_output_size=limit if declared < 0 else 0, allow_extra_data=False)
    except zstandard.ZstdError as exc:
        if declared < 0 and "full frame" in str(exc):
            raise RowTooLargeError(
                f"a row of {len(data)} bytes decompresses to more than {limit} bytes "
                f"(rows expand at most {MAX_EXPANSION}x): stopped there") from exc
        raise


def _zlib(data: bytes, zdict: bytes | None = None) -> bytes:
    limit = expansion_limit(len(data))
    do = zlib.decompressobj(zdict=zdict) if zdict is not None else zlib.decompressobj()
    out = do.decompress(data, limit + 1)
    if len(out) > limit or do.unconsumed_tail:
        raise RowTooLargeError(f"a row of {len(data)} bytes decompresses to more than "
                               f"{limit} bytes: stopped there")
    return out + do.flush()


def is_saver_version(version: str) -> bool:
    """True for versions in the saver's own format (see ``get_next_version``)."""
    return _DELTA_VERSION.match(version) is not None


def static_size(data: bytes) -> int:
    """``data``'s size compressed with the fixed dictionary (as a small row is)."""
    return len(_zstd(0, "compress", data))


#: what a row compresses with besides the fixed dictionary: its thread's dictionary, or
#: a sampler that keeps the row to train one (see ``_tdict``)
Squeeze = ThreadDict | Sampler | None


def _compress(type_: str, data: bytes, compress: bool, z: Squeeze = None) -> tuple[str, bytes]:
    if compress and len(data) >= COMPRESS_MIN:
        if isinstance(z, ThreadDict):
            zt = z.compress(data)
            if _fits(data, zt):
                return type_ + TAG, zt
        zs = _zstd(0 if len(data) <= SMALL_MAX else 1, "compress", data)
        if z is not None and not isinstance(z, ThreadDict):
            z.take(data, len(zs))
        if _fits(data, zs):
            return type_ + _ZF, zs
    return type_, data


def _decompress(type_: str, data: bytes | None, dicts: Pinned | None = None,
                thread_id: str = "") -> tuple[str, bytes]:
    if type_.endswith(_ZF):
        return type_[: -len(_ZF)], _zstd(2, "decompress", data or b"")
    if type_.endswith(_ZS):
        return type_[: -len(_ZS)], _zstd(3, "decompress", data or b"")
    if type_.endswith(TAG):
        raw = data or b""
        dict_id = frame_dict_id(raw)
        if not dict_id:
            raise ValueError("the row is not a zstd frame compressed with a thread dictionary")
        td = dicts.get(thread_id, dict_id) if dicts is not None else None
        if td is None:
            raise CorruptCheckpointError(
                f"the compression dictionary {dict_id:08x} of thread {thread_id!r} is "
                f"missing (a row compressed with it cannot be read)", thread_id=thread_id)
        return type_[: -len(TAG)], td.decompress(raw)
    if type_.endswith(_ZD):
        return type_[: -len(_ZD)], _zlib(data or b"", ZDICT_V1)
    if type_.endswith(_Z):
        return type_[: -len(_Z)], _zlib(data or b"")
    return type_, data if data is not None else b""


def dump(serde: SerializerProtocol, value: Any, compress: bool,
         z: Squeeze = None) -> tuple[str, bytes]:
    """Serialize ``value`` with the serde; compress it when that saves an eighth."""
    type_, data = serde.dumps_typed(value)
    return _compress(type_, data, compress, z)


def load(serde: SerializerProtocol, type_: str, data: bytes | None,
         dicts: Pinned | None = None, thread_id: str = "") -> Any:
    """Inverse of :func:`dump`. Never unpickles: the serde decides what may load."""
    return serde.loads_typed(_decompress(type_, data, dicts, thread_id))


def pack(obj: Any, compress: bool, kind: str = FRAME, z: Squeeze = None) -> tuple[str, bytes]:
    """Pack a frame or a task's writes (serde payloads inside stay opaque bytes)."""
    return _compress(kind, ormsgpack.packb(obj), compress, z)


def unpack(type_: str, data: bytes | None, where: str, thread_id: str,
           dicts: Pinned | None = None, *, writes: bool = False) -> Any:
    """Inverse of :func:`pack`: a frame (``{channel: entry}``) or, with ``writes``, a
    task's writes (``[[idx, channel, type, payload], ...]``), checked for that shape."""
    try:
        kind, raw = _decompress(type_, data, dicts, thread_id)
        if kind != FRAME and kind != FRAME_REFS:
            raise ValueError(f"unknown row format {type_!r}")
        obj = ormsgpack.unpackb(raw)
        problem = _writes_problem(obj) if writes else _frame_problem(obj)
        if problem:
            raise ValueError(f"not a {'task writes' if writes else 'frame'} row: {problem}")
        return obj
    except CorruptCheckpointError:
        raise
    except Exception as exc:
        raise CorruptCheckpointError(f"cannot read {where} of thread {thread_id!r}: {exc}",
                                     thread_id=thread_id) from exc


def _is_int(v: Any) -> bool:
    return type(v) is int


def _frame_problem(obj: Any) -> str | None:
    if type(obj) is not dict:
        return f"decoded a {type(obj).__name__}, not a map"
    for ch, e in obj.items():
        if type(ch) is not str:
            return f"a channel name is a {type(ch).__name__}"
        if type(e) is not list or len(e) != 3 or not _is_int(e[0]) or type(e[1]) is not str:
            return f"channel {ch!r} has a malformed entry"
        kind, payload = e[0], e[2]
        if kind in (FULL, DELTA, SEGMENT, DELTA_OF_WRITES):
            ok = type(payload) is bytes
        elif kind == SLICE:
            ok = _is_int(payload) and payload >= 0
        elif kind == EMPTY:
            ok = True
        elif kind in REFS:
            ok = (type(payload) is list and len(payload) == 2
                  and type(payload[0]) in (str, bytes) and type(payload[1]) is list
                  and all(type(r) is list and len(r) == 2 and type(r[0]) in (str, bytes)
                          and _is_int(r[1]) for r in payload[1]))
        else:
            return f"channel {ch!r} has an entry of unknown kind {kind}"
        if not ok:
            return f"channel {ch!r} has a malformed entry of kind {kind}"
    return None


def _writes_problem(obj: Any) -> str | None:
    if type(obj) is not list:
        return f"decoded a {type(obj).__name__}, not a list"
    for it in obj:
        if (type(it) is not list or len(it) != 4 or not _is_int(it[0])
                or type(it[1]) is not str or type(it[2]) is not str
                or type(it[3]) is not bytes):
            return "a write is malformed"
    return None


@dataclass(frozen=True, slots=True)
class Tail:
    """What the saver knows about one stored list version, to store the next as a delta."""

    items: tuple[Any, ...]
    depth: int  # delta entries since the last segment or whole value
    seg_start: int  # len(items) at the last segment / whole value
    seg_version: str  # version of that segment / whole value
    # the deltas since that segment: (version, base, len(items) at that version)
    window: tuple[tuple[str, str, int], ...] = ()


class TailCache:
    """Bounded LRU of recently stored or loaded list values, keyed by version.

    Entries are added only after the transaction that stored them committed, and are
    dropped when their thread is deleted, pruned or copied over.
    """

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._tails: Lru[Tail] = Lru(size)
        self._versions: Lru[Mapping[str, Any]] = Lru(size)
        self._lock = threading.Lock()
        #: the writes stored through this saver, which deltas may point at
        self.writes = WriteCache(size)

    def tail(self, key: Hashable) -> Tail | None:
        with self._lock:
            return self._tails.get(key)

    def versions(self, key: Hashable) -> Mapping[str, Any] | None:
        with self._lock:
            return self._versions.get(key)

    def remember(self, tails: Iterable[tuple[Hashable, Tail]],
                 versions: Iterable[tuple[Hashable, Mapping[str, Any]]],
                 superseded: Iterable[Hashable] = ()) -> None:
        """Add tails and checkpoint versions; drop the ``superseded`` tails.

        A put that stores a channel's next version supersedes the tail of the version it
        extended: only a fork from that older version would use it again (and then stores
        the value whole once). Keeping it would keep every earlier generation of the
        thread's items alive, above all the ones each ``get_tuple`` decoded afresh.
        """
        with self._lock:
            for k in superseded:
                self._tails.pop(k)
            for k, t in tails:
                self._tails.put(k, t)
            for k, v in versions:
                self._versions.put(k, v)

    def forget_threads(self, thread_ids: Iterable[str]) -> None:
        doomed = set(thread_ids)
        self.writes.forget_threads(doomed)
        with self._lock:
            self._tails.forget_threads(doomed)
            self._versions.forget_threads(doomed)


def _extends(new: list[Any], old: tuple[Any, ...]) -> bool:
    n = len(old)
    if len(new) < n:
        return False
    # Reducers such as ``add_messages`` keep the very objects they were given: an identity
    # check runs in C, ~10x faster than comparing items one by one in Python.
    if all(map(operator.is_, new[:n], old)):
        return True
    for a, b in zip(new, old, strict=False):
        if a is not b and a != b:
            return False
    return True


def encode_channel(
    serde: SerializerProtocol,
    *,
    value: Any,
    present: bool,
    version: str,
    parent_version: str | None,
    tail: Tail | None,
    segment_every: int,
) -> tuple[str | None, list[Any], Tail | None, list[tuple[str, str, int]]]:
    """Encode one channel version.

    Returns ``(base, [kind, type, payload], new tail, slices)`` where ``slices`` lists the
    earlier delta versions ``(version, old base, item count)`` that a new segment covers
    and that can be rewritten as slices of it.
    """
    if not present:
        return None, [EMPTY, "", None], None, []
    if not isinstance(value, list):
        t, b = serde.dumps_typed(value)
        return None, [FULL, t, b], None, []
    if (tail is not None and parent_version is not None and _DELTA_VERSION.match(version)
            and _DELTA_VERSION.match(parent_version) and _extends(value, tail.items)):
        if tail.depth + 1 >= segment_every:
            t, b = serde.dumps_typed(value[tail.seg_start:])
            slices = [(v, base, n - tail.seg_start) for v, base, n in tail.window]
            return (tail.seg_version, [SEGMENT, t, b],
                    Tail(tuple(value), 0, len(value), version), slices)
        t, b = serde.dumps_typed(value[len(tail.items):])
        window = (*tail.window, (version, parent_version, len(value)))
        return (parent_version, [DELTA, t, b],
                Tail(tuple(value), tail.depth + 1, tail.seg_start, tail.seg_version, window),
                [])
    t, b = serde.dumps_typed(value)
    return None, [FULL, t, b], Tail(tuple(value), 0, len(value), version), []


@dataclass(slots=True)
class Part:
    base: str | None
    entries: dict[str, list[Any]]


Key3 = tuple[str, str, str]  # thread, ns, version
Key4 = tuple[str, str, str, str]  # thread, ns, channel, version


def _fresh(val: Any) -> Any:
    """A new top-level container for a memoized value (items stay shared)."""
    if isinstance(val, dict):
        return dict(val)
    if isinstance(val, set):
        return set(val)
    return val


class Materializer:
    """Rebuilds channel values from frames, decoding every stored entry at most once.

    ``shared=True`` (used by ``list()``) memoizes whole values so that each checkpoint's
    value is built from its predecessor's; every call still returns a new container.
    ``shared=False`` (``get_tuple``) decodes afresh on each call.
    """

    def __init__(self, serde: SerializerProtocol, frames: Mapping[Key3, Mapping[int, Part]],
                 *, shared: bool) -> None:
        self.serde = serde
        self.frames = frames
        self.shared = shared
        self._items: dict[Key4, Any] = {}
        self._values: dict[Key4, tuple[Any, ...]] = {}
        self.tails: list[tuple[Key4, Tail]] = []

    def entry(self, key: Key4) -> tuple[int, str | None, str, bytes | None] | None:
        parts = self.frames.get((key[0], key[1], key[3]))
        if not parts:
            return None
        for _, part in sorted(parts.items()):
            e = part.entries.get(key[2])
            if e is not None:
                kind = int(e[0])
                linked = kind in (DELTA, DELTA_OF_WRITES, SEGMENT, SLICE)
                return kind, (part.base if linked else None), e[1], e[2]
        return None

    def _missing(self, key: Key4, at: str, why: str) -> CorruptCheckpointError:
        return CorruptCheckpointError(
            f"thread {key[0]!r} namespace {key[1]!r}: channel {key[2]!r} version {key[3]!r}"
            f" {why} (version {at!r})", thread_id=key[0], channel=key[2], version=at)

    def _decode(self, key: Key4, kind: int, type_: str, payload: bytes | None) -> Any:
        if key in self._items:
            return self._items[key]
        try:
            val = self.serde.loads_typed((type_, payload if payload is not None else b""))
        except Exception as exc:
            raise CorruptCheckpointError(
                f"cannot decode channel {key[2]!r} version {key[3]!r} of thread {key[0]!r} "
                f"(type {type_!r}): {exc}",
                thread_id=key[0], channel=key[2], version=key[3]) from exc
        if kind != FULL and not isinstance(val, list):
            raise self._missing(key, key[3], "has a delta entry that is not a list of items")
        if self.shared or kind != FULL:
            self._items[key] = val
        return val

    def value(self, key: Key4) -> tuple[bool, Any]:
        """Return ``(present, value)`` for one (thread, ns, channel, version)."""
        e = self.entry(key)
        if e is None:
            raise self._missing(key, key[3], "has no stored entry")
        kind, _base, type_, payload = e
        if kind == EMPTY:
            return False, None
        if kind == FULL and not self.shared:
            val = self._decode(key, kind, type_, payload)
            if isinstance(val, list):
                self.tails.append((key, Tail(tuple(val), 0, len(val), key[3])))
            return True, val
        # Walk back to the whole value (or a memoized one), then replay forward.
        path: list[tuple[Key4, int, str, Any, int]] = []
        cur: Key4 = key
        base_items: tuple[Any, ...] | None = None
        while True:
            if self.shared and cur in self._values:
                base_items = self._values[cur]
                break
            e = self.entry(cur)
            if e is None:
                raise self._missing(key, cur[3], "is stored as a delta whose base is missing")
            kind, base, type_, payload = e
            if kind == EMPTY:
                raise self._missing(key, cur[3], "is stored as a delta of an empty value")
            if kind == SLICE:
                # the first ``payload`` items of the segment at ``base``
                seg_key = (cur[0], cur[1], cur[2], base or "")
                seg = self.entry(seg_key)
                if seg is None or seg[0] != SEGMENT:
                    raise self._missing(key, base or "?", "is a slice of a missing segment")
                path.append((cur, SLICE, seg[2], (seg_key, seg[3]), int(payload or 0)))
                if seg[1] is None:
                    raise self._missing(key, seg_key[3], "has a segment without a base")
                cur = (cur[0], cur[1], cur[2], seg[1])
                continue
            path.append((cur, kind, type_, payload, 0))
            if kind == FULL:
                break
            if base is None:
                raise self._missing(key, cur[3], "has a delta entry without a base")
            cur = (cur[0], cur[1], cur[2], base)
        acc: list[Any] = list(base_items) if base_items is not None else []
        seg_start, seg_version, depth = len(acc), None, 0
        window: list[tuple[str, str, int]] = []
        for k, kind, type_, payload, count in reversed(path):
            if kind == SLICE:
                seg_key, seg_payload = payload
                acc.extend(self._decode(seg_key, SEGMENT, type_, seg_payload)[:count])
                depth += 1
                window = []  # already slices: nothing left to rewrite
                if self.shared:
                    self._values[k] = tuple(acc)
                continue
            val = self._decode(k, kind, type_, payload)
            if kind == FULL:
                if not isinstance(val, list):
                    if len(path) > 1:
                        raise self._missing(key, k[3], "has a delta chain that starts at a "
                                            "value that is not a list")
                    return True, _fresh(val) if self.shared else val
                acc = list(val)
                seg_start, seg_version, depth, window = len(acc), k[3], 0, []
            elif kind == SEGMENT:
                acc.extend(val)
                seg_start, seg_version, depth, window = len(acc), k[3], 0, []
            else:
                base = (self.entry(k)[1]  # type: ignore[index]
                        if not self.shared and kind == DELTA else None)
                acc.extend(val)
                depth += 1
                if base is not None:
                    window.append((k[3], base, len(acc)))
            if self.shared:
                self._values[k] = tuple(acc)
        if seg_version is not None:
            self.tails.append((key, Tail(tuple(acc), depth, seg_start, seg_version,
                                         tuple(window))))
        return True, list(acc) if self.shared else acc
