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
    """Stored checkpoint data cannot be reconstructed (a missing or unreadable row)."""

    def __init__(self, message: str, *, thread_id: str, channel: str | None = None,
                 version: str | None = None) -> None:
        super().__init__(message)
        self.thread_id = thread_id
        self.channel = channel
        self.version = version
