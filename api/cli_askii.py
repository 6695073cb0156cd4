"""`moneta askii set-rate | rates | convert`: the askii rate in the ledger (DATABASE_URL, else the
config's `database_url`, else ./moneta.db), as `POST`/`GET /moneta/askii/rate` see it."""
from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import Any

import psycopg
from eventsourcing.persistence import OperationalError as PersistenceOperationalError

from moneta.application.config import GatewayConfig
from moneta.bootstrap import askii_exchange, environment, load_gateway_config
from moneta.domain.askii import InvalidAskiiValue, decimal_of, parse_time, valid_rate
from moneta.domain.errors import ConflictError
from moneta.infrastructure.config_loader import ConfigError

ACTOR = "cli"


def register(commands: Any) -> None:
    askii = commands.add_parser("askii", help="the virtual currency askii: its rate (askii per USD) and conversions")
    askii_commands = askii.add_subparsers(dest="askii_command", required=True)
    set_rate = askii_commands.add_parser("set-rate", help="record a new rate, in force from --effective-from "
                                                          "(default: now; never in the past)")
    set_rate.add_argument("rate", help="askii per USD, above 0 (e.g. 1200)")
    set_rate.add_argument("--effective-from", metavar="ISO", help="ISO 8601 time, e.g. 2026-12-01T00:00:00Z")
    set_rate.add_argument("--config")
    set_rate.set_defaults(run=cmd_set_rate)
    rates = askii_commands.add_parser("rates", help="print the default rate, the rate now and every change")
    rates.add_argument("--config")
    rates.set_defaults(run=cmd_rates)
    convert = askii_commands.add_parser("convert", help="print USD in askii at the rate in force now or --at")
    convert.add_argument("usd", help="an amount of USD (e.g. 0.0125)")
    convert.add_argument("--at", metavar="ISO", help="ISO 8601 time (default: now)")
    convert.add_argument("--config")
    convert.set_defaults(run=cmd_convert)


def cmd_set_rate(args: argparse.Namespace) -> None:
    def run() -> None:
        start = parse_time(args.effective_from, "--effective-from") if args.effective_from else None
        valid_rate(args.rate)  # before the ledger is opened (or created)
        with askii_exchange(_config(args), writing=True) as exchange:
            change = exchange.set_rate(args.rate, start, ACTOR)
        print(f"askii rate {change.rate} per USD from {change.effective_from.isoformat()} (recorded by {change.actor})")

    _reporting(run)


def cmd_rates(args: argparse.Namespace) -> None:
    def run() -> None:
        with askii_exchange(_config(args), writing=False) as exchange:
            book, now = exchange.book, exchange.current_rate()
        print(f"default: {book.default} askii per USD (moneta_settings.askii_per_usd)")
        print(f"now:     {now} askii per USD")
        if book.changes:
            print(f"{'effective_from':<33} {'askii_per_usd':>16}  {'actor':<20} recorded_at")
        for change in book.changes:
            recorded = change.recorded_at.isoformat() if change.recorded_at else ""
            print(f"{change.effective_from.isoformat():<33} {change.rate!s:>16}  {change.actor:<20} {recorded}")

    _reporting(run)


def cmd_convert(args: argparse.Namespace) -> None:
    def run() -> None:
        usd = decimal_of(args.usd, "usd")
        with askii_exchange(_config(args), writing=False) as exchange:
            at = parse_time(args.at, "--at") if args.at else datetime.now(UTC)
            print(exchange.book.convert(usd, at))

    _reporting(run)


def _config(args: argparse.Namespace) -> GatewayConfig:
    try:
        return load_gateway_config(args.config, environment())
    except (ConfigError, ValueError) as exc:
        sys.exit(f"moneta: invalid configuration: {exc}")


def _reporting(run: Any) -> None:
    """One line on stderr and exit status 1 for a refused value or an unusable ledger."""
    try:
        run()
    except InvalidAskiiValue as error:
        sys.exit(f"moneta: {error}")
    except ConflictError as error:
        sys.exit(f"moneta: {error.message}")
    except (psycopg.OperationalError, PersistenceOperationalError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        sys.exit(f"moneta: cannot use the ledger: {reason}")
