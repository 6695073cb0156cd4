"""askii, the gateway's virtual currency: its rate (askii per USD) over time, and the conversion.

Rounding rule: askii = usd x rate, multiplied exactly (no intermediate rounding, whatever the
number of digits), then rounded once to 6 decimal places (a micro-askii) with ROUND_HALF_EVEN:
a half goes to the even neighbour, so that rounding does not drift one way over many calls.
The result always carries exactly 6 decimal places (`Decimal("24.000000")`).

The rate history: the configured `askii_per_usd` is the rate before any change; each change is a
`RateSet` event on the one AskiiRates stream, in force from its `effective_from` (inclusive) until
the next change's. Of two changes with the same `effective_from`, the one recorded later wins.
A change may not take effect in the past (beyond `PAST_TOLERANCE` of clock skew), so the rate of
a moment, once used, never changes.
"""
from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import MAX_EMAX, MAX_PREC, MIN_EMIN, ROUND_HALF_EVEN, Context, Decimal, InvalidOperation
from typing import Iterable
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate

_NAMESPACE = UUID("61736b69-692d-7261-7465-736d6f6e6574")
RATES_ID = uuid5(_NAMESPACE, "askii-rates")  # the one stream of rate changes
MICRO = Decimal("0.000001")
PAST_TOLERANCE = timedelta(seconds=5)
MAX_RATE = Decimal(10) ** 15
MAX_RATE_PLACES = 18
MAX_ASKII_DIGITS = 100  # an amount of askii must be below 10**100
# Exact: multiplication never rounds below this precision; only the quantize step rounds.
_EXACT = Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN, rounding=ROUND_HALF_EVEN)


class InvalidAskiiValue(ValueError):
    """A rate, time or amount that cannot be used; `param` names the field."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


def to_askii(usd: Decimal, rate: Decimal) -> Decimal:
    """`usd` in askii at `rate`, by the rounding rule above."""
    product = _EXACT.multiply(usd, rate)
    if not product.is_finite():
        raise InvalidAskiiValue(f"cannot convert {usd} USD: not a finite amount", "usd")
    if product and product.adjusted() >= MAX_ASKII_DIGITS:
        raise InvalidAskiiValue(f"{usd} USD is too large to convert (at most 10^{MAX_ASKII_DIGITS} askii)", "usd")
    return product.quantize(MICRO, context=_EXACT)


def decimal_of(value: object, param: str) -> Decimal:
    """A number from a Decimal, an int or its text (a float through its shortest text); a bool,
    NaN, an infinity or anything else is refused naming `param`."""
    if isinstance(value, bool) or not isinstance(value, (Decimal, int, float, str)):
        raise InvalidAskiiValue(f"'{param}' must be a number (or its text), got {type(value).__name__}", param)
    try:
        number = Decimal(str(value).strip()) if isinstance(value, (str, float)) else Decimal(value)
    except InvalidOperation:
        raise InvalidAskiiValue(f"'{param}' must be a number, got {str(value)[:40]!r}", param) from None
    if not number.is_finite():
        raise InvalidAskiiValue(f"'{param}' must be a finite number, got {number}", param)
    return number


def valid_rate(value: object, param: str = "askii_per_usd") -> Decimal:
    """A rate of askii per USD: above 0, at most 10^15, with at most 18 decimal places."""
    rate = decimal_of(value, param)
    if rate <= 0:
        raise InvalidAskiiValue(f"'{param}' must be above 0, got {rate}", param)
    places = -rate.normalize(_EXACT).as_tuple().exponent  # type: ignore[operator]
    if rate > MAX_RATE or places > MAX_RATE_PLACES:
        raise InvalidAskiiValue(f"'{param}' must be at most 10^15, with at most {MAX_RATE_PLACES} decimal places,"
                                f" got {rate}", param)
    return rate


def as_utc(moment: datetime) -> datetime:
    """A time with its zone; a naive one is UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def parse_time(text: str, param: str) -> datetime:
    """An ISO 8601 time (`2026-12-01T00:00:00Z`, `2026-12-01T01:00:00+01:00`); naive is UTC."""
    try:
        return as_utc(datetime.fromisoformat(text.strip()))
    except ValueError:
        raise InvalidAskiiValue(f"'{param}' must be an ISO 8601 time, got {text[:40]!r}", param) from None


@dataclass(frozen=True)
class RateChange:
    rate: Decimal  # askii per USD
    effective_from: datetime
    actor: str  # "master_key", "user:<id>", "key:<id>", "cli", or the library's caller
    recorded_at: datetime | None = None


class RateBook:
    """The default rate and the changes, in order of `effective_from`: the rate of any moment."""

    def __init__(self, default: Decimal, changes: Iterable[RateChange] = ()) -> None:
        self.default = default
        self.changes = tuple(sorted(changes, key=lambda change: change.effective_from))  # stable: ties keep order
        self._starts = [change.effective_from for change in self.changes]

    def rate_at(self, at: datetime) -> Decimal:
        return self.period_at(at)[0]

    def period_at(self, at: datetime) -> tuple[Decimal, datetime | None, datetime | None]:
        """The rate in force at `at`, since when (None: the default, from the beginning) and until
        when (None: no later change is known)."""
        index = bisect_right(self._starts, as_utc(at))
        rate = self.changes[index - 1].rate if index else self.default
        since = self._starts[index - 1] if index else None
        until = self._starts[index] if index < len(self._starts) else None
        return rate, since, until

    def convert(self, usd: Decimal, at: datetime) -> Decimal:
        return to_askii(usd, self.rate_at(at))


class AskiiRates(Aggregate):
    """The rate changes, in the order they were recorded."""

    class Opened(Aggregate.Created):
        pass

    class RateSet(Aggregate.Event):
        rate: Decimal
        effective_from: datetime
        actor: str

        def apply(self, aggregate: "AskiiRates") -> None:
            aggregate.changes.append(RateChange(self.rate, self.effective_from, self.actor, self.timestamp))

    @classmethod
    def open(cls) -> "AskiiRates":
        return cls._create(cls.Opened, id=RATES_ID)

    def __init__(self) -> None:
        self.changes: list[RateChange] = []

    def set_rate(self, rate: object, effective_from: datetime | None, actor: str, now: datetime) -> RateChange:
        """Records a change in force from `effective_from` (default: now), which may not lie in the past."""
        checked = valid_rate(rate)
        start = now if effective_from is None else as_utc(effective_from)
        if start < now - PAST_TOLERANCE:
            raise InvalidAskiiValue(f"'effective_from' {start.isoformat()} is in the past: a rate change takes effect"
                                    " now or later, so that the history never changes", "effective_from")
        self.trigger_event(self.RateSet, rate=checked, effective_from=start.astimezone(UTC), actor=actor)
        return self.changes[-1]
