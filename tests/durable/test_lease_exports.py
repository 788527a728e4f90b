"""The public names of relaygraph.durable's leases are pinned."""

from __future__ import annotations

import relaygraph.durable as durable
from relaygraph._errors import RelaygraphError

LEASE_NAMES = {"Drain", "Lease", "LeaseLostError", "LeaseStore", "LeasedGraph",
               "RunCancelledError", "drain_on_sigterm", "leased",
               "ThreadBusyError", "leases_table", "metadata"}


def test_lease_exports() -> None:
    assert LEASE_NAMES <= set(durable.__all__)
    for name in LEASE_NAMES:
        assert getattr(durable, name) is not None


def test_exports_are_exactly_the_leases_and_the_effects() -> None:
    from .test_effect_exports import EFFECT_NAMES

    assert sorted(durable.__all__) == sorted(LEASE_NAMES | set(EFFECT_NAMES))


def test_errors_are_relaygraph_errors() -> None:
    for err in (durable.ThreadBusyError, durable.LeaseLostError, durable.RunCancelledError):
        assert issubclass(err, RelaygraphError)


def test_lease_table_is_in_the_shared_metadata() -> None:
    from relaygraph._sql import metadata

    assert durable.metadata is metadata
    assert metadata.tables["relaygraph_leases"] is durable.leases_table
