"""Deltas that point at the task writes holding the same items instead of copying them.

The messages a step appends to a list channel are, byte for byte, the writes its tasks
stored with ``put_writes`` just before: LangGraph saves each task's writes, then applies
them (``add_messages`` appends them) and saves the next checkpoint. Storing those items
again in a delta row would keep each message twice until its segment is written, and
rewriting the delta afterwards leaves a dead row behind (PostgreSQL keeps its space until
VACUUM; SQLite leaves a hole in the page).

So when the new items of a list channel serialize to exactly the concatenation of the
parent checkpoint's writes to that channel (in the order LangGraph applies them), the
delta entry stores only a reference, ``[REF, type, [parent checkpoint id, [[task id,
write index], ...]]]`` (ids in UUID form as their 16 bytes), in a frame part of type
``FRAME_REFS``, which may also hold the version's plain values: a reference is never
rewritten, so it can share their row. A read fetches those
writes rows and rebuilds the exact bytes the delta would have held. Anything else (a
write that is a tuple or a dict, a reducer that changed an item, an encrypting serde, a
put in another process) is stored inline as before; byte equality decides, so a
reference never stands for anything but the very bytes it replaces.

Writes rows outlive their delta references only as long as their checkpoint does:
retention (``prune``, ``delete_for_runs``) copies the items back into the frames that
still need them before it deletes the writes (``_retention.inline_refs``).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any

from langgraph.checkpoint.base import writes_sort_key

from relaygraph._sql import uuid_bytes, uuid_str
from relaygraph.checkpointers._errors import CorruptCheckpointError
from relaygraph.checkpointers._lru import Lru

REF = 5  # frame entry kind, beside FULL, DELTA, SEGMENT, EMPTY and SLICE in ``_codec``
#: a whole value that is, byte for byte, the one write its channel got (a ``LastValue``
#: channel such as a dict of notes): ``[REF_VALUE, type, [checkpoint id, [[task, idx]]]]``
REF_VALUE = 7
REFS = (REF, REF_VALUE)
#: a reference takes ~45 bytes: smaller values are stored as they are
REF_MIN = 48
MSGPACK = "msgpack"
#: How long a put waits for its parent's writes still being stored (seconds). LangGraph
#: saves a task's writes on a background thread or task and the next checkpoint right
#: after: without the wait the put often overtakes them, above all on the async saver.
WAIT_FOR_WRITES = 1.0

Item = Sequence[Any]  # [write index, channel, serde type, payload]


def pack_id(value: str) -> str | bytes:
    """A checkpoint or task id as stored in a reference: a UUID as its 16 bytes."""
    raw = uuid_bytes(value)
    return value if raw is None else raw


def unpack_id(value: str | bytes) -> str:
    return uuid_str(value) if isinstance(value, bytes) else str(value)


def ref_checkpoint(entry: Sequence[Any]) -> str:
    """The checkpoint whose writes a ``REF`` entry points at."""
    return unpack_id(entry[2][0])


def array_header(n: int) -> bytes:
    """The msgpack header of an ``n``-element array, in its shortest form."""
    if n < 16:
        return bytes((0x90 | n,))
    if n < 0x10000:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


def split_array(payload: bytes) -> tuple[int, int] | None:
    """``(elements, header length)`` when ``payload`` is a msgpack array, else ``None``."""
    if not payload:
        return None
    first = payload[0]
    if 0x90 <= first <= 0x9F:
        return first & 0x0F, 1
    if first == 0xDC and len(payload) >= 3:
        return int.from_bytes(payload[1:3], "big"), 3
    if first == 0xDD and len(payload) >= 5:
        return int.from_bytes(payload[1:5], "big"), 5
    return None


def compose(payloads: Iterable[bytes]) -> bytes:
    """The serialized list of every item the writes hold, in order.

    A write whose payload is an array contributes its elements; any other write is one
    item. This is how ``add_messages`` reads a write (a list of messages, or a message).
    """
    n = 0
    bodies = []
    for p in payloads:
        arr = split_array(p)
        if arr is None:
            n += 1
            bodies.append(p)
        else:
            n += arr[0]
            bodies.append(p[arr[1]:])
    return array_header(n) + b"".join(bodies)


class WriteCache:
    """Bounded LRU of the writes this saver stored, by checkpoint: ``(thread, ns, id)``.

    Filled after a ``put_writes`` transaction committed, so an entry always describes
    rows that exist; dropped when the writes of that task are merged with others. It
    also counts the ``put_writes`` calls under way per checkpoint, so that a put can
    wait for its parent's (:meth:`wait`, :meth:`await_idle`).
    """

    def __init__(self, size: int) -> None:
        self._by_ckpt: Lru[dict[str, tuple[str, Sequence[Item]]]] = Lru(size)
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._busy: dict[Hashable, int] = {}
        self._waiters: dict[Hashable, list[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = {}
        # what recent references stand for: the writes they point at never change (the
        # first write to an index wins), so a reference means the same bytes forever
        self._resolved: Lru[tuple[str, bytes]] = Lru(size)

    @staticmethod
    def ref_key(thread_id: str, ns: str, entry: Sequence[Any]) -> Hashable:
        """The key of a ``REF`` entry in the resolved cache (its writes' full address)."""
        cid, refs = entry[2]
        return thread_id, ns, cid, tuple((task, idx) for task, idx in refs)

    def resolved(self, key: Hashable) -> tuple[str, bytes] | None:
        with self._lock:
            return self._resolved.get(key)

    def remember_resolved(self, items: Iterable[tuple[Hashable, tuple[str, bytes]]]) -> None:
        with self._lock:
            for k, v in items:
                self._resolved.put(k, v)

    def begin(self, key: Hashable | None) -> None:
        """A ``put_writes`` for checkpoint ``key`` started."""
        if key is None:
            return
        with self._lock:
            self._busy[key] = self._busy.get(key, 0) + 1

    def end(self, key: Hashable | None) -> None:
        """That ``put_writes`` finished (committed or failed)."""
        if key is None:
            return
        with self._lock:
            n = self._busy.get(key, 0) - 1
            if n > 0:
                self._busy[key] = n
                return
            self._busy.pop(key, None)
            waiters = self._waiters.pop(key, [])
            self._idle.notify_all()
        for loop, event in waiters:
            if not loop.is_closed():
                loop.call_soon_threadsafe(event.set)

    def wait(self, key: Hashable | None, timeout: float = WAIT_FOR_WRITES) -> None:
        """Block until no ``put_writes`` for ``key`` is under way (at most ``timeout``)."""
        if key is None or key not in self._busy:  # (a dict lookup needs no lock)
            return
        with self._lock:
            self._idle.wait_for(lambda: key not in self._busy, timeout)

    async def await_idle(self, key: Hashable | None, within: float = WAIT_FOR_WRITES) -> None:
        """:meth:`wait` for the event loop (at most ``within`` seconds)."""
        if key is None:
            return
        with self._lock:
            if key not in self._busy:
                return
            event = asyncio.Event()
            self._waiters.setdefault(key, []).append((asyncio.get_running_loop(), event))
        try:
            await asyncio.wait_for(event.wait(), within)
        except TimeoutError:
            pass

    def add(self, key: Hashable, task_id: str, task_path: str, items: Sequence[Item]) -> None:
        with self._lock:
            tasks = self._by_ckpt.get(key)
            if tasks is None:
                tasks = {}
                self._by_ckpt.put(key, tasks)
            tasks[task_id] = (task_path, items)

    def drop(self, key: Hashable) -> None:
        with self._lock:
            self._by_ckpt.pop(key)

    def forget_threads(self, thread_ids: Iterable[str]) -> None:
        doomed = set(thread_ids)
        with self._lock:
            self._by_ckpt.forget_threads(doomed)
            self._resolved.forget_threads(doomed)

    def _writes_to(self, key: Hashable, channel: str,
                   ) -> list[tuple[tuple[str, str, int], str, int, str, bytes]]:
        """``(sort key, task id, index, type, payload)`` of the writes of checkpoint
        ``key`` to ``channel``, in the order LangGraph applies them."""
        with self._lock:
            tasks = self._by_ckpt.get(key)
            if not tasks:
                return []
            found = [(writes_sort_key(path, tid, idx), tid, idx, wtype, data)
                     for tid, (path, items) in tasks.items()
                     for idx, ch, wtype, data in items if ch == channel]
        found.sort(key=lambda f: f[0])
        return found

    def match_value(self, key: Hashable, channel: str, type_: str, payload: bytes,
                    ) -> list[list[Any]] | None:
        """A reference to the one write of checkpoint ``key`` to ``channel``, when that
        write is exactly ``(type_, payload)``."""
        found = self._writes_to(key, channel)
        if len(found) != 1 or found[0][3] != type_ or found[0][4] != payload:
            return None
        return [[pack_id(found[0][1]), found[0][2]]]

    def match(self, key: Hashable, channel: str, type_: str, payload: bytes,
              ) -> list[list[Any]] | None:
        """References to the writes of checkpoint ``key`` whose items are ``payload``."""
        if type_ != MSGPACK:
            return None
        found = self._writes_to(key, channel)
        if not found or any(f[3] != MSGPACK for f in found):
            return None
        if compose(f[4] for f in found) != payload:
            return None
        return [[pack_id(tid), idx] for _, tid, idx, _, _ in found]


def rebuild(refs: Sequence[Sequence[Any]], writes: Mapping[tuple[str, int], tuple[str, bytes]],
            *, thread_id: str, channel: str, version: str, checkpoint_id: str,
            whole: bool = False) -> tuple[str, bytes]:
    """The ``(type, payload)`` a reference entry stands for, from its writes' items
    (``whole``: a ``REF_VALUE``, the one write's payload as it is)."""
    payloads = []
    for packed, idx in refs:
        task_id = unpack_id(packed)
        got = writes.get((task_id, int(idx)))
        if got is None:
            raise CorruptCheckpointError(
                f"thread {thread_id!r}: channel {channel!r} version {version!r} refers to "
                f"write {idx} of task {task_id!r} at checkpoint {checkpoint_id!r}, which "
                f"is missing", thread_id=thread_id, channel=channel, version=version)
        if whole:
            return got
        if got[0] != MSGPACK:
            raise CorruptCheckpointError(
                f"thread {thread_id!r}: channel {channel!r} version {version!r} refers to "
                f"write {idx} of task {task_id!r} at checkpoint {checkpoint_id!r}, whose "
                f"type {got[0]!r} is not {MSGPACK!r}",
                thread_id=thread_id, channel=channel, version=version)
        payloads.append(got[1])
    return MSGPACK, compose(payloads)
