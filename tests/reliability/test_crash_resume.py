"""Crash-resume: the refund and research workflows, SIGKILLed at seeded moments and resumed.

Each trial drives one thread in a forked worker process that kills itself (SIGKILL) at a
chosen boundary: inside a checkpoint write, inside an effect, between an effect and its
ledger record, after the record and before the node's writes are saved, or at a random
moment. Trials alternate between the sync saver with ``invoke`` and the async saver with
``ainvoke``. New processes resume it (a resume may be killed again) until it finishes. Its final
state must equal an uninterrupted run's: the same messages, records and contracts, nothing
lost or duplicated, exactly one CRM row per refund and one published report per research
thread (see tests/reliability/_workers.py). ``bench/soak_durable.py`` runs hundreds of trials.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import _workers as W  # noqa: E402

pytestmark = pytest.mark.reliability

SEED = 20261206


@pytest.fixture(scope="module")
def zygote(tmp_path_factory) -> Iterator[W.Zygote]:
    z = W.Zygote(str(tmp_path_factory.mktemp("crash")))
    yield z
    z.close()


@pytest.mark.parametrize("workflow", W.WORKFLOWS)
def test_killed_runs_resume_to_the_uninterrupted_final_state(zygote, backend,
                                                               workflow) -> None:
    rng = random.Random(f"{SEED}-{backend.kind}-{workflow}")
    refs = {mode: W.reference_run(zygote, backend.url, workflow, f"{workflow}-{mode}", mode)
            for mode in W.MODES}
    for reference in refs.values():
        # the clean run passed every boundary a trial kills at
        assert all(reference["counts"][p] >= 1 for p in ("checkpoint", "effect", "record",
                                                         "after-effect"))
        rows = reference["rows"]
        assert (len(rows["crm"]) if workflow == "refund" else rows["published"]) == 1

    failures = []
    for i, point in enumerate(W.KILL_POINTS):
        mode = W.MODES[i % len(W.MODES)]  # the sync saver and invoke, the async and ainvoke
        t = W.trial(zygote, backend.url, workflow, f"{workflow}-{i}", point, rng, refs[mode],
                    mode=mode)
        if point != "random":  # a random moment may fall after the run's end
            assert t["kills"] >= 1, f"the kill at {point} never fired"
        if t["error"] or t["lost"] or t["duplicated"] or t["diverged"]:
            failures.append((point, mode, t))
    assert failures == []


def test_the_trials_see_the_duplicate_a_missing_ledger_lets_through(zygote,
                                                                    sqlite_backend) -> None:
    """The control: with effects called as plain functions, a kill after the refund was
    written and before the node's writes were saved issues it twice, and the trial says so."""
    rng = random.Random(SEED)
    url = sqlite_backend.url
    reference = W.reference_run(zygote, url, "refund", "clean")
    t = W.trial(zygote, url, "refund", "control", "after-effect", rng, reference,
                rekill=0.0, bypass_ledger=True)
    assert t["kills"] == 1 and t["error"] is None
    assert any(d.startswith("rows.crm") for d in t["duplicated"])
