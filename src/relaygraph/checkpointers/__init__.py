"""Durable LangGraph state on any SQLAlchemy database.

SQLite is the embedded default; PostgreSQL (``pip install 'relaygraph[postgres]'``) and
MySQL/MariaDB (``pip install 'relaygraph[mysql]'``) are for many workers sharing state.
"""

from typing import TYPE_CHECKING, Any

from relaygraph._allowlist import allow
from relaygraph._sql import metadata
from relaygraph.checkpointers._base import (
    BaseSQLAlchemySaver,
    RelaygraphSerializer,
    ThreadInfo,
    default_serde,
)
from relaygraph.checkpointers._errors import (
    BlockedTypeError,
    CheckpointerError,
    CorruptCheckpointError,
    DatabaseUnavailableError,
    InvalidFilterError,
    InvalidKeyError,
    SchemaVersionError,
    SetupRequiredError,
)
from relaygraph.checkpointers._retry import DatabaseTimeoutError, RetryPolicy, set_timeouts
from relaygraph.checkpointers._stop import CheckpointSaveError
from relaygraph.checkpointers._sync import SQLAlchemySaver

if TYPE_CHECKING:
    from relaygraph.checkpointers._aio import AsyncSQLAlchemySaver


def __getattr__(name: str) -> Any:
    # imported on first use: the async saver brings sqlalchemy.ext.asyncio (~80 ms of a
    # process's start-up), which a program using only the sync saver never needs
    if name == "AsyncSQLAlchemySaver":
        from relaygraph.checkpointers._aio import AsyncSQLAlchemySaver

        return AsyncSQLAlchemySaver
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "AsyncSQLAlchemySaver",
    "RelaygraphSerializer",
    "RetryPolicy",
    "BaseSQLAlchemySaver",
    "BlockedTypeError",
    "CheckpointSaveError",
    "CheckpointerError",
    "CorruptCheckpointError",
    "DatabaseTimeoutError",
    "DatabaseUnavailableError",
    "InvalidFilterError",
    "InvalidKeyError",
    "SQLAlchemySaver",
    "SchemaVersionError",
    "SetupRequiredError",
    "ThreadInfo",
    "allow",
    "default_serde",
    "metadata",
    "set_timeouts",
]
