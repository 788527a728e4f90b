"""Types the default checkpoint serializer may rebuild, registered as they are defined.

LangGraph's serializer in strict msgpack mode rebuilds only allowlisted classes and
silently returns plain data for the rest. Every ``Contract`` subclass registers itself
here when its class is created, so contracts put into state come back as their class
after a restart with no configuration. Other types can be added with :func:`allow`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

_lock = threading.Lock()
_sources: list[Callable[[], Iterable[tuple[str, str]]]] = []
_generation = 0


def register(source: Callable[[], Iterable[tuple[str, str]]]) -> None:
    """Register a zero-argument callable returning ``(module, name)`` entries.

    The callable is evaluated lazily (when a serializer next refreshes), after the
    module that defines the class has finished importing.
    """
    global _generation
    with _lock:
        _sources.append(source)
        _generation += 1


def allow(*classes: type) -> None:
    """Let the default serializer rebuild these classes from checkpoints."""
    for cls in classes:
        entry = (cls.__module__, cls.__name__)
        register(lambda entry=entry: [entry])  # type: ignore[misc]


def generation() -> int:
    return _generation


def entries() -> set[tuple[str, str]]:
    out: set[tuple[str, str]] = set()
    with _lock:
        sources = list(_sources)
    for src in sources:
        try:
            out.update(tuple(e) for e in src())  # type: ignore[misc]
        except Exception:  # noqa: BLE001 - a class that cannot be listed is simply not allowed
            continue
    return out


def type_entries(cls: Any) -> list[tuple[str, str]]:
    """Entries for a pydantic model and the models and enums nested in its fields."""
    from enum import Enum

    from pydantic import BaseModel

    seen: set[type] = set()
    todo = [cls]
    while todo:
        c = todo.pop()
        if c in seen:
            continue
        seen.add(c)
        if isinstance(c, type) and issubclass(c, BaseModel):
            for info in c.model_fields.values():
                todo.extend(_leaves(info.annotation))
    return [(c.__module__, c.__name__) for c in seen
            if isinstance(c, type) and issubclass(c, BaseModel | Enum)]


def _leaves(tp: Any) -> list[Any]:
    import typing

    args = typing.get_args(tp)
    if not args:
        return [tp]
    out: list[Any] = []
    for a in args:
        out.extend(_leaves(a))
    return out
