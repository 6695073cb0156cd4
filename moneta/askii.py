"""`moneta.convert_to_askii(usd, at=None)`: USD in askii at the rate in force at `at` (default: now).

Without a ledger (no DATABASE_URL, no MONETA_CONFIG, no library call made yet) the rate is
`moneta.askii_per_usd`. With one, the rate changes recorded there apply from their
`effective_from`; before the first, the default is MONETA_CONFIG's `moneta_settings.askii_per_usd`,
or `moneta.askii_per_usd` when no config file is named. The rounding rule is domain/askii.py's.
"""
from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from moneta import bootstrap
from moneta.domain.askii import as_utc, decimal_of, parse_time, to_askii


def convert_to_askii(usd: Decimal | int | str | float, at: datetime | str | None = None) -> Decimal:
    """`usd` (a Decimal, an int or a decimal string; a float is read through its text) in askii,
    rounded half-even to 6 decimal places. ValueError for an amount or a time that is not one."""
    amount = decimal_of(usd, "usd")
    moment = datetime.now(UTC) if at is None else parse_time(at, "at") if isinstance(at, str) else as_utc(at)
    if not bootstrap.library_ledger_configured():
        return to_askii(amount, bootstrap.library_askii_rate())
    exchange = bootstrap.library_container().askii
    return exchange.load().convert(amount, moment)
