"""genai-prices, resolved once per model and price period instead of on every call.

`genai_prices.calc_price` costs ~125 µs a call: it finds the model, picks the price in force,
then works out, through its registry of units, which token counts each price applies to.
Only the last step depends on the usage. Here the first steps run once per model and price
period, and a call does the last step as plain integer arithmetic, then the same Decimal
arithmetic as genai-prices (its own `calc_unit_price`, in its order), so the cost is the same
Decimal, down to its exponent.

genai-prices exposes no "valid until", but its prices change only by `StartDateConstraint`
(from a UTC date on) and `TimeOfDateConstraint` (a daily UTC time window); a period is the
stretch around a call's time bounded by the next UTC midnight and the windows' edges.
Anything this module does not model (another kind of constraint, prices or a usage that
genai-prices would refuse) goes through `calc_price` as before, so genai-prices decides.
This leans on genai-prices' internals (pinned at 0.2.3): tests/test_price_periods.py compares
both paths for every model it knows, so an upgrade that changes them fails there.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from itertools import combinations

import genai_prices
from genai_prices.data_snapshot import DataSnapshot, get_snapshot
from genai_prices.decompose import is_descendant_or_self
from genai_prices.types import (
    ModelInfo,
    ModelPrice,
    StartDateConstraint,
    TieredPrices,
    TimeOfDateConstraint,
    _collect_resolved_model_prices,
    _reported_overlap_keys_for_join,
    calc_unit_price,
)
from genai_prices.units import UnitDef, _get_registry
from genai_prices.validation import validate_priced_units

from moneta.domain.usage import Usage

_FOREVER = (datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC))


def genai_usage_values(usage: Usage) -> dict[str, int | None]:
    """The usage as genai-prices is given it (None: not reported)."""
    return {
        "input_tokens": usage.prompt_tokens,
        "output_tokens": usage.completion_tokens,
        "cache_read_tokens": usage.cached_tokens or None,
        "cache_write_tokens": usage.cache_write_tokens or None,
        "input_audio_tokens": usage.audio_prompt_tokens or None,
        "output_audio_tokens": usage.audio_completion_tokens or None,
    }


_REPORTED = tuple(genai_usage_values(Usage()))


def calc_cost(provider_id: str, model_id: str, usage: Usage, at: datetime) -> Decimal:
    """genai-prices' own calculation, every step on every call (the reference)."""
    result = genai_prices.calc_price(genai_prices.Usage(**genai_usage_values(usage)), model_id,
                                     provider_id=provider_id, genai_request_timestamp=at)
    return Decimal(result.total_price)


@dataclass(frozen=True)
class _Plan:
    """How to price a usage with one resolved set of prices."""

    prices: tuple[tuple[UnitDef, Decimal | TieredPrices], ...]  # genai-prices' order
    # (usage key, the usage keys of its priced descendants), the most specific units first
    leaves: tuple[tuple[str, tuple[str, ...]], ...]
    # (usage key, usage keys): genai-prices refuses to count the first when it is not reported
    # and the others all are, non-zero
    refusals: tuple[tuple[str, tuple[str, ...]], ...]
    tiered: bool

    def cost(self, usage: Usage) -> Decimal | None:
        """The cost, or None where genai-prices must decide (it may refuse the usage)."""
        reported = genai_usage_values(usage)
        if not all(type(v) is int and v >= 0 for v in reported.values() if v is not None):
            return None
        if any(reported.get(key) is None and all(reported.get(k) for k in keys) for key, keys in self.refusals):
            return None
        counts: dict[str, int] = {"requests": 1}
        for key, descendants in self.leaves:
            counts[key] = (reported.get(key) or 0) - sum(counts[d] for d in descendants)
            if counts[key] < 0:
                return None
        total_input = reported["input_tokens"] if self.tiered else 0
        total = Decimal(0)
        for unit, price in self.prices:
            total += calc_unit_price(price, counts[unit.usage_key], total_input, unit.per)
        return total


@dataclass(frozen=True)
class _Period:
    snapshot: DataSnapshot
    start: datetime
    end: datetime
    plan: _Plan | None  # None: genai-prices prices each call

    def covers(self, snapshot: DataSnapshot, at: datetime) -> bool:
        return snapshot is self.snapshot and self.start <= at < self.end


class PricePeriods:
    """The prices in force per genai-prices model, kept for as long as they stay in force."""

    def __init__(self) -> None:
        self._periods: dict[tuple[str, str], _Period] = {}

    def cost(self, provider_id: str, model_id: str, usage: Usage, at: datetime) -> Decimal:
        period = self._period(provider_id, model_id, _utc(at))
        cost = period.plan.cost(usage) if period.plan is not None else None
        return calc_cost(provider_id, model_id, usage, at) if cost is None else cost

    def _period(self, provider_id: str, model_id: str, at: datetime) -> _Period:
        snapshot = get_snapshot()
        period = self._periods.get((provider_id, model_id))
        if period is None or not period.covers(snapshot, at):
            period = _resolve(snapshot, provider_id, model_id, at)
            self._periods[provider_id, model_id] = period
        return period


def _resolve(snapshot: DataSnapshot, provider_id: str, model_id: str, at: datetime) -> _Period:
    _, model = snapshot.find_provider_model(model_id, None, provider_id, None)
    start, end = _price_period(model, at)
    return _Period(snapshot, start, end, _plan(model.get_prices(at)))


def _price_period(model: ModelInfo, at: datetime) -> tuple[datetime, datetime]:
    """The stretch of time around `at` (UTC) in which `model.get_prices` picks the same price."""
    if isinstance(model.prices, ModelPrice):
        return _FOREVER
    day = datetime.combine(at.date(), time(), UTC)
    start, end = day, day + timedelta(days=1)  # start dates take effect at UTC midnight
    for conditional in model.prices:
        constraint = conditional.constraint
        if isinstance(constraint, TimeOfDateConstraint):
            for edge in (constraint.start_time, constraint.end_time):
                instant = datetime.combine(day.date(), _utc_time(edge))
                if instant <= at:
                    start = max(start, instant)
                else:
                    end = min(end, instant)
        elif constraint is not None and not isinstance(constraint, StartDateConstraint):
            return at, at  # an unknown kind of constraint: resolve on every call
    return start, end


def _plan(model_price: ModelPrice) -> _Plan | None:
    registry = _get_registry()
    try:
        prices = _collect_resolved_model_prices(model_price, registry)
        validate_priced_units(tuple(unit for unit, _ in prices), registry)
    except ValueError:
        return None  # genai-prices refuses these prices on every call: let it say so
    priced = sorted((unit for unit, _ in prices if unit.usage_key != "requests"),
                    key=lambda unit: (-len(unit.dimensions), unit.usage_key))  # as compute_leaf_values
    leaves = tuple((unit.usage_key, _descendants(unit, priced)) for unit in priced)
    refusals = tuple((unit.usage_key, keys) for unit in priced for keys in _refusals(unit))
    return _Plan(prices, leaves, refusals, any(isinstance(price, TieredPrices) for _, price in prices))


def _descendants(unit: UnitDef, units: list[UnitDef]) -> tuple[str, ...]:
    return tuple(u.usage_key for u in units if u is not unit and is_descendant_or_self(unit, u))


def _refusals(unit: UnitDef) -> list[tuple[str, ...]]:
    """The sets of units we report whose non-zero counts make genai-prices refuse to infer the
    count of `unit` when we do not report it: one more specific unit, or two that overlap in it."""
    registry = _get_registry()
    ours = [registry.units[key] for key in _REPORTED if key != unit.usage_key]
    more_specific = [(u.usage_key,) for u in ours if is_descendant_or_self(unit, u)]
    overlapping = [(a.usage_key, b.usage_key) for a, b in combinations(ours, 2)
                   if _reported_overlap_keys_for_join(unit, [a, b]) is not None]
    return more_specific + overlapping


def _utc(at: datetime) -> datetime:
    """Naive is UTC, as in genai-prices."""
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _utc_time(value: time) -> time:
    """A time of day in UTC, as genai-prices compares them (naive is UTC)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return datetime.combine(date(1970, 1, 1), value).astimezone(UTC).timetz()
