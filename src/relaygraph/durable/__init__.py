"""Durable execution on the checkpoints' database.

- Leases: one writer per thread (:class:`LeaseStore`, :func:`leased`), with fencing
  tokens checked where checkpoints are written.
"""

from relaygraph.durable._errors import LeaseLostError, RunCancelledError, ThreadBusyError
from relaygraph.durable._lease import Lease, LeaseStore
from relaygraph.durable._tables import leases_table, metadata

__all__ = [
    "Lease",
    "LeaseLostError",
    "LeaseStore",
    "RunCancelledError",
    "ThreadBusyError",
    "leases_table",
    "metadata",
]
