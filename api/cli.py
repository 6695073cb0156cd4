"""The `moneta` command line: serve, migrate, config check, projections run | status | retry | rebuild,
audit (api/cli_audit.py)."""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import tempfile
from dataclasses import asdict
from importlib.metadata import version
from typing import Iterator

import psycopg
from eventsourcing.persistence import OperationalError as PersistenceOperationalError

from moneta.api import cli_audit
from moneta.api.lifeline import PARENT_PID, die_with_parent
from moneta.application.config import GatewayConfig
from moneta.bootstrap import (CONFIG_ANNOUNCED, MULTIPROCESS_DIR, WORKERS, build_read_side, environment,
                              load_gateway_config, price_book, read_gateway_config)
from moneta.infrastructure.config_loader import ConfigError
from moneta.infrastructure.event_store import StoreLocation
from moneta.infrastructure.event_store import migrate as migrate_store


def _config(args: argparse.Namespace) -> GatewayConfig:
    try:
        return load_gateway_config(args.config, environment())
    except (ConfigError, ValueError) as exc:
        sys.exit(f"moneta: invalid configuration: {exc}")


def _migrate(config: GatewayConfig) -> None:
    location = StoreLocation.from_url(config.database_url)
    try:
        _create_tables(config, location)
    except (psycopg.OperationalError, PersistenceOperationalError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        sys.exit(f"moneta: cannot use the database at {_where(location)}: {reason}")
    print(f"moneta: ledger and views ready ({location.kind})", file=sys.stderr)


def _where(location: StoreLocation) -> str:
    if location.kind == "sqlite":
        return str(location.sqlite_path)
    return f"{location.env['POSTGRES_HOST']}:{location.env['POSTGRES_PORT']}"


def _create_tables(config: GatewayConfig, location: StoreLocation) -> None:
    migrate_store(location)
    read_side = build_read_side(config)
    try:
        read_side.runner.create_tables()
    finally:
        read_side.close()


def cmd_migrate(args: argparse.Namespace) -> None:
    _migrate(_config(args))


def cmd_rebuild(args: argparse.Namespace) -> None:
    config = _config(args)
    _migrate(config)
    read_side = build_read_side(config)
    try:
        position = read_side.runner.rebuild()
    finally:
        read_side.close()
    print(f"moneta: projections rebuilt from the ledger, up to event {position}", file=sys.stderr)


def cmd_serve(args: argparse.Namespace) -> None:
    config = _config(args)
    os.environ[CONFIG_ANNOUNCED] = "1"  # its warnings are logged: the workers and the read side stay quiet
    _migrate(config)
    config_path = os.path.abspath(args.config) if args.config else None
    if config_path:
        os.environ["MONETA_CONFIG"] = config_path  # read again by each worker
    os.environ[PARENT_PID] = str(os.getpid())  # children die with this process
    os.environ[WORKERS] = str(args.workers)
    if not config.master_key:
        logging.getLogger("moneta").warning("no master_key configured: the gateway accepts every caller")
    from moneta.api.supervisor import read_side_command, serve

    grace_period = config.graceful_shutdown_timeout_s if args.grace_period is None else args.grace_period
    with _metrics_directory(args.workers):
        serve(host=args.host, port=args.port, workers=args.workers, log_level=args.log_level,
              access_log=args.access_log, grace_period_s=grace_period, limits=config.connection_limits,
              read_side=read_side_command(config_path))


@contextlib.contextmanager
def _metrics_directory(workers: int) -> Iterator[None]:
    """With several workers, a fresh directory where their metrics meet (prometheus_client's
    multi-process mode: any worker's /metrics sums them all), removed when `moneta serve` ends."""
    if workers < 2:
        yield
        return
    with tempfile.TemporaryDirectory(prefix="moneta-metrics-") as path:
        os.environ[MULTIPROCESS_DIR] = path  # before the workers start: they read it as they build
        yield


def cmd_config_check(args: argparse.Namespace) -> None:
    from moneta.api.config_check import served

    try:
        config = read_gateway_config(args.config, environment())
    except (ConfigError, ValueError) as exc:
        sys.exit(f"moneta: invalid configuration: {exc}")
    for notice in config.notices:
        print(f"warning: {notice}", file=sys.stderr)
    print(f"{args.config or 'the built-in default config'} is valid; it serves:")
    for line in served(config, price_book()):
        print(line)


def cmd_projections_run(args: argparse.Namespace) -> None:
    from moneta.api.read_side import run_until_stopped

    die_with_parent(environment())  # when `moneta serve` started this one
    run_until_stopped(_config(args))


def cmd_projections_status(args: argparse.Namespace) -> None:
    from moneta.projections.status import read_status

    read_side = build_read_side(_config(args))
    try:
        statuses = read_status(read_side.event_store, read_side.store)
    finally:
        read_side.close()
    rows = [asdict(status) for status in statuses]
    if args.json:
        print(json.dumps(rows))
        return
    print(f"{'projection':<12} {'position':>10} {'head':>10} {'lag events':>11} {'lag s':>8} {'heartbeat s':>12}"
          f" {'quarantined':>12}")
    for row in rows:
        heartbeat = "never" if row["heartbeat_age_s"] is None else f"{row['heartbeat_age_s']:.1f}"
        print(f"{row['name']:<12} {row['position']:>10} {row['head']:>10} {row['lag_events']:>11}"
              f" {row['lag_s']:>8.2f} {heartbeat:>12} {row['quarantined']:>12}")


def cmd_projections_retry(args: argparse.Namespace) -> None:
    from moneta.projections import quarantine

    read_side = build_read_side(_config(args))
    try:
        applied, remaining = read_side.runner.retry()
        with read_side.store.reading() as cur:
            still = quarantine.listed(cur, read_side.runner.name)
    finally:
        read_side.close()
    print(f"moneta: {applied} quarantined event(s) applied, {remaining} still quarantined", file=sys.stderr)
    for row in still:
        print(f"  event {row['notification_id']} of stream {row['originator_id']} ({row['topic']}): {row['error']}")
    if remaining:
        sys.exit(1)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="moneta", description="Moneta Gateway: an LLM gateway with a ledger")
    parser.add_argument("--version", action="version", version=f"moneta {version('moneta-gateway')}")
    parser.set_defaults(run=lambda _: parser.print_help())
    commands = parser.add_subparsers(dest="command")

    serve = commands.add_parser("serve", help="run the proxy (migrates the ledger first)")
    serve.add_argument("--config", help="LiteLLM-format config.yaml (default: built-in mock models)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=4000)
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument("--log-level", default="info")
    serve.add_argument("--access-log", action="store_true", help="log every request (slower)")
    serve.add_argument("--grace-period", type=float, metavar="SECONDS",
                       help="on SIGTERM or SIGINT, how long requests in flight may take to finish "
                            "(default: general_settings.graceful_shutdown_timeout_s, else 30)")
    serve.set_defaults(run=cmd_serve)

    migrate = commands.add_parser("migrate", help="create the ledger's tables (idempotent)")
    migrate.add_argument("--config")
    migrate.set_defaults(run=cmd_migrate)

    config = commands.add_parser("config", help="inspect a config file")
    config_commands = config.add_subparsers(dest="config_command", required=True)
    check = config_commands.add_parser("check", help="validate a config file and print what it serves, with prices"
                                                     " (starts and migrates nothing)")
    check.add_argument("--config", help="LiteLLM-format config.yaml (default: MONETA_CONFIG, else built-in)")
    check.set_defaults(run=cmd_config_check)

    projections = commands.add_parser("projections", help="manage the read models")
    projection_commands = projections.add_subparsers(dest="projection_command", required=True)
    rebuild = projection_commands.add_parser("rebuild", help="rebuild every view from the ledger, from zero")
    rebuild.add_argument("--config")
    rebuild.set_defaults(run=cmd_rebuild)
    run = projection_commands.add_parser(
        "run", help="keep the views up to date until SIGTERM or SIGINT (moneta serve runs one; "
                    "expects a migrated ledger)")
    run.add_argument("--config")
    run.set_defaults(run=cmd_projections_run)
    status = projection_commands.add_parser("status", help="each projection's position, the ledger's head, the lag"
                                                           " (events and seconds) and the runner's last heartbeat")
    status.add_argument("--config")
    status.add_argument("--json", action="store_true", help="one JSON array instead of a table")
    status.set_defaults(run=cmd_projections_status)
    retry = projection_commands.add_parser("retry", help="apply the quarantined events again, oldest first (after"
                                                         " fixing what made them fail); exits 1 if some still fail")
    retry.add_argument("--config")
    retry.set_defaults(run=cmd_projections_retry)

    cli_audit.register(commands)

    args = parser.parse_args(argv)
    args.run(args)


if __name__ == "__main__":
    main()
