"""The savers' default serializer: strict msgpack, never pickle, live allowlist."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from langgraph.checkpoint.serde.base import SerializerProtocol
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from relaygraph import _allowlist


class RelaygraphSerializer(JsonPlusSerializer):
    """LangGraph's serializer in strict msgpack mode, never pickle, with a live allowlist.

    Safe types (LangChain messages, LangGraph's own, standard library values) load as
    usual; other classes load only when allowlisted: every relaygraph ``Contract``
    subclass registers itself, :func:`relaygraph.checkpointers.allow` adds more, and
    ``with_msgpack_allowlist`` (which LangGraph calls under ``LANGGRAPH_STRICT_MSGPACK``)
    extends a copy. Anything else comes back as plain data (dicts), with a logged warning.
    """

    def __init__(self, extra: Iterable[tuple[str, ...]] = ()) -> None:
        super().__init__(pickle_fallback=False, allowed_msgpack_modules=None)
        self._extra = frozenset(tuple(e) for e in extra)
        self._seen_generation = -1
        self._inner: JsonPlusSerializer | None = None

    def _current(self) -> JsonPlusSerializer:
        gen = _allowlist.generation()
        inner = self._inner
        if inner is None or gen != self._seen_generation:
            allowed = set(self._extra) | _allowlist.entries()
            inner = JsonPlusSerializer(pickle_fallback=False,
                                       allowed_msgpack_modules=allowed or None)
            self._inner, self._seen_generation = inner, gen
        return inner

    def dumps_typed(self, obj: Any) -> tuple[str, bytes]:
        return self._current().dumps_typed(obj)

    def loads_typed(self, data: tuple[str, bytes]) -> Any:
        return self._current().loads_typed(data)

    def with_msgpack_allowlist(self, extra_allowlist: Iterable[Any]) -> RelaygraphSerializer:
        add = {(c.__module__, c.__name__) if isinstance(c, type) else tuple(c)
               for c in extra_allowlist}
        if add <= self._extra:
            return self
        return RelaygraphSerializer(self._extra | add)


def default_serde() -> SerializerProtocol:
    """The savers' default serializer: see :class:`RelaygraphSerializer`."""
    return RelaygraphSerializer()
