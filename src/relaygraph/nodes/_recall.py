"""The archived handoff source and the ``recall`` tool that reads it back on demand.

A handoff gives the next agent a brief, not the transcript. The transcript is archived
(in graph state under ``handoff_sources``, or in a pluggable :class:`SourceStore`) and
the next agent can fetch exact passages with a ``recall`` tool bound to that archive.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, TypedDict, runtime_checkable

from langchain_core.tools import BaseTool, StructuredTool
from pydantic import BaseModel, Field

from relaygraph._errors import ConfigurationError, RelaygraphError
from relaygraph.nodes._tokens import message_text

SOURCES_KEY = "handoff_sources"
"""State key under which handoffs archive their source, per target: ``{target: SourceRef}``."""


class Passage(TypedDict):
    """One archived source message."""

    index: int
    role: str
    name: str | None
    text: str


class SourceRef(TypedDict, total=False):
    """What a handoff writes under ``handoff_sources[target]``.

    ``passages`` holds the archived messages when archived in state; with a
    :class:`SourceStore` only ``key`` is kept and the passages live in the store.
    """

    key: str
    contract: str
    passages: list[Passage]


@runtime_checkable
class SourceStore(Protocol):
    """Where handoff sources are archived instead of graph state (e.g. blob storage).

    Implementations must be safe to call from several threads.
    """

    def put(self, key: str, passages: list[Passage]) -> None:
        """Store ``passages`` under ``key`` (idempotent: same key, same content)."""

    def get(self, key: str) -> list[Passage] | None:
        """The passages stored under ``key``, or None."""


class InMemorySourceStore:
    """A process-local :class:`SourceStore` (tests, single-process apps)."""

    def __init__(self) -> None:
        self._data: dict[str, list[Passage]] = {}
        self._lock = threading.Lock()

    def put(self, key: str, passages: list[Passage]) -> None:
        """Store ``passages`` under ``key``."""
        with self._lock:
            self._data[key] = list(passages)

    def get(self, key: str) -> list[Passage] | None:
        """The passages under ``key``, or None."""
        with self._lock:
            found = self._data.get(key)
            return list(found) if found is not None else None

    def __len__(self) -> int:
        return len(self._data)


def _role(message: Any) -> tuple[str, str | None]:
    if isinstance(message, str):
        return "human", None
    if isinstance(message, dict):
        return str(message.get("role", "human")), message.get("name")
    return str(getattr(message, "type", "human")), getattr(message, "name", None)


def to_passages(messages: Sequence[Any]) -> list[Passage]:
    """Archive form of source messages: index, role, tool/author name and text."""
    out: list[Passage] = []
    for i, m in enumerate(messages):
        role, name = _role(m)
        out.append(Passage(index=i, role=role, name=name, text=message_text(m)))
    return out


def archive_key(target: str, passages: Sequence[Passage]) -> str:
    """A content hash naming an archived source (same source, same key)."""
    h = hashlib.sha256(target.encode())
    for p in passages:
        h.update(b"\x00" + p["role"].encode() + b"\x01" + p["text"].encode())
    return f"{target}:{h.hexdigest()[:24]}"


class RecallError(RelaygraphError):
    """The archived source a recall tool needs cannot be found."""


def resolve_passages(source: Any, target: str | None = None,
                     store: SourceStore | None = None) -> list[Passage]:
    """Find the archived passages from a state, a :class:`SourceRef` or passages.

    Args:
        source: Graph state (with ``handoff_sources``), a SourceRef, or a passage list.
        target: The handoff target whose source to read (needed with a state).
        store: The store used by the handoff, when it archived outside state.

    Raises:
        RecallError: Nothing archived for ``target``, or the store lost the key.
    """
    if isinstance(source, list):
        return list(source)
    if not isinstance(source, Mapping):
        raise RecallError(f"cannot read archived passages from {type(source).__name__}")
    ref: Any = source
    if "key" not in source and "passages" not in source:
        if target is None:
            raise RecallError("pass target= to read the archive out of a graph state")
        ref = (source.get(SOURCES_KEY) or {}).get(target)
        if ref is None:
            raise RecallError(
                f"state has no archived source for target {target!r} under "
                f"{SOURCES_KEY!r}; was a handoff with target={target!r} run first, and does "
                "the graph state include HandoffState (which declares that key)?"
            )
    if "passages" in ref:
        return list(ref["passages"])
    if store is None:
        raise RecallError(f"source {ref.get('key')!r} lives in a SourceStore; pass store=")
    found = store.get(ref["key"])
    if found is None:
        raise RecallError(f"the SourceStore has no source under {ref['key']!r}")
    return found


_WORD = re.compile(r"\w+", re.UNICODE)


def _windows(text: str, size: int) -> list[tuple[int, int]]:
    """Split text into windows of at most ``size`` chars on line boundaries."""
    spans: list[tuple[int, int]] = []
    start = 0
    n = len(text)
    while start < n:
        end = min(n, start + size)
        if end < n:
            cut = text.rfind("\n", start + size // 2, end)
            if cut == -1:
                cut = text.rfind(" ", start + size // 2, end)
            if cut != -1:
                end = cut + 1
        spans.append((start, end))
        start = end
    return spans or [(0, 0)]


def search_passages(passages: Sequence[Passage], query: str, *, max_results: int = 3,
                    window: int = 600) -> list[dict[str, Any]]:
    """Rank windows of the archived source by how many query words they contain.

    An exact (case-insensitive) phrase match ranks first. Returns dicts with
    ``message``, ``role``, ``name``, ``start``, ``end`` and ``text``.
    """
    terms = {w.casefold() for w in _WORD.findall(query)}
    phrase = " ".join(query.split()).casefold()
    scored: list[tuple[float, int, int, dict[str, Any]]] = []
    for p in passages:
        text = p["text"]
        for s, e in _windows(text, window):
            chunk = text[s:e]
            words = {w.casefold() for w in _WORD.findall(chunk)}
            score = float(len(terms & words))
            if phrase and phrase in " ".join(chunk.split()).casefold():
                score += len(terms) + 1
            if score > 0:
                scored.append((score, -p["index"], -s, {
                    "message": p["index"], "role": p["role"], "name": p["name"],
                    "start": s, "end": e, "text": chunk,
                }))
    scored.sort(key=lambda t: (t[0], t[1], t[2]), reverse=True)
    return [hit for *_, hit in scored[:max_results]]


class _RecallArgs(BaseModel):
    query: str = Field(default="", description="Words or an exact phrase to look for in the "
                       "original conversation (an order id, a name, a topic).")
    message: int | None = Field(default=None, description="Fetch this message (by index) "
                                "instead of searching.")
    max_results: int = Field(default=3, ge=1, le=10)


def _format_hit(hit: Mapping[str, Any]) -> str:
    who = hit["role"] + (f" {hit['name']}" if hit.get("name") else "")
    return f"[message {hit['message']} · {who} · chars {hit['start']}-{hit['end']}]\n{hit['text']}"


def recall_tool(source: Any, *, target: str | None = None, store: SourceStore | None = None,
                name: str = "recall", window: int = 600) -> BaseTool:
    """A LangChain tool that returns raw passages of an archived handoff source.

    Bind it to the next agent's model so it can check details the brief left out::

        tool = recall_tool(state, target="case")
        model = chat_model.bind_tools([tool])

    Args:
        source: The graph state after the handoff, a ``SourceRef`` or a passage list.
        target: The handoff's ``target`` (needed when ``source`` is a state).
        store: The :class:`SourceStore` given to the handoff, if any.
        name: Tool name.
        window: Maximum characters per returned passage.

    Returns:
        A ``StructuredTool`` taking ``query``, ``message`` and ``max_results``.

    Raises:
        RecallError: Nothing is archived for ``target``.
    """
    if window < 50:
        raise ConfigurationError(f"window must be at least 50 characters, got {window}")
    passages = resolve_passages(source, target, store)

    def recall(query: str = "", message: int | None = None, max_results: int = 3) -> str:
        if message is not None:
            for p in passages:
                if p["index"] == message:
                    text = p["text"]
                    more = "" if len(text) <= window * 4 else f"\n[... {len(text)} chars]"
                    return _format_hit({"message": p["index"], "role": p["role"],
                                        "name": p["name"], "start": 0,
                                        "end": min(len(text), window * 4),
                                        "text": text[: window * 4]}) + more
            return f"No message {message}; the source has messages 0-{len(passages) - 1}."
        if not query.strip():
            return "Give a query (words or a phrase) or a message index."
        hits = search_passages(passages, query, max_results=max_results, window=window)
        if not hits:
            return f"Nothing in the original conversation matches {query!r}."
        return "\n\n".join(_format_hit(h) for h in hits)

    return StructuredTool.from_function(
        func=recall,
        name=name,
        description=("Look up exact passages of the original conversation behind the handoff "
                     "brief: search by words/phrase, or fetch one message by index."),
        args_schema=_RecallArgs,
    )
