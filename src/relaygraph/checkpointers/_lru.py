"""The bounded LRU maps behind the savers' in-memory caches."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Iterable
from typing import Generic, TypeVar

V = TypeVar("V")


class Lru(Generic[V]):
    """At most ``size`` entries, the least recently used dropped first.

    Keys are tuples that start with a thread id, so that a thread's entries can be
    forgotten together. Not locked: the cache that owns one holds its own lock.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._d: OrderedDict[Hashable, V] = OrderedDict()

    def get(self, key: Hashable) -> V | None:
        v = self._d.get(key)
        if v is not None:
            self._d.move_to_end(key)
        return v

    def put(self, key: Hashable, value: V) -> None:
        self._d[key] = value
        self._d.move_to_end(key)
        while len(self._d) > self.size:
            self._d.popitem(last=False)

    def pop(self, key: Hashable) -> None:
        self._d.pop(key, None)

    def forget_threads(self, thread_ids: Iterable[str]) -> None:
        doomed = set(thread_ids)
        for k in [k for k in self._d if k[0] in doomed]:  # type: ignore[index]
            del self._d[k]
