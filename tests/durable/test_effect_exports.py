"""The public names of relaygraph.durable's effects are pinned."""

from __future__ import annotations

import relaygraph.durable as durable
from relaygraph._errors import RelaygraphError

EFFECT_NAMES = {"Effect", "EffectError", "EffectInDoubtError", "EffectLedger",
                "EffectLedgerError", "EffectRecord", "EffectReviewDecision", "InDoubtCall",
                "Resolved", "SchedulingCheckpointMissing", "derive_key", "effect",
                "effects_table"}


def test_effect_exports() -> None:
    assert EFFECT_NAMES <= set(durable.__all__)
    for name in EFFECT_NAMES:
        assert getattr(durable, name) is not None


def test_effect_errors_are_relaygraph_errors() -> None:
    for err in (durable.EffectError, durable.EffectInDoubtError, durable.EffectLedgerError,
                durable.SchedulingCheckpointMissing):
        assert issubclass(err, RelaygraphError)


def test_the_effects_table_is_in_the_shared_metadata() -> None:
    from relaygraph._sql import metadata

    assert metadata.tables["relaygraph_effects"] is durable.effects_table
