"""Durable LangGraph state on any SQLAlchemy database.

SQLite is the embedded default; PostgreSQL (``pip install 'relaygraph[postgres]'``) and
MySQL/MariaDB (``pip install 'relaygraph[mysql]'``) are for many workers sharing state.
"""

from relaygraph._allowlist import allow
from relaygraph._sql import metadata
from relaygraph.checkpointers._aio import AsyncSQLAlchemySaver
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
