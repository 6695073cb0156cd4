"""`moneta audit verify | budgets | export`: the audit chain checked, budgets at a past moment, and
the ledger exported with a manifest tied to the chain."""
from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from moneta.api.responses import jsonable
from moneta.application.audit_budgets import EVENT_TYPES, budgets_at
from moneta.application.audit_export import FORMATS, export
from moneta.application.audit_window import SKEW, parse_moment
from moneta.application.config import GatewayConfig
from moneta.bootstrap import AuditSide, build_audit, environment, load_gateway_config
from moneta.domain.audit_chain import Report, verify_chain
from moneta.domain.errors import GatewayError
from moneta.infrastructure.config_loader import ConfigError
from moneta.projections import seals

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def register(commands: argparse._SubParsersAction) -> None:
    verify = commands.add_parser("verify", help="recompute the hash chain from the stored events; exits 1 naming the"
                                                " first event altered, removed or inserted")
    verify.add_argument("--config")
    verify.add_argument("--expect", metavar="HASH", help="a head seal's hash copied earlier: the chain must hold it")
    verify.add_argument("--show", type=int, default=20, metavar="N", help="problems listed at most (default 20)")
    verify.add_argument("--json", action="store_true", help="the report as one JSON object")
    verify.set_defaults(run=cmd_verify)

    budgets = commands.add_parser("budgets", help="a scope's budget (limit, spend, reservations, period) as it stood"
                                                  " at a past moment, from the events up to then")
    budgets.add_argument("--config")
    budgets.add_argument("--scope", help="key:<key hash or alias>, team:<id>, user:<id>, org:<id> or customer:<id>"
                                         " (default: every scope)")
    budgets.add_argument("--at", help="ISO 8601 time (default: now)")
    budgets.set_defaults(run=cmd_budgets)

    exporting = commands.add_parser("export", help="write the events stamped from --from to --to, one a line, and a"
                                                   " manifest (counts, totals, the covering seal)")
    exporting.add_argument("--config")
    exporting.add_argument("--from", dest="start", help="ISO 8601 time, inclusive (default: the beginning)")
    exporting.add_argument("--to", dest="end", help="ISO 8601 time, exclusive (default: now)")
    exporting.add_argument("--format", choices=FORMATS, default="jsonl")
    exporting.add_argument("--out", required=True, help="directory for events.<format> and manifest.json")
    exporting.add_argument("--page-size", type=int, default=1000, help="events read at a time (default 1000)")
    exporting.set_defaults(run=cmd_export)


def _config(args: argparse.Namespace) -> GatewayConfig:
    try:
        return load_gateway_config(args.config, environment())
    except (ConfigError, ValueError) as exc:
        sys.exit(f"moneta: invalid configuration: {exc}")


def _audit(args: argparse.Namespace, chain: bool = True) -> AuditSide:
    audit = build_audit(_config(args))
    with audit.store.reading() as cur:
        if chain and not cur.columns("audit_seals"):
            audit.close()
            sys.exit("moneta: this database has no audit chain yet: run `moneta migrate`, then the read side "
                     "(`moneta serve` or `moneta projections run`) seals the ledger")
    return audit


def cmd_verify(args: argparse.Namespace) -> None:
    audit = _audit(args)
    started = time.perf_counter()
    try:
        with audit.store.reading() as cur:
            head = seals.head(cur)
        report = verify_chain(head, seals.read_all(audit.store, head.seq if head else 0), audit.scan.preimages,
                              audit.scan.count_after, expected=args.expect, keep=args.show)
    finally:
        audit.close()
    elapsed = time.perf_counter() - started
    if args.json:
        print(orjson.dumps(_report_json(report, elapsed)).decode())
    else:
        _print_report(report, elapsed)
    sys.exit(0 if report.holds else 1)


def _report_json(report: Report, elapsed: float) -> dict[str, Any]:
    return {"holds": report.holds, "seals": report.seals, "events": report.events, "unsealed": report.unsealed,
            "head": report.head.summary() if report.head else None, "problem_count": report.problem_count,
            "problems": [vars(problem) for problem in report.problems], "seconds": round(elapsed, 3)}


def _print_report(report: Report, elapsed: float) -> None:
    rate = f", {report.events / elapsed:,.0f} events/s" if elapsed > 0 and report.events else ""
    if report.holds:
        print(f"the audit chain holds: {report.events} events in {report.seals} seals checked in {elapsed:.2f} s{rate}")
    else:
        print(f"the audit chain does NOT hold: {report.problem_count} problem(s) in {report.events} events and"
              f" {report.seals} seals; the first:")
        for problem in report.problems:
            print(f"  {problem.kind}: {problem.detail}")
        if report.problem_count > len(report.problems):
            print(f"  ... and {report.problem_count - len(report.problems)} more")
    if report.head is not None:
        head = report.head
        print(f"head seal {head.seq}: last position {head.last_position}, {head.total} events, hash {head.hash},"
              f" sealed at {head.sealed_at.isoformat()}")
    if report.unsealed:
        print(f"{report.unsealed} event(s) after the head seal: not sealed yet")


def cmd_budgets(args: argparse.Namespace) -> None:
    audit = _audit(args, chain=False)
    try:
        at = parse_moment(args.at, "--at") if args.at else datetime.now(UTC)
        answer = budgets_at(audit.scan.events(types=EVENT_TYPES), audit.budget_settings, args.scope, at)
    except GatewayError as error:
        sys.exit(f"moneta: {error.message}")
    finally:
        audit.close()
    print(orjson.dumps(jsonable(answer), option=orjson.OPT_INDENT_2).decode())


def cmd_export(args: argparse.Namespace) -> None:
    audit = _audit(args)
    try:
        start = parse_moment(args.start, "--from") if args.start else _EPOCH
        end = parse_moment(args.end, "--to") if args.end else datetime.now(UTC)
        after = audit.scan.position_before(start - SKEW) if start > _EPOCH else 0
        manifest = export(audit.scan.events(after, page_size=args.page_size), start, end, args.format,
                          Path(args.out), lambda position: _covering(audit, position))
    except GatewayError as error:
        sys.exit(f"moneta: {error.message}")
    finally:
        audit.close()
    seal = manifest["seal"]
    covered = f"covered by seal {seal['seq']} ({seal['hash']})" if seal else "not sealed yet"
    print(f"moneta: {manifest['events']} events written to {Path(args.out) / manifest['file']}, positions"
          f" {manifest['first_position']} to {manifest['last_position']}, {covered}", file=sys.stderr)


def _covering(audit: AuditSide, position: int) -> dict[str, Any] | None:
    with audit.store.reading() as cur:
        seal = seals.covering(cur, position)
    return seal.summary() if seal else None
