"""LangGraph's published conformance suite, on every dialect, sync and async."""

from __future__ import annotations

from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.capabilities import ALL_CAPABILITIES


async def test_conformance_all_capabilities(any_saver) -> None:
    @checkpointer_test(name=f"relaygraph-{type(any_saver).__name__}")
    async def factory():
        yield any_saver

    report = await validate(factory)
    failures = {
        cap: [f"{f}" for f in res.failures]
        for cap, res in report.results.items()
        if res.passed is not True
    }
    assert not failures, failures
    assert {c.value for c in ALL_CAPABILITIES} <= set(report.results)
    assert all(r.tests_passed > 0 for r in report.results.values())
