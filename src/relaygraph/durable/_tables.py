"""The tables of relaygraph.durable.

They live in the shared ``relaygraph._sql.metadata`` (re-exported here as ``metadata``), so
that a user's Alembic environment that includes relaygraph's tables gets these too.
"""

from __future__ import annotations

import sqlalchemy as sa

from relaygraph._sql import Key, KeyStr, LargeBlob, metadata

__all__ = ["effects_table", "leases_table", "metadata"]

# -- leases ------------------------------------------------------------------------------

leases_table = sa.Table(
    "relaygraph_leases",
    metadata,
    sa.Column("thread_id", KeyStr, primary_key=True),
    # who holds (or last held) the lease; kept after release for diagnostics
    sa.Column("holder", sa.String(255), nullable=False),
    # the fencing token: +1 on every acquisition, never reset (the row is never deleted)
    sa.Column("token", sa.BigInteger(), nullable=False),
    # epoch seconds; 0 once released
    sa.Column("expires_at", sa.Double(), nullable=False),
    sa.Column("acquired_at", sa.Double(), nullable=False),
    # the token a cancel was requested for (0: none); a new acquisition clears it
    sa.Column("cancel_token", sa.BigInteger(), nullable=False),
)
"""One row per thread that was ever leased."""

# -- effects -----------------------------------------------------------------------------

effects_table = sa.Table(
    "relaygraph_effects",
    metadata,
    sa.Column("effect_name", Key(255), primary_key=True),
    # the key the function received: derived from thread, namespace, task, name and call
    # index ("rg-" + 40 hex digits), or given by hand
    sa.Column("effect_key", Key(255), primary_key=True),
    sa.Column("thread_id", KeyStr, nullable=False),
    sa.Column("checkpoint_ns", sa.Text(), nullable=True),
    sa.Column("task_id", sa.String(255), nullable=False),
    sa.Column("call_index", sa.Integer(), nullable=False),
    # "started" from just before the call until its result is recorded, then "done"
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer(), nullable=False),
    sa.Column("started_at", sa.Double(), nullable=False),
    sa.Column("finished_at", sa.Double(), nullable=True),
    # how a done call was settled: call, reconcile, review or manual
    sa.Column("resolved_by", sa.String(16), nullable=True),
    sa.Column("result_type", sa.String(32), nullable=True),
    sa.Column("result", LargeBlob, nullable=True),
    sa.Index("relaygraph_effects_thread", "thread_id"),
)
"""One row per effect call (see ``relaygraph.durable.EffectLedger``)."""
