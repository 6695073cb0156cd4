"""Prices resolved once per model and price period cost exactly what genai-prices computes."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from genai_prices.data_snapshot import get_snapshot
from genai_prices.types import ModelPrice

from moneta.application.config import Deployment
from moneta.domain.usage import Usage
from moneta.infrastructure.price_periods import PricePeriods, calc_cost
from moneta.infrastructure.pricing import PriceTable

UTC = timezone.utc
USAGES = [
    Usage(prompt_tokens=120, completion_tokens=340),
    Usage(prompt_tokens=0, completion_tokens=0),
    Usage(prompt_tokens=1000, completion_tokens=500, cached_tokens=400),
    Usage(prompt_tokens=1000, completion_tokens=0, cache_write_tokens=200, cached_tokens=100),
    Usage(prompt_tokens=1000, completion_tokens=100, audio_prompt_tokens=600, audio_completion_tokens=50),
    Usage(prompt_tokens=300_000, completion_tokens=20_000, cached_tokens=1000),  # long-context tiers
    Usage(prompt_tokens=1000, completion_tokens=10, cached_tokens=100, audio_prompt_tokens=300),  # cached audio?
    Usage(prompt_tokens=10, completion_tokens=5, cached_tokens=50),  # more cached than prompt: refused
]
TIMES = [datetime(2026, 1, 10, 12, tzinfo=UTC), datetime(2026, 9, 20, 3, tzinfo=UTC)]


def _outcome(price, *args):
    try:
        cost = price(*args)
    except Exception as error:  # genai-prices refuses some usages: both paths must refuse alike
        return type(error)
    return cost, str(cost)  # str: the same exponent too, as the ledger stores it


def _models():
    return [(provider.id, model) for provider in get_snapshot().providers for model in provider.models]


def test_every_known_model_costs_the_same_as_genai_prices():
    periods = PricePeriods()
    known = fast = 0
    for provider_id, model in _models():
        times = TIMES[:1] if isinstance(model.prices, ModelPrice) else TIMES
        for at in times:
            for usage in USAGES:
                args = (provider_id, model.id, usage, at)
                assert _outcome(periods.cost, *args) == _outcome(calc_cost, *args), (provider_id, model.id, usage, at)
        period = periods._periods.get((provider_id, model.id))  # absent: genai-prices knows no such model
        known += period is not None
        fast += period is not None and period.plan is not None
    assert fast > 0.95 * known  # the others are priced by genai-prices on each call


@pytest.mark.parametrize("provider_id, model_id", [
    ("openai", "gpt-4o-mini"), ("anthropic", "claude-sonnet-4-5"), ("google", "gemini-2.5-flash"),
    ("openai", "text-embedding-3-small"), ("openai", "gpt-4o-realtime-preview"),
])
def test_the_common_models_are_resolved_once_per_period(provider_id, model_id):
    periods = PricePeriods()
    at = datetime.now(UTC)
    for usage in USAGES[:5]:
        assert periods.cost(provider_id, model_id, usage, at) == calc_cost(provider_id, model_id, usage, at)
    period = periods._periods[provider_id, model_id]
    assert period.plan is not None and period.start <= at < period.end


def _costs_across(provider_id: str, model_id: str, instants: list[datetime], usage: Usage) -> list[Decimal]:
    """Costs from one warm cache at each instant, checked against the uncached path."""
    periods = PricePeriods()
    costs = []
    for at in instants:
        cost = periods.cost(provider_id, model_id, usage, at)
        assert cost == calc_cost(provider_id, model_id, usage, at), at
        costs.append(cost)
    return costs


def test_a_price_change_on_a_date_is_honoured_at_utc_midnight():
    # claude-opus-4-6 had a long-context tier (above 200k input tokens) until 2026-03-13.
    midnight = datetime(2026, 3, 13, tzinfo=UTC)
    instants = [midnight - timedelta(microseconds=1), midnight, midnight - timedelta(hours=1)]
    before, after, before_again = _costs_across("anthropic", "claude-opus-4-6", instants, Usage(300_000, 0))
    assert (before, after, before_again) == (Decimal("3"), Decimal("1.5"), Decimal("3"))


def test_a_price_change_at_a_time_of_day_is_honoured():
    # deepseek-chat is full price from 00:30 to 16:30 UTC, half price otherwise.
    day = datetime(2026, 2, 3, tzinfo=UTC)
    edges = [day + timedelta(minutes=30), day + timedelta(hours=16, minutes=30)]
    instants = [edges[0] - timedelta(microseconds=1), edges[0], edges[1] - timedelta(microseconds=1), edges[1]]
    off_peak, peak, still_peak, off_peak_again = _costs_across("deepseek", "deepseek-chat", instants,
                                                               Usage(1_000_000, 0))
    assert (off_peak, peak, still_peak, off_peak_again) == (Decimal("0.135"), Decimal("0.27"),
                                                            Decimal("0.27"), Decimal("0.135"))


def test_a_time_in_another_zone_or_naive_is_read_as_genai_prices_reads_it():
    cet = timezone(timedelta(hours=1))
    instants = [datetime(2026, 3, 13, 0, 30, tzinfo=cet), datetime(2026, 3, 13, 0, 30)]  # 2026-03-12 UTC; UTC
    assert _costs_across("anthropic", "claude-opus-4-6", instants, Usage(300_000, 0)) == [Decimal("3"),
                                                                                           Decimal("1.5")]


def test_the_price_table_quotes_as_before():
    table = PriceTable()
    deployment = Deployment(id="d", model_name="m", provider="openai", provider_model="gpt-4o-mini")
    quote = table.quote(deployment, Usage(prompt_tokens=600, completion_tokens=500, cached_tokens=400),
                        datetime.now(UTC))
    assert quote.cost == (200 * Decimal("0.15") + 400 * Decimal("0.075") + 500 * Decimal("0.6")) / 1_000_000
    assert quote.source == "genai-prices 0.2.3:openai/gpt-4o-mini"
