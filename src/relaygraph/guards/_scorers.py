"""Scorers: how a `ConfidenceGuard` turns graph state into a confidence in [0, 1].

A scorer is any callable ``state -> float`` (or an awaitable of one). The built-ins read a
field (`PathScorer`), a self-reported confidence in a structured output
(`SelfReportedConfidence`), the mean token probability of the last model reply
(`MeanTokenProbability`) or the agreement among N samples (`Agreement`).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import math
import numbers
from collections import Counter
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol, runtime_checkable

from relaygraph._errors import ConfigurationError, RelaygraphError
from relaygraph.guards._paths import parse_path, resolve


class ScoringError(RelaygraphError):
    """A scorer could not produce a score; the guard records it as a failure."""


@runtime_checkable
class Scorer(Protocol):
    """``state -> confidence in [0, 1]`` (sync, or returning an awaitable)."""

    def __call__(self, state: Any, /) -> float | Awaitable[float]:
        """Score the state."""
        ...


def as_score(value: Any) -> float:
    """Check a scorer's result: a finite real number in [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real | Decimal):
        raise ScoringError(
            f"scorer returned {type(value).__name__} {value!r:.60}; return a number in [0, 1]"
        )
    f = float(value)
    if math.isnan(f) or math.isinf(f):
        raise ScoringError(f"scorer returned {f}; return a number in [0, 1]")
    if not 0.0 <= f <= 1.0:
        raise ScoringError(f"scorer returned {f}, outside [0, 1]")
    return f


def _paths(*paths: str | None) -> tuple[tuple[str, ...], ...]:
    return tuple(parse_path(p) for p in paths if p is not None)


@dataclass(frozen=True)
class PathScorer:
    """The number at a dotted path of the state, e.g. ``"case.confidence"``.

    A plain string passed as ``score=`` to `ConfidenceGuard` becomes a `PathScorer`.
    """

    path: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "_parts", parse_path(self.path, what="score path"))

    @property
    def state_paths(self) -> tuple[tuple[str, ...], ...]:
        """Paths checked against the state schema by `validate_guards`."""
        return (self._parts,)  # type: ignore[attr-defined]

    def __call__(self, state: Any) -> Any:
        """Read the value at the path (the guard checks that it is a number in [0, 1])."""
        return resolve(state, self._parts)  # type: ignore[attr-defined]


def _last(value: Any) -> Any:
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        if not value:
            raise ScoringError("the list at the path is empty")
        return value[-1]
    return value


def _to_number(raw: Any, labels: Mapping[str, float] | None, percent: bool) -> float:
    if isinstance(raw, str):
        text = raw.strip()
        if labels is not None and text.casefold() in labels:
            return float(labels[text.casefold()])
        pct = text.endswith("%")
        try:
            num = float(text.rstrip("%").strip())
        except ValueError:
            raise ScoringError(f"self-reported confidence {raw!r:.60} is not a number") from None
        return num / 100 if pct or percent else num
    if isinstance(raw, bool) or not isinstance(raw, numbers.Real | Decimal):
        raise ScoringError(f"self-reported confidence is {type(raw).__name__} {raw!r:.60}")
    return float(raw) / 100 if percent else float(raw)


@dataclass(frozen=True)
class SelfReportedConfidence:
    """The confidence an agent reported in its structured output.

    The output at ``path`` may be a pydantic model, a dict, or a message (the last one when
    the path holds a list): for a message, the last tool call's arguments are read, else
    its content parsed as JSON.

    Args:
        path: where the structured output is (``"case"``, ``"messages"``).
        field: the confidence field of that output.
        labels: optional words to numbers, e.g. ``{"high": 0.9, "low": 0.3}``.
        percent: the output reports 0-100 instead of 0-1 (``"85%"`` is always a percent).
    """

    path: str
    field: str = "confidence"
    labels: Mapping[str, float] | None = None
    percent: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "_parts", parse_path(self.path, what="path"))
        if not isinstance(self.field, str) or not self.field:
            raise ConfigurationError(f"field must be a non-empty string, got {self.field!r}")
        if self.labels is not None:
            norm = {}
            for k, v in self.labels.items():
                norm[str(k).casefold()] = as_score_config(f"labels[{k!r}]", v)
            object.__setattr__(self, "labels", norm)

    @property
    def state_paths(self) -> tuple[tuple[str, ...], ...]:
        """Paths checked against the state schema by `validate_guards`."""
        return (self._parts,)  # type: ignore[attr-defined]

    def __call__(self, state: Any) -> float:
        """Extract and normalise the reported confidence."""
        out = _last(resolve(state, self._parts))  # type: ignore[attr-defined]
        data = _structured(out)
        if isinstance(data, Mapping):
            if self.field not in data:
                raise ScoringError(f"the output at {self.path!r} has no {self.field!r} field")
            raw = data[self.field]
        else:
            try:
                raw = getattr(data, self.field)
            except AttributeError:
                raise ScoringError(
                    f"the output at {self.path!r} ({type(data).__name__}) has no "
                    f"{self.field!r} field"
                ) from None
        return _to_number(raw, self.labels, self.percent)


def _structured(out: Any) -> Any:
    tool_calls = getattr(out, "tool_calls", None)
    if tool_calls:
        return tool_calls[-1].get("args", {})
    if hasattr(out, "content") and hasattr(out, "response_metadata"):  # a message
        content = out.content
        if isinstance(content, str):
            try:
                return json.loads(content)
            except ValueError:
                raise ScoringError(
                    "the last message has no tool call and its content is not JSON"
                ) from None
        raise ScoringError("the last message's content is not a JSON object")
    return out


def as_score_config(name: str, value: Any) -> float:
    """Validate a configured number in [0, 1] (raises `ConfigurationError`)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real | Decimal):
        raise ConfigurationError(f"{name} must be a number in [0, 1], got {value!r}")
    f = float(value)
    if not 0.0 <= f <= 1.0:  # also rejects NaN
        raise ConfigurationError(f"{name} must be in [0, 1], got {value!r}")
    return f


def _logprobs(meta: Mapping[str, Any]) -> list[float]:
    lp = meta.get("logprobs")
    if isinstance(lp, Mapping):
        lp = lp.get("content")
    values: list[float] = []
    if isinstance(lp, Sequence) and not isinstance(lp, str):
        for tok in lp:
            v = tok.get("logprob") if isinstance(tok, Mapping) else getattr(tok, "logprob", tok)
            if isinstance(v, numbers.Real) and not isinstance(v, bool):
                values.append(float(v))
    return values


@dataclass(frozen=True)
class MeanTokenProbability:
    """Mean probability of the tokens of the last model reply, from its logprobs.

    Reads ``response_metadata["logprobs"]`` of the last message at ``path`` (the OpenAI
    shape ``{"content": [{"token": …, "logprob": …}, …]}`` or a plain list of tokens), or
    ``response_metadata["avg_logprobs"]`` (Gemini). A reply without logprobs is a scoring
    failure: ask the provider for them (``ChatOpenAI(logprobs=True)``).

    Args:
        path: the messages channel (or a single message).
    """

    path: str = "messages"

    def __post_init__(self) -> None:
        object.__setattr__(self, "_parts", parse_path(self.path, what="path"))

    @property
    def state_paths(self) -> tuple[tuple[str, ...], ...]:
        """Paths checked against the state schema by `validate_guards`."""
        return (self._parts,)  # type: ignore[attr-defined]

    def __call__(self, state: Any) -> float:
        """Compute the mean token probability."""
        msg = _last(resolve(state, self._parts))  # type: ignore[attr-defined]
        meta = getattr(msg, "response_metadata", None)
        if meta is None and isinstance(msg, Mapping):
            meta = msg.get("response_metadata")
        if not isinstance(meta, Mapping):
            raise ScoringError(f"the last item at {self.path!r} is not a model reply")
        values = _logprobs(meta)
        if values:
            return sum(math.exp(v) for v in values) / len(values)
        avg = meta.get("avg_logprobs")
        if isinstance(avg, numbers.Real) and not isinstance(avg, bool):
            return math.exp(float(avg))
        raise ScoringError(
            "the last reply has no logprobs in response_metadata; enable them on the "
            "model (e.g. ChatOpenAI(logprobs=True)) or use another scorer"
        )


def default_key(answer: Any) -> Hashable:
    """How `Agreement` compares answers: text with whitespace and case folded; structured
    values by their JSON form."""
    content = getattr(answer, "content", None)
    if content is not None and hasattr(answer, "response_metadata"):
        answer = content
    if isinstance(answer, str):
        return " ".join(answer.split()).casefold()
    dump = getattr(answer, "model_dump", None)
    if callable(dump):
        answer = dump(mode="json")
    if isinstance(answer, Hashable) and not isinstance(answer, tuple):
        return answer
    try:
        return json.dumps(answer, sort_keys=True, default=str)
    except (TypeError, ValueError):
        return repr(answer)


@dataclass(frozen=True)
class Agreement:
    """Share of N samples that agree with the most common answer (self-consistency).

    Give either ``path`` (a list of answers already in state) or ``sample`` (a sync or
    async callable ``state -> answer`` called ``n`` times; async samples run concurrently).

    Args:
        path: state path of a list of sampled answers.
        sample: callable producing one answer per call.
        n: samples to draw with ``sample``.
        key: maps an answer to what is compared (default: `default_key`).
        min_samples: fewer answers than this is a scoring failure.
    """

    path: str | None = None
    sample: Callable[[Any], Any] | None = None
    n: int = 5
    key: Callable[[Any], Hashable] = field(default=default_key)
    min_samples: int = 2

    def __post_init__(self) -> None:
        if (self.path is None) == (self.sample is None):
            raise ConfigurationError(
                "Agreement needs exactly one of path= (answers in state) or sample= "
                "(a callable drawing one answer)"
            )
        if self.sample is not None and not callable(self.sample):
            raise ConfigurationError(f"sample must be callable, got {self.sample!r}")
        for name in ("n", "min_samples"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigurationError(f"{name} must be an integer >= 1, got {v!r}")
        if self.sample is not None and self.n < self.min_samples:
            raise ConfigurationError(
                f"n ({self.n}) must be >= min_samples ({self.min_samples})"
            )
        if not callable(self.key):
            raise ConfigurationError(f"key must be callable, got {self.key!r}")
        parts = parse_path(self.path, what="path") if self.path is not None else None
        object.__setattr__(self, "_parts", parts)

    @property
    def state_paths(self) -> tuple[tuple[str, ...], ...]:
        """Paths checked against the state schema by `validate_guards`."""
        parts = self._parts  # type: ignore[attr-defined]
        return (parts,) if parts is not None else ()

    def agreement(self, answers: Sequence[Any]) -> float:
        """The share of ``answers`` equal (by ``key``) to the most common one."""
        if len(answers) < self.min_samples:
            raise ScoringError(
                f"agreement needs at least {self.min_samples} samples, got {len(answers)}"
            )
        counts = Counter(self.key(a) for a in answers)
        return counts.most_common(1)[0][1] / len(answers)

    def __call__(self, state: Any) -> float | Awaitable[float]:
        """Score the state (returns an awaitable when ``sample`` is async)."""
        if self.sample is None:
            answers = resolve(state, self._parts)  # type: ignore[attr-defined]
            if isinstance(answers, str | bytes) or not isinstance(answers, Sequence):
                raise ScoringError(
                    f"{self.path!r} holds {type(answers).__name__}, not a list of answers"
                )
            return self.agreement(answers)
        drawn = [self.sample(state) for _ in range(self.n)]
        if any(inspect.isawaitable(d) for d in drawn):
            return self._gather(drawn)
        return self.agreement(drawn)

    async def _gather(self, drawn: list[Any]) -> float:
        async def one(d: Any) -> Any:
            return await d if inspect.isawaitable(d) else d

        return self.agreement(await asyncio.gather(*(one(d) for d in drawn)))


def to_scorer(score: Any) -> Callable[[Any], Any]:
    """Turn ``score=`` into a scorer: a dotted path string or a callable."""
    if isinstance(score, str):
        return PathScorer(score)
    if callable(score):
        return score  # type: ignore[no-any-return]
    raise ConfigurationError(
        f"score must be a dotted path (e.g. 'case.confidence') or a callable "
        f"state -> float, got {type(score).__name__} {score!r:.60}"
    )
