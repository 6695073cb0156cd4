"""`moneta lago retry-parked` and `moneta reconcile lago`: the usage Lago refused sent again, and the
ledger reconciled with Lago (see application/reconciliation.py). Both read the ledger named by the
config (or DATABASE_URL) and need `moneta_settings.lago`."""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import datetime

from moneta.application.config import LagoSettings
from moneta.application.lago_events import LagoUnavailable
from moneta.application.reconciliation import EQUAL, LABELS, MISSING, STATUSES, Report, moment
from moneta.bootstrap import ReadSide, build_read_side, lago_reconciliation

CANNOT = 2  # the exit status when reconciliation could not be done (1: it found differences)


def register(commands: argparse._SubParsersAction) -> None:
    lago = commands.add_parser("lago", help="Lago usage delivery")
    lago_commands = lago.add_subparsers(dest="lago_command", required=True)
    retry = lago_commands.add_parser("retry-parked", help="send again the usage Lago refused (parked), once the"
                                                          " cause is fixed; the read side sends it")
    retry.add_argument("--config")
    retry.set_defaults(run=cmd_retry_parked)

    reconcile = commands.add_parser("reconcile", help="reconcile the ledger with a billing system")
    systems = reconcile.add_subparsers(dest="reconcile_command", required=True)
    with_lago = systems.add_parser(
        "lago", help="compare every call billed through Lago in [--from, --to) with Lago's events; exits 0 only"
                     " with no unexplained difference (missing, unknown, amount differs)")
    with_lago.add_argument("--config")
    with_lago.add_argument("--from", dest="start", metavar="T1", required=True,
                           help="ISO 8601 time (UTC unless it names a zone)")
    with_lago.add_argument("--to", dest="end", metavar="T2", required=True, help="ISO 8601 time, excluded")
    with_lago.add_argument("--repair", action="store_true", help="send the calls missing in Lago again, then"
                                                                  " reconcile again")
    with_lago.add_argument("--json", action="store_true", help="the report as GET /moneta/reconcile gives it")
    with_lago.add_argument("--all", action="store_true", help="list the equal calls too")
    with_lago.set_defaults(run=cmd_reconcile_lago)


def cmd_retry_parked(args: argparse.Namespace) -> None:
    read_side, _ = _open(args)
    try:
        requeued = read_side.lago_usage.delivery.requeue_parked()
    finally:
        read_side.close()
    print(f"moneta: {len(requeued)} parked call(s) requeued; the read side sends them again", file=sys.stderr)
    for request_id in requeued:
        print(request_id)


def cmd_reconcile_lago(args: argparse.Namespace) -> None:
    try:
        start, end = moment(args.start), moment(args.end)
    except ValueError:
        sys.exit("moneta: --from and --to must be ISO 8601 times (2026-05-20 or 2026-05-20T14:03:00Z)")
    if end <= start:
        sys.exit("moneta: the range is empty: --to must come after --from")
    read_side, settings = _open(args)
    try:
        read_side.runner.catch_up()  # the views as the ledger stands now
        report, repaired, after = asyncio.run(_reconcile(read_side, settings, start, end, args.repair))
    except LagoUnavailable as error:
        print(f"moneta: Lago could not be read: {error}", file=sys.stderr)
        sys.exit(CANNOT)
    finally:
        read_side.close()
    final = after or report
    if args.json:
        print(json.dumps({**final.as_json(with_equal=args.all), **({"repaired": repaired} if args.repair else {})}))
    else:
        print(table(report, args.all))
        if args.repair and after is None:
            print("\nrepair: no call is missing in Lago")
        elif args.repair:
            print(f"\nrepair: {len(repaired)} call(s) missing in Lago sent again\n")
            print(table(after, args.all))
    sys.exit(1 if final.unexplained else 0)


async def _reconcile(read_side: ReadSide, settings: LagoSettings, start: datetime, end: datetime,
                     repair: bool) -> tuple[Report, list[str], Report | None]:
    reconciliation = lago_reconciliation(settings, read_side.store, read_side.event_store)
    try:
        report = await reconciliation.report(start, end)
        if not repair or not report.of(MISSING):
            return report, [], None
        delivery = read_side.lago_usage.delivery
        try:
            repaired = await reconciliation.repair(report, delivery)
        finally:
            await delivery.lago.close()
        return report, repaired, await reconciliation.report(start, end)
    finally:
        await reconciliation.lago.close()


def table(report: Report, with_equal: bool = False) -> str:
    counts = report.counts
    lines = [f"Lago reconciliation from {report.start.isoformat()} to {report.end.isoformat()}",
             f"ledger: {len(report.rows) - counts['unknown']} billed call(s); Lago: {report.lago_events} event(s)"]
    lines += [f"  {LABELS[status]:<22} {counts[status]:>8}" for status in STATUSES]
    lines.append(f"unexplained differences: {report.unexplained}")
    rows = [row for row in report.rows if with_equal or row.status != EQUAL]
    if rows:
        lines.append("")
        lines.append(f"{'status':<8} {'transaction_id':<36} {'subscription':<20} {'timestamp':<29}"
                     f" {'ledger cents':>16} {'lago cents':>16}  detail")
        for row in rows:
            at = row.timestamp.isoformat(timespec="milliseconds") if row.timestamp else "-"
            lines.append(f"{row.status:<8} {row.transaction_id:<36} {row.subscription:<20} {at:<29}"
                         f" {row.ledger_cents or '-':>16} {row.lago_cents or '-':>16}  {row.detail}")
    return "\n".join(lines)


def _open(args: argparse.Namespace) -> tuple[ReadSide, LagoSettings]:
    from moneta.api.cli import _config  # the one way every command reads its config

    config = _config(args)
    if config.moneta.lago is None:
        sys.exit("moneta: Lago is not configured (moneta_settings.lago in the config)")
    return build_read_side(config), config.moneta.lago
