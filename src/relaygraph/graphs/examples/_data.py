"""Scripted conversations used by the example workflows (offline, deterministic)."""

from __future__ import annotations

REFUND_TRANSCRIPT: list[tuple[str, str]] = [
    ("human", "Hi, I ordered a standing desk last week and it arrived with a cracked leg."),
    ("ai", "I'm sorry to hear that. Could you give me the order number and what you paid?"),
    (
        "human",
        "Sure, the order is A-10293 and I paid $249.99 on my Visa. The box was fine but the "
        "left leg has a crack right through the weld. I'd like my money back, not a "
        "replacement - I already bought another desk locally.",
    ),
    ("ai", "Thanks. Do you still have the desk, and can you send a photo of the damage?"),
    ("human", "Yes, I uploaded two photos to the ticket. My email is dana.k@example.com."),
]
"""A customer-service chat: the intake agent reads it, the handoff compresses it."""

RESEARCH_QUESTION = (
    "How much do SQL-backed checkpoints slow down a multi-agent LangGraph workflow, "
    "and when is PostgreSQL worth it over SQLite?"
)

RESEARCH_NOTES: list[str] = [
    "SQLite in WAL mode handles a few hundred small transactions per second on one disk.",
    "PostgreSQL lets many worker processes share one database and resume any thread.",
    "Storing appended messages as deltas keeps bytes per step flat as a thread grows.",
    "Full-history reads are dominated by decoding messages, not by the query itself.",
]
"""Findings the deterministic researcher 'finds'; the writer only sees the brief."""
