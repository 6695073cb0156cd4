"""Client CPU of the ledger write path, per request and per event, on Postgres.

    .venv/bin/python benchmarks/ledger_write.py [--batches 150] [--batch-size 32] [--rounds 5]

A request is one RequestRecord with Admitted + Completed (2 events); a batch is one `save()`
of `--batch-size` requests, as the group commit makes them. Three set-ups write to the same
fresh database (`moneta_bench_<random>`, dropped at the end), in alternating rounds so that
the noise of a shared machine falls on all of them alike:
- library: the library's `Application.save` and `PostgresApplicationRecorder`;
- column arrays: the library's `save` with `ColumnArrayRecorder`;
- ledger app: `LedgerApplication` as `StoreLocation.open()` builds it (both changes).
CPU is this process's `time.process_time()` (user + system); Postgres's own CPU is not in it.
Building the records is timed apart ("build") and is the same for all three.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from eventsourcing.application import Application  # noqa: E402

from moneta.domain.request_record import RequestRecord  # noqa: E402
from moneta.domain.usage import Usage  # noqa: E402
from moneta.infrastructure.event_store import APP_NAME, StoreLocation, migrate  # noqa: E402

ADMIN_URL = os.environ.get("MONETA_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


class _LibraryApplication(Application):
    name = APP_NAME


def _request() -> RequestRecord:
    record = RequestRecord.admit(uuid.uuid4(), call_type="chat", key_hash="9f" * 32, end_user="",
                                 model_group="gpt-4o-mini", stream=False,
                                 decision={"deployment": "gpt-4o-mini-1", "strategy": "simple-shuffle"})
    record.complete(deployment_id="gpt-4o-mini-1", provider="openai", provider_model="gpt-4o-mini",
                    usage=Usage(prompt_tokens=120, completion_tokens=340), cost=Decimal("0.0002220"),
                    price_source="genai-prices 0.2.3:openai/gpt-4o-mini", latency_ms=12.345)
    return record


def _apps(location: StoreLocation) -> dict[str, Application]:
    library_env = {k: v for k, v in location.env.items() if k != "APPLICATION_RECORDER_TOPIC"}
    return {
        "library": _LibraryApplication(env={**library_env, "CREATE_TABLE": "n"}),
        "column arrays": _LibraryApplication(env={**location.env, "CREATE_TABLE": "n"}),
        "ledger app": location.open(),
    }


def _round(app: Application, batches: int, batch_size: int) -> tuple[float, float]:
    """(build, save) CPU seconds for `batches` saves of `batch_size` requests."""
    build = save = 0.0
    for _ in range(batches):
        started = time.process_time()
        events = [event for _ in range(batch_size) for event in _request().collect_events()]
        built = time.process_time()
        app.save(*events)
        build += built - started
        save += time.process_time() - built
    return build, save


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=150, help="saves per set-up per round")
    parser.add_argument("--batch-size", type=int, default=32, help="requests per save")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    import psycopg

    name = f"moneta_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        location = StoreLocation.from_url(ADMIN_URL.rsplit("/", 1)[0] + "/" + name)
        migrate(location)
        _report(_measure(_apps(location), args), args)
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _measure(apps: dict[str, Application], args: argparse.Namespace) -> dict[str, list[tuple[float, float]]]:
    results: dict[str, list[tuple[float, float]]] = {label: [] for label in apps}
    try:
        for app in apps.values():
            _round(app, 10, args.batch_size)  # warm-up: connections, prepared statements
        for _ in range(args.rounds):
            for label, app in apps.items():
                results[label].append(_round(app, args.batches, args.batch_size))
    finally:
        for app in apps.values():
            app.close()
    return results


def _report(results: dict[str, list[tuple[float, float]]], args: argparse.Namespace) -> None:
    requests = args.batches * args.batch_size
    print(f"{args.rounds} rounds x {args.batches} saves of {args.batch_size} requests (2 events each); "
          "median CPU of this process")
    print(f"{'set-up':<15}{'build ms/req':>14}{'save ms/req':>13}{'save us/event':>15}")
    for label, rounds in results.items():
        build = statistics.median(b for b, _ in rounds) / requests * 1e3
        save = statistics.median(s for _, s in rounds) / requests * 1e3
        print(f"{label:<15}{build:>14.3f}{save:>13.3f}{save * 1e3 / 2:>15.1f}")


if __name__ == "__main__":
    main()
