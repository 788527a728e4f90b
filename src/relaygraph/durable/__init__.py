"""Durable execution on the checkpoints' database.

- Leases: one writer per thread (:class:`LeaseStore`, :func:`leased`), with fencing
  tokens checked where checkpoints are written.
- Effects: :func:`effect` makes a node's side effect happen once per call site across
  crashes, resumes and retries, recorded in an :class:`EffectLedger`.
"""

from relaygraph.durable._effect import (
    Effect,
    EffectError,
    EffectInDoubtError,
    EffectReviewDecision,
    InDoubtCall,
    Resolved,
    derive_key,
    effect,
)
from relaygraph.durable._errors import LeaseLostError, RunCancelledError, ThreadBusyError
from relaygraph.durable._lease import Lease, LeaseStore
from relaygraph.durable._ledger import EffectLedger, EffectLedgerError, EffectRecord
from relaygraph.durable._run import Drain, LeasedGraph, drain_on_sigterm, leased
from relaygraph.durable._scheduled import SchedulingCheckpointMissing
from relaygraph.durable._tables import effects_table, leases_table, metadata

__all__ = [
    "Drain",
    "Effect",
    "EffectError",
    "EffectInDoubtError",
    "EffectLedger",
    "EffectLedgerError",
    "EffectRecord",
    "EffectReviewDecision",
    "InDoubtCall",
    "Lease",
    "LeasedGraph",
    "LeaseLostError",
    "LeaseStore",
    "Resolved",
    "RunCancelledError",
    "SchedulingCheckpointMissing",
    "ThreadBusyError",
    "derive_key",
    "drain_on_sigterm",
    "effect",
    "effects_table",
    "leased",
    "leases_table",
    "metadata",
]
