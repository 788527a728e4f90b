"""A condition checked inside the transaction that writes a checkpoint.

A run that must be the only writer of its thread (see ``relaygraph.durable.LeaseStore``)
puts a fence into ``config["configurable"][FENCE_KEY]``. LangGraph hands that config to
``put`` unchanged, and leaves ``"__"``-prefixed keys out of the checkpoint's metadata.
The savers then run the fence's statement first in the put's transaction, let the fence
judge the rows, and write the checkpoint only if it did not raise. The statement locks
what it reads until the checkpoint row is committed, so whatever the fence guards (a
lease's token) cannot change between the check and the write.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

FENCE_KEY = "__relaygraph_fence"
"""The ``config["configurable"]`` key a fence travels under."""


@runtime_checkable
class WriteFence(Protocol):
    """What a checkpoint write checks, atomically with the write."""

    def fence_statement(self) -> tuple[Any, dict[str, Any]]:
        """A SELECT and its parameters, run first in the write's transaction.

        It must lock the rows it reads (``with_for_update(read=True)``) until commit;
        SQLite's writes hold the database's write lock already.
        """
        ...

    def fence_check(self, rows: Sequence[Any]) -> None:
        """Raise to refuse the write; the transaction then rolls back."""
        ...
