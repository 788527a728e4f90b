"""Contract versions: upgrading a stored older contract to the current class when read.

A contract declares its version (``class RefundCase(Contract, version=2)`` or
``__version__ = 2``; 1 by default) and its upgrades, keyed by the version they upgrade
from. A step is a function from that version's data (a dict) to the next one's, or a
list of them; :func:`rename` and :func:`default` are the one-line steps::

    class RefundCase(Contract, version=2):
        __upgrades__ = {1: [rename("amount", "refund_amount"), default("currency", "EUR")]}

The checkpoint serializer records the version of every contract it stores and calls
:func:`restore` when it reads one back. A version with no step is carried over as is;
the result is always validated by the current class, so data it rejects raises
:class:`ContractVersionError` (the saver reports it as a ``CorruptCheckpointError``
naming the thread and checkpoint), never a value silently rebuilt from raw data.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from relaygraph._errors import ConfigurationError, RelaygraphError

Step = Callable[[dict[str, Any]], dict[str, Any]]

_lock = threading.Lock()
_seen: dict[tuple[str, str], int] = {}


class ContractVersionError(RelaygraphError):
    """A stored contract cannot be brought to the version the code defines.

    ``contract`` is the class's qualified name, ``stored`` and ``current`` the two versions.
    """

    def __init__(self, message: str, *, contract: str, stored: int, current: int) -> None:
        super().__init__(message)
        self.contract = contract
        self.stored = stored
        self.current = current


def rename(old: str, new: str) -> Step:
    """An upgrade step that moves field ``old`` to ``new`` (a missing ``old`` is left be)."""

    def step(data: dict[str, Any]) -> dict[str, Any]:
        if old in data:
            data = dict(data)
            data[new] = data.pop(old)
        return data

    step.__qualname__ = f"rename({old!r}, {new!r})"
    return step


def default(name: str, value: Any) -> Step:
    """An upgrade step that sets field ``name`` to ``value`` where the old data lacks it."""

    def step(data: dict[str, Any]) -> dict[str, Any]:
        if name not in data:
            data = {**data, name: value}
        return data

    step.__qualname__ = f"default({name!r}, {value!r})"
    return step


def version_of(cls: type) -> int:
    """The version a contract class declares (1 unless it says otherwise)."""
    return int(getattr(cls, "__version__", 1))


def _steps(cls: type) -> dict[int, list[Step]]:
    raw = getattr(cls, "__upgrades__", None) or {}
    out: dict[int, list[Step]] = {}
    for key, value in raw.items():
        out[key] = list(value) if isinstance(value, Sequence) else [value]
    return out


def declare(cls: type) -> None:
    """Check a contract class's version and upgrades; called when the class is created.

    Raises:
        ConfigurationError: the version is not a positive integer, an upgrade is keyed
            by a version that is not older than the class's, a step is not callable, or
            a class of the same qualified name was defined at a higher version before.
    """
    name = f"{cls.__module__}.{cls.__qualname__}"
    version = getattr(cls, "__version__", 1)
    if type(version) is not int or version < 1:
        raise ConfigurationError(
            f"{name}: the contract version must be an integer >= 1, got {version!r}")
    raw = getattr(cls, "__upgrades__", None) or {}
    if not isinstance(raw, Mapping):
        raise ConfigurationError(
            f"{name}.__upgrades__ must map the version upgraded from to a step, got "
            f"{type(raw).__name__}; e.g. {{1: rename('amount', 'refund_amount')}}")
    for key, steps in _steps(cls).items():
        if type(key) is not int or not 0 <= key < version:
            raise ConfigurationError(
                f"{name}.__upgrades__ has a step from version {key!r}, but the contract is "
                f"at version {version}; steps are keyed by an older version (0 to "
                f"{version - 1})")
        for step in steps:
            if not callable(step):
                raise ConfigurationError(
                    f"{name}.__upgrades__[{key}] holds {step!r}, which is not callable; "
                    f"use a function of the old data, rename() or default()")
    with _lock:
        before = _seen.get((cls.__module__, cls.__qualname__))
        if before is not None and version < before:
            raise ConfigurationError(
                f"{name} is defined at version {version} after version {before}: contract "
                f"versions only go up; raise the version and add an upgrade instead")
        _seen[(cls.__module__, cls.__qualname__)] = version


def upgrade(cls: type, data: dict[str, Any], stored: int) -> dict[str, Any]:
    """Run ``cls``'s upgrade steps on data stored at version ``stored``.

    Raises:
        ContractVersionError: the stored version is newer than the class's, or a step
            raised or returned something other than a dict.
    """
    current = version_of(cls)
    name = f"{cls.__module__}.{cls.__qualname__}"

    def fail(why: str) -> ContractVersionError:
        return ContractVersionError(
            f"cannot upgrade the stored {name} from version {stored} to version {current}: "
            f"{why}", contract=name, stored=stored, current=current)

    if type(stored) is not int:
        raise fail(f"the recorded version {stored!r} is not an integer")
    if stored > current:
        raise fail("the stored contract is newer than the code; contract versions went "
                   "backwards (deploy the newer code)")
    steps = _steps(cls)
    for v in range(stored, current):
        for step in steps.get(v, ()):
            try:
                data = step(data)
            except Exception as exc:
                raise fail(f"the upgrade step {getattr(step, '__qualname__', step)} from "
                           f"version {v} raised {type(exc).__name__}: {exc}") from exc
            if not isinstance(data, dict):
                raise fail(f"the upgrade step {getattr(step, '__qualname__', step)} from "
                           f"version {v} returned a {type(data).__name__}, not a dict")
    return data


def restore(cls: type, data: dict[str, Any], stored: int) -> Any:
    """A ``cls`` instance from data stored at version ``stored``, upgraded and validated.

    Raises:
        ContractVersionError: see :func:`upgrade`; also when the current class rejects
            the (upgraded) data, with pydantic's reasons.
    """
    current = version_of(cls)
    upgraded = upgrade(cls, data, stored) if stored != current else data
    try:
        return cls.model_validate(upgraded)  # type: ignore[attr-defined]
    except ValidationError as exc:
        name = f"{cls.__module__}.{cls.__qualname__}"
        how = ("after its upgrade steps" if stored != current else "at the same version")
        errors = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(root)'}: {e['msg']}"
                           for e in exc.errors())
        raise ContractVersionError(
            f"cannot upgrade the stored {name} from version {stored} to version {current}: "
            f"the current class rejects the data {how} ({errors}); add or fix an upgrade "
            f"in {cls.__qualname__}.__upgrades__", contract=name, stored=stored,
            current=current) from exc


def _leaves(annotation: Any) -> set[Any]:
    """The types an annotation admits (``str | None`` -> {str, NoneType})."""
    import types
    import typing

    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _leaves(typing.get_args(annotation)[0])
    if origin is typing.Union or origin is types.UnionType:
        out: set[Any] = set()
        for arg in typing.get_args(annotation):
            out |= _leaves(arg)
        return out
    return {annotation}


def _verbatim(info: Any) -> bool:
    return any(type(m).__name__ == "Verbatim" for m in info.metadata)


def diff(old: type, new: type) -> list[dict[str, Any]]:
    """How ``new`` differs from ``old`` for threads in flight holding an ``old`` instance.

    Each change is ``{"field", "change", "breaking"}``; ``change`` is one of ``removed``,
    ``added required``, ``added optional``, ``now required``, ``type narrowed``,
    ``type widened``, ``Verbatim added``, ``Verbatim removed``. A removed field, a new or
    newly required field and a narrowed type break stored instances unless ``new``
    declares an upgrade step from ``old``'s version or later (then ``breaking`` is False
    and the step is trusted; reading a stored instance still validates the result).
    """
    fo: dict[str, Any] = old.model_fields  # type: ignore[attr-defined]
    fn: dict[str, Any] = new.model_fields  # type: ignore[attr-defined]
    upgraded = version_of(new) > version_of(old) and any(
        v >= version_of(old) for v in _steps(new))
    out: list[dict[str, Any]] = []

    def add(field: str, change: str, breaking: bool) -> None:
        out.append({"field": field, "change": change, "breaking": breaking and not upgraded})

    for name, info in fo.items():
        if name not in fn:
            add(name, "removed", True)
            continue
        new_info = fn[name]
        if new_info.is_required() and not info.is_required():
            add(name, "now required", True)
        before, after = _leaves(info.annotation), _leaves(new_info.annotation)
        if not before <= after:
            add(name, "type narrowed", True)
        elif before < after:
            add(name, "type widened", False)
        if _verbatim(info) != _verbatim(new_info):
            add(name, "Verbatim removed" if _verbatim(info) else "Verbatim added", False)
    for name, info in fn.items():
        if name not in fo:
            add(name, "added required" if info.is_required() else "added optional",
                info.is_required())
    return out
