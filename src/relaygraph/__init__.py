"""relaygraph: multi-agent LangGraph workflows that hold up in production.

Subpackages:
    checkpointers: durable LangGraph state on any SQLAlchemy database.
    nodes: typed handoffs (`handoff`, `Contract`), human review, agent tracking.
    guards: confidence guards, circuit breakers and budget guards.
    graphs: the shared state vocabulary (`RelayState`) and the `pipeline()` builder.
    observe: run timelines and cost per run, rebuilt from checkpoints.
    serve: graphs behind LangServe with a review inbox.
    testing: deterministic chat models for offline tests.
"""

from relaygraph._errors import ConfigurationError, RelaygraphError

__version__ = "0.1.0"

__all__ = ["ConfigurationError", "RelaygraphError", "__version__"]
