"""How fast `moneta audit verify` checks the audit chain of a Postgres ledger.

    .venv/bin/python benchmarks/audit_verify.py [--requests 150000] [--batch 500] [--rounds 3] [--keep]

Fills a fresh database (`moneta_bench_<random>`, dropped at the end unless --keep) with
`--requests` RequestRecords as the gateway writes them (Admitted with its routing and budget
decision, then Completed with usage and cost: 2 events each), `--batch` requests per `save()`;
seals them with the read side's sealing runner; then times the chain's verification, as
`moneta audit verify` runs it, `--rounds` times, and prints events/s (wall clock) for each and
their median. Postgres is `MONETA_BENCH_POSTGRES_URL` (default postgresql://postgres@127.0.0.1:5432/postgres).
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import uuid
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from moneta.bootstrap import SEAL_PAGE_SIZE, ledger_scan, open_view_store  # noqa: E402
from moneta.domain.audit_chain import verify_chain  # noqa: E402
from moneta.domain.request_record import RequestRecord  # noqa: E402
from moneta.domain.usage import Usage  # noqa: E402
from moneta.infrastructure.event_store import StoreLocation, migrate  # noqa: E402
from moneta.projections import seals  # noqa: E402
from moneta.projections.runner import ProjectionRunner  # noqa: E402

ADMIN_URL = os.environ.get("MONETA_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
_SCOPES = [{"scope": f"key:{'4b' * 16}", "period": "2026-11-01T00:00:00+00:00", "limit": "100.000000000",
            "soft": None, "spent": "12.345678901", "reserved": "0.004200000", "resets_at": "2026-12-01T00:00:00+00:00"},
           {"scope": "team:research", "period": "lifetime", "limit": "1000.000000000", "soft": "800.000000000",
            "spent": "456.789012345", "reserved": "0.010500000", "resets_at": None}]


def _request(number: int) -> RequestRecord:
    record = RequestRecord.admit(
        uuid.uuid4(), call_type="chat", key_hash="9f" * 32, end_user=f"customer-{number % 97}",
        model_group="gpt-4o-mini", stream=number % 3 == 0, instance="bench-host:4242:0badc0de",
        principal={"key_alias": "ci-pipeline", "team_id": "research", "user_id": "alice", "org_id": "acme"},
        decision={"deployment": "gpt-4o-mini-1", "strategy": "simple-shuffle", "reason": "shuffled by weight",
                  "limits": {"allowed": True, "seen": [{"scope": "key", "kind": "rpm", "limit": 600, "used": 17}]},
                  "budget": {"allowed": True, "reserved": "0.001374000", "scopes": _SCOPES}})
    record.complete(deployment_id="gpt-4o-mini-1", provider="openai", provider_model="gpt-4o-mini-2024-07-18",
                    usage=Usage(prompt_tokens=120 + number % 50, completion_tokens=340), cost=Decimal("0.0002220"),
                    price_source="genai-prices 0.2.3:openai/gpt-4o-mini", latency_ms=812.345, first_token_ms=210.5,
                    finish_reason="stop")
    return record


def _fill(location: StoreLocation, requests: int, batch: int) -> float:
    app = location.open()
    started = time.perf_counter()
    try:
        for first in range(0, requests, batch):
            app.save(*(_request(number) for number in range(first, min(first + batch, requests))))
    finally:
        app.close()
    return time.perf_counter() - started


def _seal(location: StoreLocation) -> tuple[int, float]:
    app, store = location.open(), open_view_store(location)
    runner = ProjectionRunner(app, store, name=seals.NAME, views=(seals,), page_size=SEAL_PAGE_SIZE,
                              skips_poison=False)
    try:
        runner.create_tables()
        started = time.perf_counter()
        position = runner.catch_up()
        return position, time.perf_counter() - started
    finally:
        store.close()
        app.close()


def _verify(location: StoreLocation) -> tuple[int, float]:
    app, store = location.open(), open_view_store(location)
    scan = ledger_scan(app, location)
    try:
        started = time.perf_counter()
        with store.reading() as cur:
            head = seals.head(cur)
        report = verify_chain(head, seals.read_all(store, head.seq), scan.preimages, scan.count_after)
        elapsed = time.perf_counter() - started
    finally:
        store.close()
        app.close()
    assert report.holds, report.problems
    return report.events, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=150_000, help="requests written (2 events each)")
    parser.add_argument("--batch", type=int, default=500, help="requests per save()")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the database (its URL is printed)")
    args = parser.parse_args()

    import psycopg

    name = f"moneta_bench_{uuid.uuid4().hex[:12]}"
    url = ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        location = StoreLocation.from_url(url)
        migrate(location)
        filled = _fill(location, args.requests, args.batch)
        print(f"filled {2 * args.requests:,} events in {filled:.1f} s ({2 * args.requests / filled:,.0f} events/s)")
        position, sealing = _seal(location)
        print(f"sealed {position:,} events in {sealing:.1f} s ({position / sealing:,.0f} events/s)")
        with psycopg.connect(url) as conn:
            size = conn.execute("SELECT pg_total_relation_size('moneta_events')").fetchone()[0]
        print(f"events table: {size / 2**20:,.0f} MiB")
        rates = []
        for round_number in range(1, args.rounds + 1):
            events, elapsed = _verify(location)
            rates.append(events / elapsed)
            print(f"verify round {round_number}: {events:,} events in {elapsed:.2f} s = {rates[-1]:,.0f} events/s")
        print(f"verify median: {statistics.median(rates):,.0f} events/s")
        command = [sys.executable, "-m", "moneta.api.cli", "audit", "verify"]
        shown = subprocess.run(command, env={**os.environ, "DATABASE_URL": url}, capture_output=True, text=True)
        print(f"$ DATABASE_URL=... moneta audit verify   (exit {shown.returncode})\n{shown.stdout.strip()}")
    finally:
        if args.keep:
            print(f"kept: {url}")
        else:
            with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
