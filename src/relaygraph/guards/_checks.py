"""Checks: pass/fail tests a `ConfidenceGuard` runs next to its score.

A check is a callable ``state -> None | str`` (or an awaitable of one) with a ``name``:
``None`` (or ``True``) passes, a message (or ``False``) fails. A check that raises fails
with the exception as its message; it never crashes the run.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, TypeAdapter, ValidationError

from relaygraph._errors import ConfigurationError
from relaygraph.guards._paths import parse_path, resolve


@runtime_checkable
class Check(Protocol):
    """``state -> None`` when it passes, or a failure message (sync or awaitable)."""

    name: str

    def __call__(self, state: Any, /) -> str | bool | None | Awaitable[str | bool | None]:
        """Run the check."""
        ...


def _check_path(path: str | None) -> tuple[str, ...] | None:
    return parse_path(path, what="path") if path is not None else None


@dataclass(frozen=True)
class Rule:
    """A predicate with the message to record when it does not hold.

    Args:
        predicate: ``value -> bool`` (sync or async); the value is the state, or the value
            at ``path`` when given.
        message: recorded when the predicate is false; a string, or a callable
            ``value -> str`` for messages that quote the value.
        name: shown in ``failed_checks`` (default: the predicate's name).
        path: dotted state path to give the predicate instead of the whole state.

    Example:
        >>> Rule(lambda case: case.amount > 0, "amount must be positive", path="case")
        ... # doctest: +ELLIPSIS
        Rule(...)
    """

    predicate: Callable[[Any], Any]
    message: str | Callable[[Any], str]
    name: str = ""
    path: str | None = None

    def __post_init__(self) -> None:
        if not callable(self.predicate):
            raise ConfigurationError(f"predicate must be callable, got {self.predicate!r}")
        if not (callable(self.message) or (isinstance(self.message, str) and self.message)):
            raise ConfigurationError(
                f"message must be a non-empty string or a callable, got {self.message!r}"
            )
        if not self.name:
            fn_name = getattr(self.predicate, "__name__", "") or "rule"
            object.__setattr__(self, "name", "rule" if fn_name == "<lambda>" else fn_name)
        object.__setattr__(self, "_parts", _check_path(self.path))

    @property
    def state_paths(self) -> tuple[tuple[str, ...], ...]:
        """Paths checked against the state schema by `validate_guards`."""
        parts = self._parts  # type: ignore[attr-defined]
        return (parts,) if parts is not None else ()

    def __call__(self, state: Any) -> Any:
        """Evaluate the rule: None when it holds, else its message."""
        parts = self._parts  # type: ignore[attr-defined]
        value = resolve(state, parts) if parts is not None else state
        verdict = self.predicate(value)
        if hasattr(verdict, "__await__"):
            return self._await(verdict, value)
        return self._message(verdict, value)

    async def _await(self, verdict: Any, value: Any) -> str | None:
        return self._message(await verdict, value)

    def _message(self, verdict: Any, value: Any) -> str | None:
        if verdict:
            return None
        return self.message(value) if callable(self.message) else self.message


@dataclass(frozen=True)
class ModelCheck:
    """Validates the value at ``path`` against a pydantic model (or any type pydantic knows).

    A model instance is validated again from its data, so a value built with
    ``model_construct`` or mutated after validation is caught.

    Args:
        model: a pydantic model class, or a type for ``pydantic.TypeAdapter``.
        path: dotted state path of the value.
        name: shown in ``failed_checks`` (default: ``valid_<Model>``).
    """

    model: Any
    path: str
    name: str = ""

    def __post_init__(self) -> None:
        try:
            adapter = TypeAdapter(self.model)
        except Exception as exc:  # noqa: BLE001 - pydantic raises several kinds here
            raise ConfigurationError(
                f"model must be a pydantic model or a type pydantic can validate, "
                f"got {self.model!r} ({exc})"
            ) from exc
        object.__setattr__(self, "_adapter", adapter)
        object.__setattr__(self, "_parts", parse_path(self.path, what="path"))
        if not self.name:
            object.__setattr__(self, "name", f"valid_{getattr(self.model, '__name__', 'value')}")

    @property
    def state_paths(self) -> tuple[tuple[str, ...], ...]:
        """Paths checked against the state schema by `validate_guards`."""
        return (self._parts,)  # type: ignore[attr-defined]

    def __call__(self, state: Any) -> str | None:
        """None when the value validates, else the validation errors."""
        value = resolve(state, self._parts)  # type: ignore[attr-defined]
        if isinstance(value, BaseModel):
            value = value.model_dump(warnings=False)
        try:
            self._adapter.validate_python(value)  # type: ignore[attr-defined]
        except ValidationError as exc:
            errors = exc.errors()
            shown = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}" for e in errors[:3]
            )
            more = f" (+{len(errors) - 3} more)" if len(errors) > 3 else ""
            return f"{shown}{more}"
        return None


def check_name(check: Any) -> str:
    """The name a check is recorded under."""
    name = getattr(check, "name", None) or getattr(check, "__name__", None) or "check"
    return "check" if name == "<lambda>" else str(name)


def normalise(result: Any, name: str) -> str | None:
    """A check's result as a failure line or None."""
    if result is None or result is True:
        return None
    if result is False:
        return f"{name}: failed"
    if isinstance(result, str):
        return f"{name}: {result}" if result else None
    return f"{name}: returned {type(result).__name__} {result!r:.60} (return None or a message)"
