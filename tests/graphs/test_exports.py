"""The public names of relaygraph.graphs are pinned."""

import relaygraph.graphs
import relaygraph.graphs.examples


def test_graphs_exports() -> None:
    assert sorted(relaygraph.graphs.__all__) == sorted([
        "Agent", "AgentRun", "Budget", "Guard", "GuardDecision", "Handoff", "HandoffReport",
        "RelayState", "Review", "ReviewRecord", "Stage", "Usage", "UsageTable",
        "VerbatimCheck", "append_records", "examples", "merge_dicts", "merge_usage",
        "pipeline",
    ])
    for name in relaygraph.graphs.__all__:
        assert getattr(relaygraph.graphs, name) is not None


def test_examples_exports() -> None:
    assert sorted(relaygraph.graphs.examples.__all__) == [
        "EXAMPLES", "Example", "refund", "research", "serde"]
    assert relaygraph.graphs.examples is relaygraph.graphs.examples
    assert set(relaygraph.graphs.examples.EXAMPLES) == {"refund", "research"}
