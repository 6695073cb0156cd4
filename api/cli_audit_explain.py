"""`moneta audit explain ID` (one call from its ledger stream) and `moneta audit replay` (every view
rebuilt from the ledger in a scratch place and compared with the live views)."""
from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.persistence import PersistenceError

from moneta.api.explain_text import render
from moneta.application.config import GatewayConfig
from moneta.bootstrap import build_read_side, environment, load_gateway_config, request_explainer
from moneta.infrastructure.config_loader import ConfigError
from moneta.projections.replay import NOT_COMPARED, NOT_DERIVED, Difference, canonical, replay


def register(audit_commands: argparse._SubParsersAction) -> None:
    explain = audit_commands.add_parser(
        "explain", help="one call from its ledger stream: who called, what was decided on which numbers, each"
                        " attempt, the settlement, related streams, every event")
    explain.add_argument("request_id", help="the call's id (its x-request-id)")
    explain.add_argument("--config")
    explain.add_argument("--json", action="store_true", help="the JSON of GET /audit/requests/{id}")
    explain.set_defaults(run=cmd_explain)
    replay_parser = audit_commands.add_parser(
        "replay", help="rebuild every view from the ledger in a scratch place and compare it with the live views,"
                       " row by row, at the same position; exits 1 on any difference",
        epilog=_not_compared(), formatter_class=argparse.RawDescriptionHelpFormatter)
    replay_parser.add_argument("--config")
    replay_parser.set_defaults(run=cmd_replay)


def _not_compared() -> str:
    lines = ["not compared, as the events alone do not decide them:"]
    lines += [f"  {table}: {why}" for table, why in NOT_COMPARED.items()]
    lines += [f"  {table}.{column}: {why}" for table, columns in NOT_DERIVED.items() for column, why in columns.items()]
    return "\n".join(lines)


def _config(args: argparse.Namespace) -> GatewayConfig:
    try:
        return load_gateway_config(args.config, environment())
    except (ConfigError, ValueError) as exc:
        sys.exit(f"moneta: invalid configuration: {exc}")


def cmd_explain(args: argparse.Namespace) -> None:
    try:
        request_id = UUID(args.request_id)
    except ValueError:
        print(f"moneta: {args.request_id[:80]!r} is not a request id (a UUID, as x-request-id gives it)",
              file=sys.stderr)
        sys.exit(2)
    config = _config(args)
    read_side = build_read_side(config)
    try:
        explained = request_explainer(read_side.event_store, read_side.store, config).explain(request_id)
    except PersistenceError as exc:
        sys.exit(f"moneta: cannot read the ledger: {_first_line(exc)}")
    finally:
        read_side.close()
    if explained is None:
        sys.exit(f"moneta: no request {request_id} in the ledger")
    from moneta.api.responses import jsonable  # imports FastAPI: not for every command

    print(json.dumps(jsonable(explained)) if args.json else render(explained))


def cmd_replay(args: argparse.Namespace) -> None:
    read_side = build_read_side(_config(args))
    try:
        report = replay(read_side.event_store, read_side.store, name=read_side.runner.name,
                        views=read_side.runner.views)
    except PersistenceError as exc:
        sys.exit(f"moneta: cannot read the ledger: {_first_line(exc)}")
    except LookupError as exc:  # no live views to compare with
        sys.exit(f"moneta: {exc}")
    finally:
        read_side.close()
    for difference in report.differences:
        print(_difference(difference))
    for table, rows in report.rows.items():
        print(f"  {table:<28} {rows:>10} rows", file=sys.stderr)
    if report.quarantined:
        print(f"moneta: the replay could not apply {report.quarantined} event(s) (quarantined)", file=sys.stderr)
    if report.differences:
        sys.exit(f"moneta: {len(report.differences)} difference(s) between the live views and the ledger replayed"
                 f" up to event {report.position}")
    print(f"moneta: the live views are what the ledger says, up to event {report.position}", file=sys.stderr)


def _difference(difference: Difference) -> str:
    key = " ".join(f"{name}={value}" for name, value in difference.key.items()) or "(table)"
    if difference.column == "(row)":
        return f"{difference.table} {key}: row {difference.live} live, {difference.replayed} replayed"
    return (f"{difference.table} {key} {difference.column}: live {_shown(difference.live)},"
            f" replayed {_shown(difference.replayed)}")


def _shown(value: Any) -> str:
    """A stored value as the same data reads in either store (SQLite keeps money and times as text)."""
    value = canonical(value)
    if value is None:
        return "NULL"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, (dict, list)):
        return json.dumps(value, default=str)
    return str(value)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
