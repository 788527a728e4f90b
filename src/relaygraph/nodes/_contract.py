"""``Contract``: the schema of exactly what the next agent needs from a handoff."""

from __future__ import annotations

import importlib
import typing
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from enum import Enum
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from relaygraph import _allowlist
from relaygraph._errors import ConfigurationError
from relaygraph.nodes import _versions
from relaygraph.nodes._binding import validate_groups
from relaygraph.nodes._verbatim import Verbatim


def _field_verbatim(info: Any) -> Verbatim | None:
    for meta in info.metadata:
        if isinstance(meta, Verbatim):
            return meta
    return None


def _leaf_types(annotation: Any) -> Iterator[Any]:
    """Every non-generic type mentioned in an annotation (``list[A | None]`` → A, None)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        yield from _leaf_types(typing.get_args(annotation)[0])
    elif origin is not None:
        for arg in typing.get_args(annotation):
            yield from _leaf_types(arg)
    else:
        yield annotation


class Contract(BaseModel):
    """Base class of handoff contracts: a pydantic model with extra fields forbidden.

    Declare exactly what the next agent needs. Mark facts that must be copied from
    the source, not paraphrased, with :class:`Verbatim`; field descriptions guide the
    compressor::

        class RefundCase(Contract):
            '''A refund request, ready for the resolver.'''
            order_id: Annotated[str, Verbatim()] = Field(description="e.g. A-10234")
            amount: Annotated[Decimal, Verbatim()]
            customer_email: Annotated[str | None, Verbatim()] = None
            summary: str = Field(description="one or two sentences")

        RefundCase(order_id="A-10234", amount="12.40", summary="...").to_brief()

    Define contracts at module level (not inside a function) so that checkpoints can
    rebuild them after a restart; see :func:`contract_allowlist`.
    """

    model_config = ConfigDict(extra="forbid")

    brief_title: ClassVar[str | None] = None
    """Heading of the brief; defaults to the class name."""

    binding_groups: ClassVar[tuple[tuple[str, ...], ...] | None] = None
    """Fields that describe one entity, checked to be bound together in the source.

    ``None`` (the default) groups the single-valued ``Verbatim`` fields when there are
    two or more and none uses ``near_field``; ``()`` turns the check off. See
    ``relaygraph.nodes._binding`` for the rule.
    """

    __version__: ClassVar[int] = 1
    """The contract's version, also settable as ``class RefundCase(Contract, version=2)``."""

    __upgrades__: ClassVar[dict[int, Any] | None] = None
    """Upgrade steps keyed by the version they upgrade from; see ``_versions``."""

    def __init_subclass__(cls, version: int | None = None, **kwargs: Any) -> None:
        if version is not None:
            cls.__version__ = version
        super().__init_subclass__(**kwargs)

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        kwargs.pop("version", None)
        super().__pydantic_init_subclass__(**kwargs)
        _versions.declare(cls)
        # relaygraph's default checkpoint serializer rebuilds every contract class
        _allowlist.register(lambda cls=cls: _allowlist.type_entries(cls))  # type: ignore[misc]
        for name, info in cls.model_fields.items():
            marker = _field_verbatim(info)
            if marker is None:
                continue
            if marker.near_field is not None and marker.near_field not in cls.model_fields:
                raise ConfigurationError(
                    f"{cls.__name__}.{name}: Verbatim(near_field={marker.near_field!r}) names "
                    f"no field of {cls.__name__}; use one of {', '.join(cls.model_fields)}"
                )
            for leaf in _leaf_types(info.annotation):
                if leaf is bool:
                    raise ConfigurationError(
                        f"{cls.__name__}.{name}: Verbatim() cannot check a bool (a yes/no "
                        "is not written in the source); remove the marker"
                    )
                if isinstance(leaf, type) and issubclass(leaf, BaseModel):
                    raise ConfigurationError(
                        f"{cls.__name__}.{name}: Verbatim() on a model-typed field "
                        f"({leaf.__name__}); put Verbatim() on that model's own fields"
                    )
        validate_groups(cls)

    @classmethod
    def verbatim_fields(cls) -> dict[str, Verbatim]:
        """The top-level fields marked :class:`Verbatim`, with their markers."""
        out = {}
        for name, info in cls.model_fields.items():
            marker = _field_verbatim(info)
            if marker is not None:
                out[name] = marker
        return out

    def iter_verbatim(self, prefix: str = "") -> Iterator[tuple[str, Verbatim, Any]]:
        """Yield ``(path, marker, value)`` for every non-empty Verbatim value.

        Walks nested models and lists of them; list values yield one entry per
        element (``sources[1]``, ``findings[0].figure``).
        """
        for path, marker, value, _ in self.iter_verbatim_with_owner(prefix):
            yield path, marker, value

    def iter_verbatim_with_owner(
        self, prefix: str = ""
    ) -> Iterator[tuple[str, Verbatim, Any, Contract]]:
        """Like :meth:`iter_verbatim`, plus the model that holds each value."""
        for name, info in type(self).model_fields.items():
            value = getattr(self, name)
            path = f"{prefix}{name}"
            marker = _field_verbatim(info)
            if marker is not None:
                if isinstance(value, list | tuple | set | frozenset):
                    for i, item in enumerate(value):
                        if item is not None:
                            yield f"{path}[{i}]", marker, item, self
                elif value is not None:
                    yield path, marker, value, self
                continue
            if isinstance(value, Contract):
                yield from value.iter_verbatim_with_owner(f"{path}.")
            elif isinstance(value, list | tuple):
                for i, item in enumerate(value):
                    if isinstance(item, Contract):
                        yield from item.iter_verbatim_with_owner(f"{path}[{i}].")

    def filled_fields(self) -> list[str]:
        """Names of the top-level fields that hold a value (not None, not empty)."""
        out = []
        for name in type(self).model_fields:
            value = getattr(self, name)
            if value is None or (isinstance(value, list | dict | str) and not value):
                continue
            out.append(name)
        return out

    def to_brief(self, *, title: bool = True) -> str:
        """A compact, token-lean rendering of the contract for the next agent.

        Empty fields are left out; nested models are indented; lists of scalars are
        joined with ``"; "``.

        Args:
            title: Start with a heading line (``brief_title`` or the class name).

        Returns:
            The brief as plain text.
        """
        lines: list[str] = []
        if title:
            lines.append(f"[{type(self).brief_title or type(self).__name__}]")
        _render(self, lines, "")
        return "\n".join(lines)


def _scalar(value: Any) -> str:
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, str):
        return " ".join(value.split()) if "\n" not in value else value.strip()
    return str(value)


def _render(model: BaseModel, lines: list[str], indent: str) -> None:
    for name in type(model).model_fields:
        value = getattr(model, name)
        if value is None or (isinstance(value, list | dict | str) and not value):
            continue
        if isinstance(value, BaseModel):
            lines.append(f"{indent}{name}:")
            _render(value, lines, indent + "  ")
        elif isinstance(value, list | tuple) and any(isinstance(v, BaseModel) for v in value):
            lines.append(f"{indent}{name}:")
            for item in value:
                if isinstance(item, BaseModel):
                    sub: list[str] = []
                    _render(item, sub, "")
                    lines.append(f"{indent}  - " + "; ".join(sub))
                else:
                    lines.append(f"{indent}  - {_scalar(item)}")
        elif isinstance(value, list | tuple | set | frozenset):
            lines.append(f"{indent}{name}: " + "; ".join(_scalar(v) for v in value))
        elif isinstance(value, dict):
            inner = ", ".join(f"{k}={_scalar(v)}" for k, v in value.items())
            lines.append(f"{indent}{name}: {inner}")
        else:
            lines.append(f"{indent}{name}: {_scalar(value)}")


def _allowlist_types(cls: type, seen: set[type]) -> None:
    if cls in seen:
        return
    seen.add(cls)
    if isinstance(cls, type) and issubclass(cls, BaseModel):
        for info in cls.model_fields.values():
            for leaf in _leaf_types(info.annotation):
                if isinstance(leaf, type) and (issubclass(leaf, BaseModel | Enum)):
                    _allowlist_types(leaf, seen)


def contract_allowlist(*classes: type) -> tuple[tuple[str, str], ...]:
    """The msgpack allowlist entries that let checkpoints rebuild these contracts.

    LangGraph's ``JsonPlusSerializer`` in strict msgpack mode rebuilds only allowlisted
    classes; a blocked class comes back as a plain dict with no error. Pass the result
    to the serializer (nested models and enums used by the contracts are included)::

        serde = JsonPlusSerializer(allowed_msgpack_modules=contract_allowlist(RefundCase))

    Args:
        *classes: Contract (or other pydantic model / enum) classes.

    Returns:
        Sorted ``(module, name)`` tuples.

    Raises:
        ConfigurationError: A class cannot be imported back by module and name (defined
            inside a function, nested in another class, or shadowed), so no allowlist
            can make the serializer rebuild it.
    """
    if not classes:
        raise ConfigurationError("contract_allowlist() needs at least one class")
    seen: set[type] = set()
    for cls in classes:
        if not isinstance(cls, type):
            raise ConfigurationError(
                f"contract_allowlist() takes classes, got {type(cls).__name__}: {cls!r}"
            )
        _allowlist_types(cls, seen)
    entries = set()
    for cls in seen:
        module = importlib.import_module(cls.__module__)
        if getattr(module, cls.__name__, None) is not cls:
            raise ConfigurationError(
                f"{cls.__qualname__} cannot be rebuilt from a checkpoint: "
                f"{cls.__module__}.{cls.__name__} does not name it (it is defined inside a "
                "function or a class, or shadowed). Define it at module level."
            )
        entries.add((cls.__module__, cls.__name__))
    return tuple(sorted(entries))


def contract_serializer(*classes: type, extra: tuple[tuple[str, str], ...] = ()) -> Any:
    """A strict-msgpack ``JsonPlusSerializer`` that rebuilds the given contracts.

    Args:
        *classes: Contract classes stored in graph state.
        extra: More ``(module, name)`` entries to allow.

    Returns:
        ``JsonPlusSerializer(allowed_msgpack_modules=...)``; pass it as ``serde=`` to a
        checkpointer.
    """
    from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

    return JsonPlusSerializer(
        allowed_msgpack_modules=tuple(sorted(set(contract_allowlist(*classes)) | set(extra)))
    )

