"""Budgets as promises: a call reserves its largest possible cost on every budget it falls under,
all or nothing, before it runs; its real cost replaces the reservation when it ends.

Money in the counters is whole nano-dollars (1e-9 USD) so that every store (a dict, a Redis
script, a SQL row) adds and compares exactly: a charge is rounded up to the next nano-dollar and a
limit down, so a counter never shows less spent, nor more allowed, than the exact decimal ledger.

Periods need no job that zeroes anything: a budget's spend is kept per period, and the period a
call belongs to is the one in force when it was admitted. A period starts at the budget's start
plus a whole number of durations; a month is a calendar month. With a time zone, day, week and
month budgets align to the calendar there instead (midnight, Monday, the 1st).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import NamedTuple, Sequence

NANO = Decimal("0.000000001")
PROVIDER = "provider:"  # the scope of a provider's budget: "provider:<name>"
LEASE_S = 900.0  # a reservation of a process that died is released this long after it was made


def to_nanos(usd: Decimal, *, up: bool) -> int:
    return int((usd / NANO).to_integral_value(rounding=ROUND_CEILING if up else ROUND_FLOOR))


def from_nanos(nanos: int) -> Decimal:
    return Decimal(nanos) * NANO


# -- periods ---------------------------------------------------------------------------------------

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def period(duration: str | None, anchor: datetime, at: datetime, zone: tzinfo | None = None
           ) -> tuple[datetime, datetime | None]:
    """(start, end) of the period holding `at` for a budget of `duration` that began at `anchor`;
    a budget with no duration has one period, from its start, that never ends."""
    if not duration:
        return anchor, None
    count, unit = _parse(duration)
    if zone is not None:
        anchor = _calendar(anchor.astimezone(zone), unit)
    if unit == "mo":
        return _months(anchor, count, at)
    length = timedelta(seconds=count * _UNITS[unit])
    start = anchor + math.floor((at - anchor) / length) * length
    return start, start + length


def _calendar(local: datetime, unit: str) -> datetime:
    """Where a day, week or month budget's periods start in a time zone: midnight, Monday, the 1st."""
    if unit in ("s", "m", "h"):
        return local
    day = local.replace(hour=0, minute=0, second=0, microsecond=0)
    if unit == "w":
        return day - timedelta(days=day.weekday())
    return day.replace(day=1) if unit == "mo" else day


def _parse(duration: str) -> tuple[int, str]:
    number = duration.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = duration[len(number):]
    if not number.isdigit() or unit not in (*_UNITS, "mo") or int(number) <= 0:
        raise ValueError(f"not a duration: {duration!r}")
    return int(number), unit


def _add_months(moment: datetime, months: int) -> datetime:
    month = moment.month - 1 + months
    year, month = moment.year + month // 12, month % 12 + 1
    day = min(moment.day, [31, 29 if year % 4 == 0 and (year % 100 or year % 400 == 0) else 28, 31, 30, 31, 30,
                           31, 31, 30, 31, 30, 31][month - 1])
    return moment.replace(year=year, month=month, day=day)


def _months(anchor: datetime, count: int, at: datetime) -> tuple[datetime, datetime]:
    k = ((at.year - anchor.year) * 12 + at.month - anchor.month) // count
    while _add_months(anchor, k * count) > at:
        k -= 1
    while _add_months(anchor, (k + 1) * count) <= at:
        k += 1
    return _add_months(anchor, k * count), _add_months(anchor, (k + 1) * count)


# -- what a call reserves --------------------------------------------------------------------------

class BudgetLine(NamedTuple):
    """One budget a call falls under, in the period it is admitted in."""

    scope: str  # "key:<id>", "key_model:<id>:<model>", "user:<id>", "team:<id>", "member:<team>:<user>",
    # "org:<id>", "customer:<id>", "proxy", "provider:<name>"
    period: str  # the period's start, ISO 8601 ("" for a budget without duration)
    limit: int  # nano-dollars
    resets_at: str | None  # the period's end, ISO 8601
    soft: int | None = None  # nano-dollars: crossing it raises an alert (once per scope and period)


class Headroom(NamedTuple):
    """A scope's counters as the reservation saw them."""

    line: BudgetLine
    spent: int  # settled in this period, nano-dollars
    reserved: int  # held by calls in flight


class BudgetDecision(NamedTuple):
    allowed: bool
    reserved: int  # what this call holds, nano-dollars (0 when refused)
    seen: tuple[Headroom, ...]
    refused: Headroom | None = None

    def as_event(self) -> dict:
        event: dict = {"allowed": self.allowed, "reserved": usd_text(self.reserved),
                       "scopes": [seen_event(h) for h in self.seen]}
        if self.refused is not None:
            event["refused_scope"] = self.refused.line.scope
        return event


def seen_event(headroom: Headroom) -> dict:
    line = headroom.line
    return {"scope": line.scope, "period": line.period, "limit": usd_text(line.limit),
            "soft": None if line.soft is None else usd_text(line.soft),
            "spent": usd_text(headroom.spent), "reserved": usd_text(headroom.reserved),
            "resets_at": line.resets_at}


def usd_text(nanos: int) -> str:
    """Nano-dollars as exact USD text, nine decimals (what str(from_nanos(n)) says, without Decimal)."""
    sign, nanos = ("-", -nanos) if nanos < 0 else ("", nanos)
    return f"{sign}{nanos // 1_000_000_000}.{nanos % 1_000_000_000:09d}"


def decide(seen: Sequence[Headroom], wanted: int, minimum: int) -> BudgetDecision:
    """Reserves `wanted`, or as much as the tightest headroom allows when that is at least
    `minimum` (the call is then made to fit: its output is capped); else refuses, naming the
    scope with the least headroom."""
    seen = tuple(seen)
    if not seen:
        return BudgetDecision(True, wanted, seen)
    tightest = min(seen, key=lambda h: h.line.limit - h.spent - h.reserved)
    room = tightest.line.limit - tightest.spent - tightest.reserved
    if room >= wanted:
        return BudgetDecision(True, wanted, seen)
    if room >= minimum and room > 0:
        return BudgetDecision(True, room, seen)
    return BudgetDecision(False, 0, seen, tightest)


def provider_scope(provider: str) -> str:
    return PROVIDER + provider


def is_provider(line: BudgetLine) -> bool:
    return line.scope.startswith(PROVIDER)


def paying_providers(seen: Sequence[Headroom], wanted: int, minimum: int, unbudgeted: bool) -> tuple[BudgetLine, ...]:
    """Of the provider budgets a call reserved on (any of them may end up serving it), those it keeps:
    the ones that pay for as much as its other budgets allow (`wanted` at most). When none does and
    every deployment it may use has a provider budget (`unbudgeted` false), the one with the most
    room, if that pays `minimum`: the call is then made to fit it. Nothing kept: the call cannot run."""
    providers = [h for h in seen if is_provider(h.line)]
    allowed = min([wanted, *(_room(h) for h in seen if not is_provider(h.line))])
    paying = tuple(h.line for h in providers if _room(h) >= allowed)
    if paying or unbudgeted or not providers:
        return paying
    best = max(providers, key=_room)
    return (best.line,) if _room(best) >= max(minimum, 1) else ()


def roomiest_provider(seen: Sequence[Headroom]) -> Headroom:
    """The provider budget that came closest to paying (the one a refusal names)."""
    return max((h for h in seen if is_provider(h.line)), key=_room)


def _room(headroom: Headroom) -> int:
    return headroom.line.limit - headroom.spent - headroom.reserved


@dataclass(frozen=True)
class CallPrice:
    """What a call may cost: its input now, and each output token it may produce."""

    input_cost: Decimal
    output_cost_per_token: Decimal

    def most(self, output_tokens: int, n: int) -> Decimal:
        return self.input_cost + self.output_cost_per_token * output_tokens * n

    def affordable_output(self, nanos: int, n: int) -> int:
        """The output tokens (per choice) that `nanos` pays for, beside the input."""
        if self.output_cost_per_token <= 0:
            return 0
        left = from_nanos(nanos) - self.input_cost
        return max(0, int(left / (self.output_cost_per_token * n)))
