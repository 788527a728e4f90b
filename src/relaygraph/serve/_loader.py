"""Finding users' graphs (``name=module:attr``) and compiling them on the server's saver."""

from __future__ import annotations

import importlib
import inspect
import re
import typing
from typing import Any

from relaygraph import _allowlist
from relaygraph._errors import ConfigurationError

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


def check_graph_name(name: str) -> str:
    """Graph names are URL segments and assistant ids: letters, digits, ``-`` and ``_``."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigurationError(
            f"graph names are used in URLs and must be letters, digits, '-' or '_' (1-64, "
            f"starting with a letter or digit), got {name!r}")
    return name


def load_graph_spec(spec: str) -> tuple[str, Any]:
    """Import the object a ``name=module:attr`` spec names.

    ``attr`` may be dotted (``module:obj.graph``). The object is a compiled graph, an
    uncompiled ``StateGraph`` or a factory returning one; `compile_on` handles all three.

    Raises:
        ConfigurationError: a malformed spec, a module that does not import or a missing
            attribute, with the spec in the message.
    """
    name, sep, target = spec.partition("=")
    if not sep or ":" not in target:
        raise ConfigurationError(
            f"a graph spec is NAME=module:attr (e.g. refund=myapp.graphs:refund), got {spec!r}")
    check_graph_name(name.strip())
    module_name, _, attr = target.strip().partition(":")
    if not module_name or not attr:
        raise ConfigurationError(f"a graph spec is NAME=module:attr, got {spec!r}")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(
            f"graph spec {spec!r}: cannot import module {module_name!r}: {exc}") from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigurationError(
                f"graph spec {spec!r}: {module_name!r} has no attribute {attr!r}") from None
    return name.strip(), obj


def _is_compiled(obj: Any) -> bool:
    from langgraph.pregel import Pregel

    return isinstance(obj, Pregel)


def _is_builder(obj: Any) -> bool:
    from langgraph.graph import StateGraph

    return isinstance(obj, StateGraph)


def state_classes(builder: Any) -> list[type]:
    """Pydantic models and enums reachable from a StateGraph's state, input and output."""
    from enum import Enum

    from pydantic import BaseModel

    roots: list[Any] = []
    for attr in ("state_schema", "input_schema", "output_schema"):
        schema = getattr(builder, attr, None)
        if schema is not None:
            roots.append(schema)
    for schemas in (getattr(builder, "schemas", None) or {}).keys():
        roots.append(schemas)
    seen: set[Any] = set()
    found: list[type] = []
    todo = list(roots)
    while todo:
        tp = todo.pop()
        try:
            if tp in seen:
                continue
            seen.add(tp)
        except TypeError:  # unhashable annotation objects
            continue
        args = typing.get_args(tp)
        if args:
            todo.extend(args)
            origin = typing.get_origin(tp)
            if origin is not None:
                todo.append(origin)
            continue
        if not isinstance(tp, type):
            continue
        if issubclass(tp, BaseModel | Enum):
            found.append(tp)
        if issubclass(tp, BaseModel):
            todo.extend(f.annotation for f in tp.model_fields.values())
        elif typing.is_typeddict(tp) or hasattr(tp, "__annotations__"):
            try:
                hints = typing.get_type_hints(tp, include_extras=True)
            except Exception:  # noqa: BLE001 - unresolvable forward references: skip them
                hints = dict(getattr(tp, "__annotations__", {}))
            todo.extend(hints.values())
    return [c for c in found if c.__module__ not in ("builtins",)]


def allow_state_classes(builder: Any) -> list[type]:
    """Allow the state's classes in relaygraph's serializer (they come back as themselves)."""
    classes = [c for c in state_classes(builder) if not c.__module__.startswith(
        ("langchain_core.", "langgraph."))]
    if classes:
        _allowlist.allow(*classes)
    return classes


def compile_on(obj: Any, saver: Any) -> Any:
    """Compile (or recompile) a graph so that it checkpoints to ``saver``.

    * a compiled graph is copied with ``checkpointer=saver`` (its interrupts, store and
      name are kept);
    * a ``StateGraph`` is compiled with ``checkpointer=saver``;
    * a factory is called (with ``checkpointer=saver`` if it takes that keyword, else with
      no arguments) and its result handled as above.

    The classes the state holds are added to relaygraph's serializer allowlist, so a saver
    built with the default serializer rebuilds them from checkpoints.

    Raises:
        ConfigurationError: anything else, or a factory that fails or returns anything else.
    """
    if _is_compiled(obj):
        builder = getattr(obj, "builder", None)
        if builder is not None:
            allow_state_classes(builder)
        return obj.copy(update={"checkpointer": saver})
    if _is_builder(obj):
        allow_state_classes(obj)
        return obj.compile(checkpointer=saver)
    if callable(obj) and not isinstance(obj, type):
        try:
            params = inspect.signature(obj).parameters
        except (TypeError, ValueError):
            params = {}  # type: ignore[assignment]
        try:
            made = obj(checkpointer=saver) if "checkpointer" in params else obj()
        except Exception as exc:
            raise ConfigurationError(
                f"the graph factory {getattr(obj, '__qualname__', obj)!r} failed: "
                f"{type(exc).__name__}: {exc}") from exc
        if _is_compiled(made) or _is_builder(made):
            return compile_on(made, saver)
        raise ConfigurationError(
            f"the graph factory {getattr(obj, '__qualname__', obj)!r} returned "
            f"{type(made).__name__}; it must return a StateGraph or a compiled graph")
    raise ConfigurationError(
        f"a served graph must be a compiled graph, a StateGraph or a factory, got "
        f"{type(obj).__name__}")
