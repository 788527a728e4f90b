"""``cost_report``: cost per workflow execution over stored threads; money formatting;
the offline graph drawing."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, StateGraph

from relaygraph import ConfigurationError
from relaygraph.checkpointers import SQLAlchemySaver
from relaygraph.graphs import RelayState
from relaygraph.nodes import track_agent
from relaygraph.observe import Pricing, cost_report, draw_graph
from relaygraph.observe._costs import money, percentile


class S(RelayState, total=False):
    n: int


def _agent(tokens: int, model: str) -> Any:
    def agent(state: Any) -> dict[str, Any]:
        return {"n": 1, "x": [AIMessage("ok", response_metadata={"model_name": model},
                                        usage_metadata={"input_tokens": tokens,
                                                        "output_tokens": 0,
                                                        "total_tokens": tokens})]}
    return agent


def _graph(tokens: int, model: str, saver: Any) -> Any:
    b = StateGraph(S)
    b.add_node("a", track_agent(_agent(tokens, model), name="a",
                                pricing=Pricing({"m1": (1.0, 0.0), "m2": (10.0, 0.0)})))
    b.add_edge(START, "a")
    return b.compile(checkpointer=saver)


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 21)]  # 1..20
    assert (percentile(values, 50), percentile(values, 95), percentile(values, 100)) == (
        10.0, 19.0, 20.0)
    assert percentile([3.0], 95) == 3.0


@pytest.mark.parametrize(("value", "text"), [
    (4.0799999999999996e-05, "$0.000041"), (0.0, "$0.00"), (0.01, "$0.01"),
    (1234.567, "$1,234.57"), (None, "-")])
def test_money_reads_as_money(value: float | None, text: str) -> None:
    assert money(value) == text


def test_cost_report_per_graph_and_model_with_filters(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    with SQLAlchemySaver.from_conn_string(url) as saver:
        saver.setup()
        for i, (tokens, model, gid) in enumerate([(1000, "m1", "g1"), (3000, "m1", "g1"),
                                                  (1000, "m2", "g2")]):
            _graph(tokens, model, saver).invoke(
                {"n": 0}, {"configurable": {"thread_id": f"t{i}"},
                           "metadata": {"graph_id": gid}})
        everything = cost_report(saver)
        only_g1 = cost_report(saver, graph="g1")
        future = cost_report(saver, since=datetime(2999, 1, 1, tzinfo=UTC))
    assert {g: (c.runs, c.mean, c.max) for g, c in everything.graphs.items()} == {
        "g1": (2, pytest.approx(0.002), pytest.approx(0.003)),
        "g2": (1, pytest.approx(0.01), pytest.approx(0.01))}
    shares = {(a.graph_id, a.model): round(a.cost_share, 3) for a in everything.agents}
    assert shares == {("g2", "m2"): round(0.01 / 0.014, 3), ("g1", "m1"): round(0.004 / 0.014, 3)}
    assert everything.agents[0].model == "m2"  # most expensive first
    assert list(only_g1.graphs) == ["g1"] and len(only_g1.runs) == 2
    assert future.runs == [] and future.graphs == {}
    projection = everything.project(100)
    assert projection["g1"]["per_day_mean"] == pytest.approx(0.2)
    assert projection["g2"]["per_30_days_mean"] == pytest.approx(30.0)
    data = everything.as_dict(per_day=10)
    assert data["graphs"][0]["mean"] == 0.002  # rounded money, not float noise
    html = everything.html(per_day=10)
    assert "cost per run" in html and "projection for 10 runs a day" in html
    with pytest.raises(ValueError, match="per_day must be >= 0"):
        everything.project(-1)


@pytest.mark.parametrize("checkpointer", [InMemorySaver(), None, "sqlite:///x.db"])
def test_cost_report_names_the_saver_it_needs(checkpointer: Any) -> None:
    with pytest.raises(ConfigurationError, match="relaygraph SQLAlchemySaver"):
        cost_report(checkpointer)


def test_draw_graph_draws_every_node_offline() -> None:
    from relaygraph.graphs.examples import refund

    drawing = draw_graph(refund.build_refund_graph().compile())
    for node in ("intake", "to_resolver", "check", "check_review", "resolver", "issue"):
        assert f">{node}</text>" in drawing.svg
    assert drawing.svg.count("<polyline") == len(
        refund.build_refund_graph().compile().get_graph().edges)
    assert 'stroke-dasharray' in drawing.svg  # conditional routes are dashed
    bundle = drawing._repr_mimebundle_()
    assert set(bundle) == {"image/svg+xml", "text/vnd.mermaid", "text/plain"}
    assert "intake" in bundle["text/plain"]
