"""The savers' default serializer: strict msgpack, never pickle, live allowlist."""

from __future__ import annotations

import functools
import importlib
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any, Literal

import ormsgpack
from langchain_core import messages as lc_messages
from langgraph.checkpoint.serde import jsonplus as _jsonplus
from langgraph.checkpoint.serde.base import SerializerProtocol
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from relaygraph import _allowlist
from relaygraph.checkpointers._errors import BlockedTypeError

# LangGraph's msgpack extension codes: a pydantic v2 model ([module, name, kwargs,
# method]) and a DeltaChannel snapshot (the channel's value, usually a message list)
_EXT_PYDANTIC_V2 = 5
_EXT_DELTA_SNAPSHOT = 7
try:  # where LangGraph keeps its DeltaChannel snapshot type (None: left to LangGraph)
    from langgraph.checkpoint.serde import types as _lg_types

    _Snapshot: Any = _lg_types._DeltaSnapshot
except (ImportError, AttributeError):  # pragma: no cover - another LangGraph layout
    _Snapshot = None
_OPTS = ormsgpack.OPT_NON_STR_KEYS
# LangChain's message classes, which LangGraph always allows. Their validators only
# normalise legacy shapes, so a payload holding exactly the fields of the current class
# (what ``model_dump`` wrote) is rebuilt without re-running them: the same object, ~2x
# faster. Anything else (older shapes, subclasses, chunks) takes LangGraph's own path.
_FAST_MESSAGES = ("AIMessage", "HumanMessage", "SystemMessage", "ToolMessage",
                  "ChatMessage", "FunctionMessage", "RemoveMessage")


# the extension codes LangGraph writes (0-7); any other code is not a stored value
_KNOWN_EXT = frozenset(range(8))

# LangGraph reports each class its decoder blocks as a serde event, and then hands back
# the object's raw data. The strict hook collects the events raised while it decodes one
# value (on this thread) and raises instead.
_sinks = threading.local()


def _on_serde_event(event: Any) -> None:
    sink = getattr(_sinks, "sink", None)
    if sink is not None and event.get("kind") in ("msgpack_blocked", "msgpack_method_blocked"):
        sink.append(event)


try:
    from langgraph.checkpoint.serde.event_hooks import register_serde_event_listener

    register_serde_event_listener(_on_serde_event)
    _EVENTS = True
except ImportError:  # pragma: no cover - a LangGraph without serde events
    _EVENTS = False


def _strict_hook(fallback: Callable[[int, bytes], Any]) -> Callable[[int, bytes], Any]:
    """``fallback`` that raises :class:`BlockedTypeError` where it would return raw data,
    and refuses extension codes LangGraph never writes (it would return None)."""

    def hook(code: int, data: bytes) -> Any:
        if code not in _KNOWN_EXT:
            raise _refuse(ValueError(
                f"msgpack extension type {code} is not one LangGraph writes"))
        outer = getattr(_sinks, "sink", None)
        sink: list[Any] = []
        _sinks.sink = sink
        try:
            value = fallback(code, data)
        finally:
            _sinks.sink = outer
        if sink:
            first = sink[0]
            raise _refuse(BlockedTypeError(str(first.get("module")), str(first.get("name")),
                                           first.get("method")))
        return value

    return hook


def _refuse(exc: Exception) -> Exception:
    # ormsgpack replaces what an ext hook raises with ValueError("ext_hook failed"):
    # the real reason waits here for ``loads_typed`` to raise it instead
    _sinks.refused = exc
    return exc


def _unpack(data: bytes, hook: Callable[[int, bytes], Any]) -> Any:
    _sinks.refused = None
    try:
        return ormsgpack.unpackb(data, ext_hook=hook, option=_OPTS)
    except ValueError as exc:
        refused = getattr(_sinks, "refused", None)
        if refused is not None:
            _sinks.refused = None
            raise refused from exc
        raise


Builder = Callable[[dict[str, Any]], Any]
_set = object.__setattr__


def _builder(cls: Any) -> Builder:
    """``cls.model_construct(**kwargs)`` for a payload holding exactly the model's fields.

    For plain models (no aliases, private attributes or post-init hook, extra fields
    allowed, as LangChain's messages are) this sets the same four attributes that
    ``model_construct`` sets, without its per-field loop: ~5x cheaper. Anything else
    uses ``model_construct`` itself.
    """
    plain = (
        cls.__pydantic_post_init__ is None and not cls.__private_attributes__
        and not cls.__pydantic_root_model__ and cls.model_config.get("extra") == "allow"
        and all(f.alias is None and f.validation_alias is None
                for f in cls.model_fields.values())
    )
    if not plain:
        return lambda kwargs: cls.model_construct(**kwargs)
    new = object.__new__

    def build(kwargs: dict[str, Any]) -> Any:
        obj = new(cls)
        _set(obj, "__dict__", kwargs)
        _set(obj, "__pydantic_fields_set__", set(kwargs))
        _set(obj, "__pydantic_extra__", {})
        _set(obj, "__pydantic_private__", None)
        return obj

    return build


def _message_table() -> dict[int, dict[bytes, tuple[Builder, frozenset[str], str]]]:
    """msgpack prefix ``[module, name, ...`` -> (builder, field names, type tag), by length."""
    table: dict[int, dict[bytes, tuple[Builder, frozenset[str], str]]] = {}
    for name in _FAST_MESSAGES:
        cls = getattr(lc_messages, name)
        fields = frozenset(cls.model_fields)
        type_tag = cls.model_fields["type"].default
        # a 4-element array header, then the two strings, exactly as LangGraph packs them
        prefix = ormsgpack.packb([cls.__module__, name, None, None])
        prefix = prefix[: len(prefix) - 2]
        table.setdefault(len(prefix), {})[prefix] = (_builder(cls), fields, type_tag)
    return table


_MESSAGES = _message_table()


# A relaygraph contract is stored as LangGraph stores any pydantic model, with a fifth
# element LangGraph's reader ignores: {"contract_version": N}.
_VERSION_KEY = "contract_version"


def _is_contract(cls: Any) -> bool:
    return (isinstance(cls, type) and isinstance(getattr(cls, "__version__", None), int)
            and hasattr(cls, "__upgrades__") and hasattr(cls, "model_validate"))


# Asked of every object msgpack cannot encode itself (each message of every put): on a
# pydantic class a missing attribute goes through its metaclass's ``__getattr__`` and
# two exceptions, so the answer is kept per class (a class's version never changes).
_contract_classes = functools.lru_cache(maxsize=1024)(_is_contract)


def _is_contract_class(cls: type) -> bool:
    try:
        return _contract_classes(cls)
    except TypeError:  # a metaclass that makes its classes unhashable
        return _is_contract(cls)


#: what ``dumps_typed`` hands to LangGraph's serializer as it is
_RAW = (bytes, bytearray)


#: the message classes ``_default`` encodes itself (those ``_MESSAGES`` rebuilds directly)
_MESSAGE_CLASSES = frozenset(getattr(lc_messages, name) for name in _FAST_MESSAGES)


def _model_ext(cls: type, fields: dict[str, Any], default: Callable[[Any], Any],
               *extra: Any) -> ormsgpack.Ext:
    """A pydantic model as LangGraph stores one (``extra``: elements after its four)."""
    return ormsgpack.Ext(_EXT_PYDANTIC_V2, ormsgpack.packb(
        (cls.__module__, cls.__name__, fields, "model_validate_json", *extra),
        default=default, option=_jsonplus._option))


def _default(obj: Any) -> Any:
    cls = type(obj)
    if cls in _MESSAGE_CLASSES:
        # LangGraph's own encoding (the same bytes), without asking its chain of checks
        # which kind of object a LangChain message is
        return _model_ext(cls, obj.model_dump(), _jsonplus._msgpack_default)
    if _is_contract_class(cls):
        return _model_ext(cls, obj.model_dump(), _default, {_VERSION_KEY: cls.__version__})
    return _jsonplus._msgpack_default(obj)


def _restore_contract(tup: list[Any], allowed: frozenset[tuple[str, ...]]) -> Any:
    """The stored contract in ``tup``, upgraded to its class's current version, or
    ``_DEFER`` when ``tup`` is not a contract this serializer may rebuild."""
    module, name, kwargs = tup[0], tup[1], tup[2]
    if (module, name) not in allowed or not isinstance(kwargs, dict):
        return _DEFER
    cls: Any
    if len(tup) > 4:
        cls = getattr(importlib.import_module(module), name, None)
    else:  # written without a version: only a contract class already imported matters
        cls = getattr(sys.modules.get(module), name, None)
    if not _is_contract(cls):
        return _DEFER
    from relaygraph.nodes._versions import restore

    meta = tup[4] if len(tup) > 4 and isinstance(tup[4], dict) else {}
    stored = meta.get(_VERSION_KEY)
    try:
        if stored is None:
            # written by LangGraph's own encoder (a contract nested in another object, or
            # stored before versions were recorded): the current shape, else version 1
            try:
                return cls.model_validate(kwargs)
            except Exception:  # noqa: BLE001 - not the current shape: upgrade from 1
                stored = 1
        return restore(cls, kwargs, stored)
    except Exception as exc:
        raise _refuse(exc) from exc


_DEFER = object()


def _fast_hook(fallback: Callable[[int, bytes], Any],
               allowed: frozenset[tuple[str, ...]] = frozenset()) -> Callable[[int, bytes], Any]:
    """An ext hook that rebuilds LangChain messages directly, upgrades stored contracts
    to their current version, and defers all else."""

    def hook(code: int, data: bytes) -> Any:
        if code == _EXT_DELTA_SNAPSHOT and _Snapshot is not None:
            # the messages inside take the fast path too
            return _Snapshot(ormsgpack.unpackb(data, ext_hook=hook, option=_OPTS))
        if code == _EXT_PYDANTIC_V2:
            for size, by_prefix in _MESSAGES.items():
                hit = by_prefix.get(data[:size])
                if hit is None:
                    continue
                build, fields, type_tag = hit
                tup = ormsgpack.unpackb(data, ext_hook=hook, option=_OPTS)
                kwargs = tup[2] if len(tup) > 2 else None
                if (type(kwargs) is dict and kwargs.keys() == fields
                        and kwargs["type"] == type_tag):
                    return build(kwargs)
                return fallback(code, data)
            try:
                tup = ormsgpack.unpackb(data, ext_hook=hook, option=_OPTS)
            except ValueError:
                if getattr(_sinks, "refused", None) is not None:
                    raise  # a nested value was refused: keep its reason
                return fallback(code, data)
            if isinstance(tup, list) and len(tup) >= 4 and isinstance(tup[0], str):
                value = _restore_contract(tup, allowed)
                if value is not _DEFER:
                    return value
        return fallback(code, data)

    return hook


class RelaygraphSerializer(JsonPlusSerializer):
    """LangGraph's serializer in strict msgpack mode, never pickle, with a live allowlist.

    Safe types (LangChain messages, LangGraph's own, standard library values) load as
    usual; other classes load only when allowlisted: every relaygraph ``Contract``
    subclass registers itself, :func:`relaygraph.checkpointers.allow` adds more, and
    ``with_msgpack_allowlist`` (which LangGraph calls under ``LANGGRAPH_STRICT_MSGPACK``)
    extends a copy. Anything else is refused: reading it raises :class:`BlockedTypeError`
    (the saver reports a ``CorruptCheckpointError`` naming the thread and checkpoint),
    never a value silently replaced by its raw data. ``on_blocked="plain"`` restores
    LangGraph's own fallback (the raw data, with a logged warning).

    LangChain messages stored in their current shape are rebuilt without re-validation
    (they were validated when created); this halves the cost of reading long threads.
    """

    def __init__(self, extra: Iterable[tuple[str, ...]] = (), *,
                 on_blocked: Literal["raise", "plain"] = "raise") -> None:
        super().__init__(pickle_fallback=False, allowed_msgpack_modules=None)
        if on_blocked not in ("raise", "plain"):
            raise ValueError(f"on_blocked must be 'raise' or 'plain', got {on_blocked!r}")
        self.on_blocked = on_blocked
        self._extra = frozenset(tuple(e) for e in extra)
        self._seen_generation = -1
        self._inner: JsonPlusSerializer | None = None
        self._hook: Callable[[int, bytes], Any] | None = None

    def _current(self) -> JsonPlusSerializer:
        gen = _allowlist.generation()
        inner = self._inner
        if inner is None or gen != self._seen_generation:
            allowed = set(self._extra) | _allowlist.entries()
            inner = JsonPlusSerializer(pickle_fallback=False,
                                       allowed_msgpack_modules=allowed or None)
            fallback = getattr(inner, "_unpack_ext_hook", None)
            if callable(fallback) and self.on_blocked == "raise" and _EVENTS:
                fallback = _strict_hook(fallback)
            self._hook = (_fast_hook(fallback, frozenset(allowed)) if callable(fallback)
                          else None)
            self._inner, self._seen_generation = inner, gen
        return inner

    def dumps_typed(self, obj: Any) -> tuple[str, bytes]:
        if obj is None or isinstance(obj, _RAW):
            return self._current().dumps_typed(obj)
        # LangGraph's encoding, plus the version of every contract stored
        return "msgpack", ormsgpack.packb(obj, default=_default, option=_jsonplus._option)

    def loads_typed(self, data: tuple[str, bytes]) -> Any:
        inner = self._current()
        hook = self._hook
        if hook is not None and data[0] == "msgpack":
            return _unpack(data[1], hook)
        return inner.loads_typed(data)

    def with_msgpack_allowlist(self, extra_allowlist: Iterable[Any]) -> RelaygraphSerializer:
        add = {(c.__module__, c.__name__) if isinstance(c, type) else tuple(c)
               for c in extra_allowlist}
        if add <= self._extra:
            return self
        return RelaygraphSerializer(self._extra | add, on_blocked=self.on_blocked)


def default_serde() -> SerializerProtocol:
    """The savers' default serializer: see :class:`RelaygraphSerializer`."""
    return RelaygraphSerializer()
