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

RESEARCH_LOG = """Searching: "langgraph checkpoint sqlite throughput"
Result 1 (blog, 2025): a long walkthrough of setting up a chatbot; mostly about prompts.
Relevant: SQLite in WAL mode handles a few hundred small transactions per second on one disk.
Result 2 (forum): someone asks why their notebook kernel died; unrelated to storage.
Searching: "postgres langgraph many workers"
Result 3 (docs): PostgreSQL lets many worker processes share one database and resume any thread.
Result 4 (talk transcript): twenty minutes on team structure, then a slide on deployment.
Searching: "checkpoint size grows every step"
Result 5 (issue thread): users report multi-gigabyte SQLite files after long chats; a maintainer
explains that every step stores the whole state. A reply notes:
Storing appended messages as deltas keeps bytes per step flat as a thread grows.
Result 6 (benchmark notes): several tables of numbers for unrelated databases and a comment that
Full-history reads are dominated by decoding messages, not by the query itself.
Done searching. Drafting notes for the writer; dropping the unrelated results."""
"""The researcher's working log: the findings buried in search noise."""
