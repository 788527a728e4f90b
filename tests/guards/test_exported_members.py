"""The public names of relaygraph.guards are a contract."""

import inspect

import relaygraph.guards as guards


def test_exported_members():
    assert guards.__all__ == [
        "Agreement",
        "BreakerEvent",
        "BreakerGate",
        "BreakerRecord",
        "BreakerState",
        "BreakerStore",
        "BudgetGuard",
        "BudgetMiddleware",
        "Check",
        "CircuitBreaker",
        "ConfidenceGuard",
        "GuardMiddleware",
        "GuardNode",
        "GuardedAgent",
        "InMemoryBreakerStore",
        "MeanTokenProbability",
        "ModelCheck",
        "PathScorer",
        "RelayAgentState",
        "Rule",
        "SQLBreakerStore",
        "Scorer",
        "ScoringError",
        "SelfReportedConfidence",
        "breakers_table",
        "validate_guards",
    ]
    for name in guards.__all__:
        member = getattr(guards, name)
        if isinstance(member, type) or inspect.isfunction(member):
            assert member.__module__.startswith("relaygraph.guards."), name
    assert guards.breakers_table.name == "relaygraph_breakers"
