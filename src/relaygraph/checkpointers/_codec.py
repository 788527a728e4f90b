"""Value encoding: serde + optional compression, and append-delta storage of list channels.

A list channel whose new value extends the value stored for its previous version is
stored as only the appended items plus a pointer (``base``) to that version. Every
``segment_every`` deltas a *segment* row merges the items appended since the previous
segment and points straight at it, so reading any version touches at most
``len/segment_every + segment_every`` rows (fetched in one query) while each item is
written at most twice: bytes per step stay flat however long the thread grows.
Values that are edited, removed, reordered or not lists are stored whole.

Identity of items: an item is unchanged when it is the same object as, or equal to, the
item the saver last stored or loaded at that position. Like LangGraph's reducers, the
saver treats checkpointed values as immutable: mutate a message in place after it was
checkpointed and the change is not seen (return a new message instead).
"""

from __future__ import annotations

import threading
import zlib
from collections import OrderedDict
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from langgraph.checkpoint.serde.base import SerializerProtocol

from relaygraph.checkpointers._errors import CorruptCheckpointError

FULL, DELTA, SEGMENT, EMPTY = 0, 1, 2, 3
_Z = "|z"
COMPRESS_MIN = 256


def dump(serde: SerializerProtocol, value: Any, compress: bool) -> tuple[str, bytes]:
    """Serialize ``value``; zlib-compress it when that saves at least an eighth."""
    type_, data = serde.dumps_typed(value)
    if compress and len(data) >= COMPRESS_MIN:
        z = zlib.compress(data, 1)
        if len(z) <= len(data) - (len(data) >> 3):
            return type_ + _Z, z
    return type_, data


def load(serde: SerializerProtocol, type_: str, data: bytes | None) -> Any:
    """Inverse of :func:`dump`. Never unpickles: the serde decides what may load."""
    if type_.endswith(_Z):
        return serde.loads_typed((type_[: -len(_Z)], zlib.decompress(data or b"")))
    return serde.loads_typed((type_, data if data is not None else b""))


@dataclass(frozen=True, slots=True)
class Tail:
    """What the saver knows about one stored list version, to store the next as a delta."""

    items: tuple[Any, ...]
    depth: int  # delta rows since the last segment or whole value
    seg_start: int  # len(items) at the last segment / whole value
    seg_version: str  # version of that segment / whole row


class TailCache:
    """Bounded LRU of recently stored or loaded list values, keyed by version.

    Entries are only added after the transaction that stored them committed, and are
    dropped when their thread is deleted, pruned or copied over.
    """

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._tails: OrderedDict[Hashable, Tail] = OrderedDict()
        self._versions: OrderedDict[Hashable, Mapping[str, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def tail(self, key: Hashable) -> Tail | None:
        with self._lock:
            t = self._tails.get(key)
            if t is not None:
                self._tails.move_to_end(key)
            return t

    def versions(self, key: Hashable) -> Mapping[str, Any] | None:
        with self._lock:
            return self._versions.get(key)

    def remember(self, tails: Iterable[tuple[Hashable, Tail]],
                 versions: Iterable[tuple[Hashable, Mapping[str, Any]]]) -> None:
        with self._lock:
            for k, t in tails:
                self._tails[k] = t
                self._tails.move_to_end(k)
            for k, v in versions:
                self._versions[k] = v
                self._versions.move_to_end(k)
            while len(self._tails) > self.size:
                self._tails.popitem(last=False)
            while len(self._versions) > self.size:
                self._versions.popitem(last=False)

    def forget_threads(self, thread_ids: Iterable[str]) -> None:
        doomed = set(thread_ids)
        with self._lock:
            for store in (self._tails, self._versions):
                for k in [k for k in store if k[0] in doomed]:  # type: ignore[index]
                    del store[k]

    def clear(self) -> None:
        with self._lock:
            self._tails.clear()
            self._versions.clear()


def _extends(new: list[Any], old: tuple[Any, ...]) -> bool:
    if len(new) < len(old):
        return False
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
    compress: bool,
) -> tuple[dict[str, Any], Tail | None]:
    """Encode one channel version as a blob row (without key columns) and its new tail."""
    if not present:
        return {"kind": EMPTY, "base": None, "type": "empty", "blob": None}, None
    if not isinstance(value, list):
        t, b = dump(serde, value, compress)
        return {"kind": FULL, "base": None, "type": t, "blob": b}, None
    if tail is not None and parent_version is not None and _extends(value, tail.items):
        if tail.depth + 1 >= segment_every:
            t, b = dump(serde, value[tail.seg_start:], compress)
            row = {"kind": SEGMENT, "base": tail.seg_version, "type": t, "blob": b}
            return row, Tail(tuple(value), 0, len(value), version)
        t, b = dump(serde, value[len(tail.items):], compress)
        row = {"kind": DELTA, "base": parent_version, "type": t, "blob": b}
        return row, Tail(tuple(value), tail.depth + 1, tail.seg_start, tail.seg_version)
    t, b = dump(serde, value, compress)
    return {"kind": FULL, "base": None, "type": t, "blob": b}, Tail(
        tuple(value), 0, len(value), version
    )


def _fresh(val: Any) -> Any:
    """A new top-level container for a memoized value (items stay shared)."""
    if isinstance(val, dict):
        return dict(val)
    if isinstance(val, set):
        return set(val)
    return val


@dataclass(slots=True)
class BlobRow:
    kind: int
    base: str | None
    type: str
    blob: bytes | None


class Materializer:
    """Rebuilds channel values from blob rows, decoding every stored row at most once.

    ``shared=True`` (used by ``list()``) memoizes whole values so that each checkpoint's
    value is built from its predecessor's; every call still returns a new list object.
    ``shared=False`` (``get_tuple``) decodes afresh on each call.
    """

    def __init__(self, serde: SerializerProtocol, rows: Mapping[tuple[str, str, str, str], BlobRow],
                 *, shared: bool) -> None:
        self.serde = serde
        self.rows = rows
        self.shared = shared
        self._items: dict[tuple[str, str, str, str], Any] = {}
        self._values: dict[tuple[str, str, str, str], tuple[Any, ...]] = {}
        self.tails: list[tuple[tuple[str, str, str, str], Tail]] = []

    def _decode(self, key: tuple[str, str, str, str], row: BlobRow) -> Any:
        if key in self._items:
            return self._items[key]
        try:
            val = load(self.serde, row.type, row.blob)
        except Exception as exc:
            raise CorruptCheckpointError(
                f"cannot decode channel {key[2]!r} version {key[3]!r} of thread {key[0]!r} "
                f"(type {row.type!r}): {exc}",
                thread_id=key[0], channel=key[2], version=key[3],
            ) from exc
        if row.kind != FULL and not isinstance(val, list):
            raise CorruptCheckpointError(
                f"delta row for channel {key[2]!r} version {key[3]!r} of thread {key[0]!r} "
                f"does not hold a list of items", thread_id=key[0], channel=key[2], version=key[3])
        if self.shared or row.kind != FULL:
            self._items[key] = val
        return val

    def value(self, key: tuple[str, str, str, str]) -> tuple[bool, Any]:
        """Return ``(present, value)`` for one (thread, ns, channel, version)."""
        row = self.rows.get(key)
        if row is None:
            raise CorruptCheckpointError(
                f"thread {key[0]!r} namespace {key[1]!r}: no stored row for channel "
                f"{key[2]!r} version {key[3]!r}",
                thread_id=key[0], channel=key[2], version=key[3])
        if row.kind == EMPTY:
            return False, None
        if row.kind == FULL and not self.shared:
            val = self._decode(key, row)
            if isinstance(val, list):
                self.tails.append((key, Tail(tuple(val), 0, len(val), key[3])))
            return True, val
        # Walk back to the whole value, then replay forward.
        path: list[tuple[tuple[str, str, str, str], BlobRow]] = []
        cur: tuple[str, str, str, str] | None = key
        base_items: tuple[Any, ...] | None = None
        while cur is not None:
            if self.shared and cur in self._values:
                base_items = self._values[cur]
                break
            r = self.rows.get(cur)
            if r is None:
                raise CorruptCheckpointError(
                    f"thread {key[0]!r} namespace {key[1]!r}: channel {key[2]!r} version "
                    f"{key[3]!r} is stored as a delta whose base version {cur[3]!r} is missing",
                    thread_id=key[0], channel=key[2], version=cur[3])
            path.append((cur, r))
            if r.kind == FULL:
                break
            if r.base is None:
                raise CorruptCheckpointError(
                    f"thread {key[0]!r}: delta row for channel {key[2]!r} version {cur[3]!r} "
                    f"has no base", thread_id=key[0], channel=key[2], version=cur[3])
            cur = (cur[0], cur[1], cur[2], r.base)
        acc: list[Any] = list(base_items) if base_items is not None else []
        seg_start, seg_version, depth = len(acc), None, 0
        for k, r in reversed(path):
            val = self._decode(k, r)
            if r.kind == FULL:
                if not isinstance(val, list):
                    if len(path) > 1:
                        raise CorruptCheckpointError(
                            f"thread {key[0]!r}: channel {key[2]!r} delta chain starts at a "
                            f"non-list value (version {k[3]!r})",
                            thread_id=key[0], channel=key[2], version=k[3])
                    return True, _fresh(val) if self.shared else val
                acc = list(val)
                seg_start, seg_version, depth = len(acc), k[3], 0
            elif r.kind == SEGMENT:
                acc.extend(val)
                seg_start, seg_version, depth = len(acc), k[3], 0
            else:
                acc.extend(val)
                depth += 1
            if self.shared:
                self._values[k] = tuple(acc)
        if seg_version is not None:
            self.tails.append((key, Tail(tuple(acc), depth, seg_start, seg_version)))
        return True, acc if not self.shared else list(acc)
