"""Thread dictionaries: a long thread's rows compress against a dictionary of its own.

A step's rows are small (a checkpoint body, a frame of references, a task's writes:
hundreds of bytes each), and most of what they hold repeats from step to step: channel
and node names, version prefixes, the framing of the thread's messages and tool calls,
the words its agents use. The fixed dictionary in ``_zdict`` knows only LangGraph's and
LangChain's own names. So once a thread has stored ``TRAIN_ROWS`` rows through this
process, the saver trains a small zstd dictionary (``DICT_SIZE`` bytes, a millisecond or
two) on them and compresses the thread's later rows with it; a dictionary that does not
beat the fixed one on rows it was not trained on (encrypted values, say) is not kept.

Storage. A dictionary is a row of the thread in ``relaygraph_blobs`` (namespace ``""``,
version ``"\\x00dict" + its id``: no channel version can hold a NUL, so none can collide
with it, and no read of channel values ever asks for it). It is stored before any row
that uses it, and deleted, copied and pruned with the thread: ``delete_thread`` removes
it with everything else the thread stored (it holds fragments of the thread's rows);
retention never drops it while the thread lives.

Identity. Every zstd frame compressed with a thread dictionary carries the dictionary's
random 32-bit id (type tag ``|zt``), so a reader always decodes with the very dictionary
the writer used and zstd refuses any other; a missing dictionary is reported, never
guessed. A put uses the dictionary its parent checkpoint was written or read with in this
process (see ``Dictionaries.for_put``): a thread deleted elsewhere and started again
therefore never gets rows that point at a dictionary that went with the old thread.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterable, Sequence
from typing import Any

import zstandard

from relaygraph.checkpointers._lru import Lru
from relaygraph.checkpointers._zdict import LEVELS, SMALL_MAX

TAG = "|zt"
#: blobs.version of a dictionary row is this plus the id in 8 hex digits
DICT_VERSION = "\x00dict"
DICT_TYPE = "zdict"
DICT_SIZE = 4096
#: rows of one thread and namespace sampled before a dictionary is trained: about 16
#: steps of a graph with one task a step (a checkpoint, a frame and a task's writes each)
TRAIN_ROWS = 48
#: of those, the last ones are held out to judge the dictionary on rows it never saw
HOLDOUT = 12
#: a dictionary is kept when it makes the held-out rows this much smaller than the fixed
#: dictionary does (it must also pay for its own DICT_SIZE bytes over the thread's life)
MIN_GAIN = 0.15
SAMPLE_MAX = 8192  # larger rows (segments) are not sampled
#: what one sampler keeps at most: rows this large make a dictionary ready early
SAMPLE_BYTES = 64 * 1024


def dict_version(dict_id: int) -> str:
    return f"{DICT_VERSION}{dict_id:08x}"


def parse_dict_version(version: str) -> int | None:
    if not version.startswith(DICT_VERSION):
        return None
    try:
        return int(version[len(DICT_VERSION):], 16)
    except ValueError:
        return None


def frame_dict_id(data: bytes) -> int:
    """The dictionary id a zstd frame names (0 when it names none or is no zstd frame)."""
    try:
        return int(zstandard.get_frame_parameters(data).dict_id)
    except zstandard.ZstdError:
        return 0


class ThreadDict:
    """One trained dictionary, with its own pools of (de)compressors."""

    __slots__ = ("dict_id", "data", "_cdicts", "_ddict", "_free")

    def __init__(self, data: bytes) -> None:
        self.data = data
        d = zstandard.ZstdCompressionDict(data, dict_type=zstandard.DICT_TYPE_FULLDICT)
        self.dict_id = int(d.dict_id())
        if not self.dict_id:
            raise ValueError("a thread dictionary needs an id")
        self._ddict = d
        # built on the first compression: a process that only reads never needs them
        self._cdicts: tuple[Any, ...] | None = None
        # (de)compressors are not thread-safe: free lists, as in ``_codec``
        self._free: tuple[list[Any], list[Any], list[Any]] = ([], [], [])

    def _make(self, which: int) -> Any:
        if which == 2:
            return zstandard.ZstdDecompressor(dict_data=self._ddict)
        if self._cdicts is None:  # two threads may both build them: harmless
            cdicts = []
            for level in LEVELS:
                c = zstandard.ZstdCompressionDict(self.data,
                                                  dict_type=zstandard.DICT_TYPE_FULLDICT)
                c.precompute_compress(level=level)
                cdicts.append(c)
            self._cdicts = tuple(cdicts)
        return zstandard.ZstdCompressor(dict_data=self._cdicts[which], write_dict_id=True,
                                        write_content_size=True, write_checksum=False)

    def _run(self, which: int, fn: str, data: bytes) -> bytes:
        free = self._free[which]
        try:
            z = free.pop()
        except IndexError:
            z = self._make(which)
        try:
            return getattr(z, fn)(data)  # type: ignore[no-any-return]
        finally:
            free.append(z)

    def compress(self, data: bytes) -> bytes:
        return self._run(0 if len(data) <= SMALL_MAX else 1, "compress", data)

    def decompress(self, data: bytes) -> bytes:
        from relaygraph.checkpointers._codec import bounded_decompress

        free = self._free[2]
        try:
            z = free.pop()
        except IndexError:
            z = self._make(2)
        try:
            return bounded_decompress(z, data)
        finally:
            free.append(z)


class Sampler:
    """Rows of one thread and namespace, kept until a dictionary can be trained, with
    their sizes as the fixed dictionary compressed them (what a dictionary must beat)."""

    __slots__ = ("rows", "fixed", "size", "declined")

    def __init__(self) -> None:
        self.rows: list[bytes] = []
        self.fixed: list[int] = []
        self.size = 0
        self.declined = False

    def take(self, data: bytes, fixed: int) -> None:
        if (len(self.rows) < TRAIN_ROWS and self.size < SAMPLE_BYTES
                and len(data) <= SAMPLE_MAX):
            # puts and task writes may sample side by side: the two appends may interleave
            # with another's (then a held-out row is judged against another row's size, a
            # little off, which does no harm); a size a little off does none either
            self.rows.append(data)
            self.fixed.append(fixed)
            self.size += len(data)

    def ready(self) -> bool:
        return not self.declined and (
            len(self.rows) >= TRAIN_ROWS
            or (self.size >= SAMPLE_BYTES and len(self.rows) >= 2 * HOLDOUT))


def pays(td: ThreadDict, held: Sequence[bytes], fixed: Sequence[int]) -> bool:
    """Whether ``td`` makes the ``held`` rows at least ``MIN_GAIN`` smaller than the fixed
    dictionary does (``fixed``: their sizes compressed with it)."""
    return sum(len(td.compress(r)) for r in held) <= sum(fixed) * (1 - MIN_GAIN)


def pays_on_held_out(td: ThreadDict, rows: Sequence[bytes], fixed: Sequence[int]) -> bool:
    """:func:`pays` on the rows :func:`train` would hold out of ``rows``."""
    return pays(td, rows[-HOLDOUT:], fixed[-HOLDOUT:])


def train(rows: Sequence[bytes], fixed: Sequence[int]) -> ThreadDict | None:
    """A dictionary trained on ``rows``, or ``None`` when it would not pay for itself.

    ``fixed``: each row's size compressed with the fixed dictionary. The last
    ``HOLDOUT`` rows are not learnt from: the dictionary is judged on them.
    """
    learn: list[bytes | bytearray | memoryview] = list(rows[:-HOLDOUT])
    try:
        d = zstandard.train_dictionary(DICT_SIZE, learn, k=200, d=8, f=16, split_point=1.0,
                                       threads=1, dict_id=random.randrange(1, 1 << 31))
    except zstandard.ZstdError:
        return None  # too little or too uniform to learn from
    try:
        td = ThreadDict(d.as_bytes())
    except (ValueError, zstandard.ZstdError):
        return None
    return td if pays_on_held_out(td, rows, fixed) else None


class Pinned:
    """The dictionaries one operation's rows name, held while it decodes them (the
    saver's map may drop them meanwhile: other operations run beside this one)."""

    __slots__ = ("_d",)

    def __init__(self, d: dict[tuple[str, int], ThreadDict] | None = None) -> None:
        self._d = d if d is not None else {}

    def get(self, thread_id: str, dict_id: int) -> ThreadDict | None:
        return self._d.get((thread_id, dict_id))

    def add(self, thread_id: str, td: ThreadDict) -> None:
        self._d[(thread_id, td.dict_id)] = td


NO_DICTS = Pinned()  # for rows that name no dictionary (never added to)


class Dictionaries:
    """A saver's thread dictionaries: loaded ones, samplers, and which checkpoint used which.

    ``size`` bounds each map; a dictionary dropped from memory is fetched again by the
    next read that needs it.
    """

    def __init__(self, size: int = 256) -> None:
        self._dicts: Lru[ThreadDict] = Lru(size)  # (thread, dict id)
        self._samplers: Lru[Sampler] = Lru(size)  # (thread, ns)
        # (thread, ns, checkpoint id) -> the dictionary that checkpoint's put used (or its
        # row was read with); a put continues with its parent's
        self._lineage: Lru[ThreadDict | bool] = Lru(size * 16)
        # (thread, ns) -> the dictionary of the checkpoint last stored or read there; a
        # task's writes may be stored while the put of their checkpoint is still running
        self._current: Lru[ThreadDict | bool] = Lru(size)
        #: the dictionary this saver trained last: a new thread of the same graph whose
        #: rows it compresses as well as one of their own would is given a copy of it
        #: instead of training another (see ``BaseSQLAlchemySaver._op_new_dict``)
        self.recent: ThreadDict | None = None
        self._lock = threading.Lock()

    # -- reading ------------------------------------------------------------------------

    def get(self, thread_id: str, dict_id: int) -> ThreadDict | None:
        with self._lock:
            return self._dicts.get((thread_id, dict_id))

    def add(self, thread_id: str, td: ThreadDict) -> ThreadDict:
        with self._lock:
            have = self._dicts.get((thread_id, td.dict_id))
            if have is not None and have.data == td.data:
                return have
            self._dicts.put((thread_id, td.dict_id), td)
            return td

    def pin(self, wanted: Iterable[tuple[str, int]],
            ) -> tuple[Pinned, list[tuple[str, int]]]:
        """The ``wanted`` dictionaries in memory, and the keys of those that are not."""
        found: dict[tuple[str, int], ThreadDict] = {}
        missing = []
        with self._lock:
            for k in dict.fromkeys(wanted):
                td = self._dicts.get(k)
                if td is None:
                    missing.append(k)
                else:
                    found[k] = td
        return Pinned(found), missing

    # -- writing ------------------------------------------------------------------------

    def for_put(self, thread_id: str, ns: str, parent_id: str | None,
                ) -> ThreadDict | Sampler | None:
        """What a put of this thread compresses with: its parent's dictionary, or a
        sampler collecting rows for one (``None`` once a dictionary was declined)."""
        with self._lock:
            if parent_id is not None:
                td = self._lineage.get((thread_id, ns, parent_id))
                if isinstance(td, ThreadDict):
                    self._current.put((thread_id, ns), td)
                    return td
            self._current.put((thread_id, ns), False)
            s = self._samplers.get((thread_id, ns))
            if s is None:
                s = Sampler()
                self._samplers.put((thread_id, ns), s)
            return None if s.declined else s

    def for_writes(self, thread_id: str, ns: str, checkpoint_id: str,
                   ) -> ThreadDict | Sampler | None:
        """What a task's writes at this checkpoint compress with (as its next put will)."""
        with self._lock:
            td = self._lineage.get((thread_id, ns, checkpoint_id))
            if td is None:
                td = self._current.get((thread_id, ns))
            if isinstance(td, ThreadDict):
                return td
            s = self._samplers.get((thread_id, ns))
            return None if s is None or s.declined else s

    def mark(self, key: tuple[str, str, str], td: ThreadDict | None) -> None:
        """The checkpoint ``key`` was stored or read with ``td``."""
        with self._lock:
            self._lineage.put(key, td if td is not None else False)
            self._current.put(key[:2], td if td is not None else False)

    def mark_empty(self, thread_id: str, ns: str) -> None:
        """The thread (and namespace) was read and holds no checkpoint."""
        with self._lock:
            self._current.put((thread_id, ns), False)

    def installed(self, thread_id: str, ns: str, td: ThreadDict | None) -> None:
        """A dictionary for (thread, ns) is in the database (``None``: none is wanted)."""
        with self._lock:
            s = self._samplers.get((thread_id, ns))
            if td is None:
                if s is not None:
                    s.declined = True
                    s.rows, s.size = [], 0
                return
            self._samplers.pop((thread_id, ns))
            self._dicts.put((thread_id, td.dict_id), td)
            self._current.put((thread_id, ns), td)

    def forget_threads(self, thread_ids: Iterable[str]) -> None:
        doomed = set(thread_ids)
        with self._lock:
            self._dicts.forget_threads(doomed)
            self._samplers.forget_threads(doomed)
            self._lineage.forget_threads(doomed)
            self._current.forget_threads(doomed)
