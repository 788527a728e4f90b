"""Pricing: the price table, its date, overrides and cost arithmetic."""

from __future__ import annotations

from datetime import date

import pytest

from relaygraph import ConfigurationError
from relaygraph.observe import (
    DEFAULT_PRICES,
    DEFAULT_PRICES_AS_OF,
    ModelPrice,
    Pricing,
    cost_by_agent,
    run_cost,
    tokens_by_agent,
)


def test_defaults_and_lookup() -> None:
    p = Pricing()
    assert p.as_of == DEFAULT_PRICES_AS_OF == date(2025, 8, 1)
    assert {"gpt-4o", "gpt-4o-mini", "claude-sonnet-4", "gemini-2.5-flash"} <= set(p.table)
    assert p.price("gpt-4o") == ModelPrice(2.50, 10.00)
    # versioned, provider-prefixed and path-style names resolve to the longest prefix
    assert p.price("gpt-4o-mini-2024-07-18") == DEFAULT_PRICES["gpt-4o-mini"]
    assert p.price("openai:gpt-4o-2024-08-06") == DEFAULT_PRICES["gpt-4o"]
    assert p.price("claude-3-5-haiku-20241022") == DEFAULT_PRICES["claude-3-5-haiku"]
    assert p.price("models/gemini-2.5-pro") == DEFAULT_PRICES["gemini-2.5-pro"]
    assert p.price("nobody-knows") is None and p.price(None) is None
    assert p.cost("gpt-4o", 1_000_000, 100_000) == pytest.approx(2.50 + 1.00)


def test_overrides_keep_their_date() -> None:
    p = Pricing({"gpt-4o": (2.0, 8.0), "house-model": {"input_per_mtok": 0.5,
                                                       "output_per_mtok": 1.5}},
                as_of="2026-03-01")
    assert p.as_of == date(2026, 3, 1)
    assert p.cost("gpt-4o", 1_000_000, 0) == 2.0
    assert p.cost("house-model", 2_000_000, 1_000_000) == pytest.approx(2.5)
    q = p.with_prices({"house-model": ModelPrice(1.0, 1.0)}, as_of=date(2026, 4, 1))
    assert q.cost("house-model", 1_000_000, 0) == 1.0 and q.as_of == date(2026, 4, 1)
    assert p.cost("house-model", 1_000_000, 0) == 0.5  # the original is unchanged
    assert q.to_dict()["as_of"] == "2026-04-01"
    assert q.to_dict()["prices"]["house-model"] == {"input_per_mtok": 1.0,
                                                    "output_per_mtok": 1.0}


def test_unknown_models_default_and_strict() -> None:
    assert Pricing().cost("mystery", 10, 10) == 0.0
    assert Pricing(default=ModelPrice(1.0, 1.0)).cost("mystery", 1_000_000, 0) == 1.0
    with pytest.raises(ConfigurationError, match="no price for model 'mystery'"):
        Pricing(strict=True).cost("mystery", 1, 1)


@pytest.mark.parametrize("kwargs,message", [
    ({"prices": {"m": (-1.0, 1.0)}}, "input_per_mtok must be a non-negative number"),
    ({"prices": {"m": "cheap"}}, "price for 'm' must be a ModelPrice"),
    ({"prices": {"m": {"input": 1}}}, "needs 'input_per_mtok' and 'output_per_mtok'"),
    ({"prices": {"": (1.0, 1.0)}}, "model names must be non-empty strings"),
    ({"as_of": "last tuesday"}, "as_of must be a date or an ISO date string"),
])
def test_configuration_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Pricing(**kwargs)


def test_cost_helpers_over_a_usage_table() -> None:
    usage = {
        "intake": {"a": {"calls": 1, "input_tokens": 10, "output_tokens": 5, "cost": 0.25},
                   "b": {"calls": 2, "input_tokens": 1, "output_tokens": 1, "cost": 0.5}},
        "resolver": {"a": {"calls": 1, "input_tokens": 7, "output_tokens": 3, "cost": 1.0}},
    }
    assert run_cost(usage) == 1.75
    assert cost_by_agent(usage) == {"intake": 0.75, "resolver": 1.0}
    assert tokens_by_agent(usage) == {"intake": (11, 6), "resolver": (7, 3)}
    assert run_cost(None) == 0.0 and cost_by_agent({}) == {}
