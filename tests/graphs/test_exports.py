"""The public names of relaygraph.graphs are pinned."""

import relaygraph.graphs
import relaygraph.graphs.examples


def test_graphs_exports() -> None:
    assert sorted(relaygraph.graphs.__all__) == sorted([
        "Agent", "AgentRun", "Budget", "Guard", "GuardDecision", "Handoff", "HandoffReport",
        "ReconcileReport", "RelayState", "Review", "ReviewRecord", "Stage", "Usage", "UsageTable",
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


def test_the_state_vocabulary_is_the_lowest_layer() -> None:
    import subprocess
    import sys

    import relaygraph.state

    assert sorted(relaygraph.state.__all__) == sorted([
        "AgentRun", "GuardDecision", "HandoffReport", "ReconcileReport", "RelayState",
        "ReviewAction",
        "ReviewRecord", "Usage", "UsageTable", "VerbatimCheck", "append_records",
        "merge_dicts", "merge_usage"])
    assert relaygraph.graphs.RelayState is relaygraph.state.RelayState
    # importing it loads no component (nodes, guards, graphs, observe, serve)
    code = ("import sys, relaygraph.state; print(sorted(m for m in sys.modules if "
            "m.startswith(('relaygraph.nodes', 'relaygraph.guards', 'relaygraph.graphs', "
            "'relaygraph.observe', 'relaygraph.serve'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
