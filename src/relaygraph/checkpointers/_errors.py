"""Errors raised by the SQLAlchemy checkpointers."""

from __future__ import annotations

from relaygraph._errors import RelaygraphError


class CheckpointerError(RelaygraphError):
    """Base class of checkpointer errors."""


class InvalidKeyError(CheckpointerError, ValueError):
    """A thread id, namespace, checkpoint id, channel or task id cannot be stored exactly."""


class InvalidFilterError(CheckpointerError, ValueError):
    """A ``list(filter=…)`` key is not a plain metadata key."""


class DatabaseUnavailableError(CheckpointerError, ConnectionError):
    """The database could not be reached or refused the login."""


class SetupRequiredError(CheckpointerError):
    """The checkpoint tables do not exist yet: call ``setup()`` / ``asetup()`` first."""


class SchemaVersionError(SetupRequiredError):
    """The checkpoint tables are at another schema version than this relaygraph's.

    Older tables are upgraded in place by ``setup()``; newer ones need a newer relaygraph.
    """

    def __init__(self, message: str, *, found: int, needed: int) -> None:
        super().__init__(message)
        self.found = found
        self.needed = needed


class CorruptCheckpointError(CheckpointerError):
    """Stored checkpoint data cannot be reconstructed (a missing or unreadable row).

    Raised for every row that does not decode: bytes that are not what the saver wrote,
    a payload that decompresses beyond its bound, a value of a class that may not be
    loaded. Nothing in such a row is executed. ``thread_id`` and, where known,
    ``checkpoint_id``, ``channel`` and ``version`` say which data it is.
    """

    def __init__(self, message: str, *, thread_id: str, channel: str | None = None,
                 version: str | None = None, checkpoint_id: str | None = None) -> None:
        super().__init__(message)
        self.thread_id = thread_id
        self.channel = channel
        self.version = version
        self.checkpoint_id = checkpoint_id

    def __str__(self) -> str:
        text = super().__str__()
        if self.checkpoint_id is not None and repr(self.checkpoint_id) not in text:
            return f"{text} (reading checkpoint {self.checkpoint_id!r})"
        return text


class BlockedTypeError(CheckpointerError, TypeError):
    """A stored value names a class that is not on the serializer's allowlist.

    Raised by the default serializer instead of handing back the object's raw data; the
    saver reports it as a :class:`CorruptCheckpointError` naming the thread and
    checkpoint, with this error as its cause.
    """

    def __init__(self, module: str, name: str, method: str | None = None) -> None:
        what = f"{module}.{name}" + (f".{method}" if method else "")
        fix = ("only LangGraph's own safe methods are called" if method else
               f"if the class is yours, allow it before reading: "
               f"relaygraph.checkpointers.allow({name})")
        super().__init__(f"the stored value is a {what}, which is not on the allowlist, so "
                         f"it was not loaded; {fix}")
        self.module = module
        self.name = name
        self.method = method
