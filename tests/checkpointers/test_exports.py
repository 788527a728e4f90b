"""The public names of relaygraph.checkpointers and the top-level package are pinned."""

from __future__ import annotations

import relaygraph
import relaygraph.checkpointers as checkpointers


def test_checkpointers_exports() -> None:
    assert sorted(checkpointers.__all__) == sorted([
        "AsyncSQLAlchemySaver", "BaseSQLAlchemySaver", "BlockedTypeError", "CheckpointSaveError",
        "CheckpointerError",
        "CorruptCheckpointError", "DatabaseTimeoutError", "DatabaseUnavailableError",
        "InvalidFilterError", "InvalidKeyError", "RelaygraphSerializer", "RetryPolicy",
        "SQLAlchemySaver", "SchemaVersionError", "SetupRequiredError",
        "ThreadInfo", "allow", "default_serde", "metadata", "set_timeouts",
    ])
    for name in checkpointers.__all__:
        assert getattr(checkpointers, name) is not None


def test_top_level_exports() -> None:
    assert sorted(relaygraph.__all__) == ["ConfigurationError", "RelaygraphError",
                                          "__version__"]
    assert issubclass(checkpointers.CheckpointerError, relaygraph.RelaygraphError)


def test_tables_are_in_the_shared_metadata() -> None:
    assert {"relaygraph_checkpoints", "relaygraph_blobs", "relaygraph_writes",
            "relaygraph_migrations"} <= set(checkpointers.metadata.tables)
