"""Guards: halt, retry, or route to a human when an agent's output cannot be trusted.

- `ConfidenceGuard` scores an agent's output (a state path, a callable, or a built-in
  scorer) and routes to the next agent, back to the agent with the reason, to human
  review, or to a halt.
- `CircuitBreaker` opens when an agent's recent failure rate is too high; a
  `BreakerGate` before the agent then skips it until a cooldown has passed. Its state
  lives in a `BreakerStore`: `InMemoryBreakerStore`, or `SQLBreakerStore` shared by every
  worker on the database.
- `BudgetGuard` escalates or halts before a run's tokens or cost exceed a limit.

Every guard is a node returning ``Command(goto=…, update=…)`` and appending a
`relaygraph.graphs.GuardDecision` to ``guard_log``; it works in any ``StateGraph``
whose state includes `relaygraph.graphs.RelayState`, sync (``invoke``) and async
(``ainvoke``). Guards declare their routes, so ``compile()`` rejects an unknown node
name; `validate_guards` also checks scorer paths against the state schema.
`GuardedAgent` (or ``guard.wrap(agent)``) runs a guard inside the agent's own step,
saving a graph step and a checkpoint per verdict.
"""

from relaygraph.guards._breaker import BreakerEvent, CircuitBreaker
from relaygraph.guards._budget import BudgetGuard
from relaygraph.guards._checks import Check, ModelCheck, Rule
from relaygraph.guards._confidence import ConfidenceGuard
from relaygraph.guards._gate import BreakerGate
from relaygraph.guards._node import GuardNode, validate_guards
from relaygraph.guards._record import BreakerRecord, BreakerState
from relaygraph.guards._scorers import (
    Agreement,
    MeanTokenProbability,
    PathScorer,
    Scorer,
    ScoringError,
    SelfReportedConfidence,
)
from relaygraph.guards._sql_store import SQLBreakerStore, breakers_table
from relaygraph.guards._stores import BreakerStore, InMemoryBreakerStore
from relaygraph.guards._wrap import GuardedAgent

__all__ = [
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

# The agent middleware needs LangChain (the ``agents`` extra): loaded when first asked for.
_MIDDLEWARE = ("BudgetMiddleware", "GuardMiddleware", "RelayAgentState")


def __getattr__(name: str) -> object:
    if name in _MIDDLEWARE:
        from relaygraph.guards import _middleware

        return getattr(_middleware, name)
    raise AttributeError(f"module 'relaygraph.guards' has no attribute {name!r}")
