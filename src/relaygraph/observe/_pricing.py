"""Per-model price table and cost arithmetic over the ``usage`` channel."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from relaygraph._errors import ConfigurationError
from relaygraph.state import UsageTable

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelPrice:
    """List price of one model in US dollars per million tokens.

    Args:
        input_per_mtok: price of one million input (prompt) tokens.
        output_per_mtok: price of one million output (completion) tokens.
    """

    input_per_mtok: float
    output_per_mtok: float

    def __post_init__(self) -> None:
        for name in ("input_per_mtok", "output_per_mtok"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or math.isnan(value) or value < 0:
                raise ConfigurationError(
                    f"{name} must be a non-negative number of dollars per million tokens, "
                    f"got {value!r}"
                )

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        """Dollar cost of one call with these token counts."""
        return (input_tokens * self.input_per_mtok + output_tokens * self.output_per_mtok) / 1e6


#: Date the default prices were taken from the providers' public price pages.
DEFAULT_PRICES_AS_OF = date(2025, 8, 1)

#: Public list prices (USD per million tokens, standard tier, no caching or batch
#: discounts). Prices change: pass your own table, or ``Pricing.with_prices(...)``.
DEFAULT_PRICES: dict[str, ModelPrice] = {
    "gpt-4o": ModelPrice(2.50, 10.00),
    "gpt-4o-mini": ModelPrice(0.15, 0.60),
    "gpt-4.1": ModelPrice(2.00, 8.00),
    "gpt-4.1-mini": ModelPrice(0.40, 1.60),
    "gpt-4.1-nano": ModelPrice(0.10, 0.40),
    "o3": ModelPrice(2.00, 8.00),
    "o4-mini": ModelPrice(1.10, 4.40),
    "claude-opus-4": ModelPrice(15.00, 75.00),
    "claude-sonnet-4": ModelPrice(3.00, 15.00),
    "claude-3-7-sonnet": ModelPrice(3.00, 15.00),
    "claude-3-5-sonnet": ModelPrice(3.00, 15.00),
    "claude-3-5-haiku": ModelPrice(0.80, 4.00),
    "claude-3-haiku": ModelPrice(0.25, 1.25),
    "gemini-2.5-pro": ModelPrice(1.25, 10.00),
    "gemini-2.5-flash": ModelPrice(0.30, 2.50),
    "gemini-2.0-flash": ModelPrice(0.10, 0.40),
}

PriceLike = ModelPrice | tuple[float, float] | Mapping[str, float]


def _coerce_price(model: str, value: PriceLike) -> ModelPrice:
    if isinstance(value, ModelPrice):
        return value
    if isinstance(value, tuple) and len(value) == 2:
        return ModelPrice(float(value[0]), float(value[1]))
    if isinstance(value, Mapping):
        try:
            return ModelPrice(float(value["input_per_mtok"]), float(value["output_per_mtok"]))
        except KeyError as exc:
            raise ConfigurationError(
                f"price for {model!r} needs 'input_per_mtok' and 'output_per_mtok', "
                f"got keys {sorted(value)}"
            ) from exc
    raise ConfigurationError(
        f"price for {model!r} must be a ModelPrice, an (input, output) tuple of dollars per "
        f"million tokens, or a mapping; got {value!r}"
    )


def _as_date(value: date | str) -> date:
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(value)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(
            f"as_of must be a date or an ISO date string like '2025-08-01', got {value!r}"
        ) from exc


@dataclass(frozen=True)
class Pricing:
    """A per-model price table with the date its prices were read.

    Model names are matched exactly first, then by the longest known prefix, so
    ``gpt-4o-2024-08-06`` is priced as ``gpt-4o``. Unknown models cost ``default`` (zero
    unless given) and are logged once; pass ``strict=True`` to raise instead.

    Args:
        prices: your prices; merged over the defaults unless ``include_defaults=False``.
        as_of: when the prices were read (a ``date`` or ISO string).
        include_defaults: start from :data:`DEFAULT_PRICES`.
        default: price for models that are not in the table.
        strict: raise :class:`~relaygraph.ConfigurationError` for unknown models.

    Example:
        >>> p = Pricing({"my-model": (1.0, 2.0)}, as_of="2025-09-01")
        >>> p.cost("my-model", 1_000_000, 500_000)
        2.0
    """

    prices: Mapping[str, PriceLike] = field(default_factory=dict)
    as_of: date | str = DEFAULT_PRICES_AS_OF
    include_defaults: bool = True
    default: ModelPrice | None = None
    strict: bool = False
    _table: dict[str, ModelPrice] = field(init=False, repr=False, compare=False)
    _unknown_seen: set[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        table = dict(DEFAULT_PRICES) if self.include_defaults else {}
        for model, value in dict(self.prices).items():
            if not isinstance(model, str) or not model:
                raise ConfigurationError(f"model names must be non-empty strings, got {model!r}")
            table[model] = _coerce_price(model, value)
        object.__setattr__(self, "as_of", _as_date(self.as_of))
        object.__setattr__(self, "_table", table)
        object.__setattr__(self, "_unknown_seen", set())

    @property
    def table(self) -> dict[str, ModelPrice]:
        """A copy of the effective price table."""
        return dict(self._table)

    def with_prices(self, prices: Mapping[str, PriceLike], *, as_of: date | str | None = None
                    ) -> Pricing:
        """A new ``Pricing`` with ``prices`` overriding this table."""
        merged: dict[str, PriceLike] = dict(self._table)
        merged.update(prices)
        return Pricing(merged, as_of=as_of if as_of is not None else self.as_of,
                       include_defaults=False, default=self.default, strict=self.strict)

    def price(self, model: str | None) -> ModelPrice | None:
        """The price that applies to ``model`` (exact name, else longest prefix), or None."""
        if not model:
            return None
        if model in self._table:
            return self._table[model]
        name = model.split("/")[-1].split(":")[-1]  # "openai:gpt-4o", "models/gemini-2.5-pro"
        if name in self._table:
            return self._table[name]
        best = max((k for k in self._table if name.startswith(k)), key=len, default=None)
        return self._table[best] if best is not None else None

    def cost(self, model: str | None, input_tokens: int, output_tokens: int) -> float:
        """Dollar cost of ``input_tokens`` + ``output_tokens`` on ``model``."""
        price = self.price(model)
        if price is None:
            if self.strict:
                raise ConfigurationError(
                    f"no price for model {model!r}; add it with "
                    f"Pricing({{{model!r}: (input_per_mtok, output_per_mtok)}})"
                )
            if model not in self._unknown_seen:
                self._unknown_seen.add(str(model))
                logger.info("relaygraph: no price for model %r; costing it at %s", model,
                            "the default price" if self.default else "0")
            price = self.default
        return price.cost(input_tokens, output_tokens) if price else 0.0

    def to_dict(self) -> dict[str, Any]:
        """The table as plain data (for reports)."""
        return {
            "as_of": str(self.as_of),
            "prices": {m: {"input_per_mtok": p.input_per_mtok,
                           "output_per_mtok": p.output_per_mtok}
                       for m, p in sorted(self._table.items())},
        }


def run_cost(usage: UsageTable | None) -> float:
    """Total dollar cost recorded in a ``usage`` table."""
    return sum(u.get("cost", 0.0) for models in (usage or {}).values() for u in models.values())


def cost_by_agent(usage: UsageTable | None) -> dict[str, float]:
    """Dollar cost per agent recorded in a ``usage`` table."""
    return {agent: sum(u.get("cost", 0.0) for u in models.values())
            for agent, models in (usage or {}).items()}


def tokens_by_agent(usage: UsageTable | None) -> dict[str, tuple[int, int]]:
    """``agent -> (input_tokens, output_tokens)`` recorded in a ``usage`` table."""
    return {agent: (sum(u.get("input_tokens", 0) for u in models.values()),
                    sum(u.get("output_tokens", 0) for u in models.values()))
            for agent, models in (usage or {}).items()}
