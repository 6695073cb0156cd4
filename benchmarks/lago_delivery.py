"""Usage delivery to Lago under faults, end to end: the gateway's read side (`moneta projections run`
in a process of its own, as `moneta serve` starts it: the projections and the Lago deliverer with
its default policy) against the fake Lago of the tests, on a fresh ledger.

    .venv/bin/python benchmarks/lago_delivery.py [--ledger postgres|sqlite] [--rate 200] [--before-s 10]
        [--outage-s 60] [--after-s 20] [--burst-429 20] [--burst-500 20]

A writer saves billed calls (Admitted + Completed, Lago subscription in the decision) at `--rate`
per second, in commits of a tenth of a second, for the whole run:
- `--before-s` seconds with Lago up (then until Lago holds what they wrote);
- `--outage-s` seconds with Lago down (a TCP proxy in front of it cuts every connection and
  refuses new ones);
- `--after-s` seconds with Lago up again, hit 5 s after recovery by `--burst-429` answers 429
  (Retry-After: 1) and 10 s after by `--burst-500` answers 500;
then it stops writing and waits until Lago holds every call. Printed: the calls written, the events
Lago holds, the calls Lago holds more than once (billed twice: must be 0), those it lacks (must be
0), the delivery attempts (the schedule's count per call: total and most for one call) and the
HTTP requests Lago saw, the calls the ledger records as duplicates Lago already had, the delay from
a call's completion to Lago holding it while Lago was up (p50, p99), the time from recovery until
Lago held every call written before it (time to drain), and the rate of that drain.

Postgres is `postgresql://postgres@127.0.0.1:5432/postgres` unless `MONETA_BENCH_POSTGRES_URL`
says otherwise; the run creates `moneta_bench_<random>` there and drops it at the end.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from datetime import datetime
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg  # noqa: E402
import yaml  # noqa: E402

from moneta.bootstrap import build_read_side  # noqa: E402
from moneta.domain.lago_usage import usage_stream_id  # noqa: E402
from moneta.domain.request_record import RequestRecord  # noqa: E402
from moneta.infrastructure.config_loader import parse_config  # noqa: E402
from moneta.infrastructure.event_store import StoreLocation, migrate  # noqa: E402
from moneta.projections import tracking  # noqa: E402
from moneta.projections.view_store import ViewStore  # noqa: E402
from tests import fake_lago_events  # noqa: E402
from tests.fake_lago import FakeLago  # noqa: E402
from tests.tcp_proxy import TcpProxy  # noqa: E402

ADMIN_URL = os.environ.get("MONETA_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
SUBSCRIPTIONS = [f"sub_{n}" for n in range(20)]
TICK_S = 0.1


class Writer:
    """Saves `rate` billed calls a second until stopped; remembers when each was written."""

    def __init__(self, app, rate: int) -> None:
        self.app = app
        self.per_tick = max(1, round(rate * TICK_S))
        self.written: list[str] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        next_tick = time.monotonic()
        while not self._stopping.is_set():
            records = [_billed_call(len(self.written) + n) for n in range(self.per_tick)]
            self.app.save(*records)
            self.written.extend(str(record.id) for record in records)
            next_tick += TICK_S
            self._stopping.wait(max(0.0, next_tick - time.monotonic()))


def _billed_call(number: int) -> RequestRecord:
    record = RequestRecord.admit(uuid.uuid4(), call_type="acompletion", key_hash="9f" * 32, end_user="",
                                 model_group="gpt-4o-mini", stream=False,
                                 decision={"entitlement": {"customer": f"cus_{number % 20}",
                                                           "subscription": SUBSCRIPTIONS[number % 20]}})
    cost = Decimal("0.000222") + Decimal(number % 1000) / Decimal(10 ** 9)
    record.trigger_event(RequestRecord.Completed, deployment_id="d-1", provider="openai", provider_model="gpt-4o-mini",
                         usage={"prompt_tokens": 120, "completion_tokens": 340}, cost=cost, price_source="bench",
                         latency_ms=12.0, first_token_ms=None, finish_reason="stop", askii=cost * 1000,
                         askii_rate=Decimal(1000))
    return record


def run(args: argparse.Namespace, url: str, workdir: Path) -> None:
    fake = FakeLago()
    events = fake_lago_events.install(fake)
    events.add_subscription(*SUBSCRIPTIONS)
    fake.start()
    proxy = TcpProxy("127.0.0.1", fake.port).start()  # the outage: every connection cut, new ones refused
    location = StoreLocation.from_url(url)
    migrate(location)
    raw = {"general_settings": {"database_url": url}, "moneta_settings": {
        "lago": {"api_url": f"http://127.0.0.1:{proxy.port}", "api_key": fake.api_key}}}
    setup = build_read_side(parse_config(raw, {}))
    setup.runner.create_tables()
    setup.close()
    config_path = workdir / "config.yaml"
    config_path.write_text(yaml.safe_dump(raw))
    read_side = subprocess.Popen([sys.executable, "-m", "moneta.api.cli", "projections", "run", "--config",
                                  str(config_path)], stdout=open(workdir / "read_side.log", "ab"),
                                 stderr=subprocess.STDOUT, start_new_session=True)
    app = location.open()
    store = ViewStore.connect(sqlite_path=location.sqlite_path, postgres_dsn=location.postgres_dsn)
    _wait_running(store)
    writer = Writer(app, args.rate)
    writer.start()
    try:
        time.sleep(args.before_s)
        before_outage = list(writer.written)
        _wait_held(events, before_outage, time.monotonic(), 120)  # their delay is Lago's when it is up
        proxy.cut()
        print(f"Lago down for {args.outage_s:g} s ...", file=sys.stderr)
        time.sleep(args.outage_s)
        backlog = list(writer.written)
        proxy.restore()
        recovered = time.monotonic()
        drained = _wait_held(events, backlog, recovered, args.after_s + 600)
        print(f"backlog of {len(backlog) - len(before_outage)} call(s) drained; bursts of 429 and 500 ...",
              file=sys.stderr)
        time.sleep(max(0.0, recovered + 5 - time.monotonic()))
        fake.fail_next(args.burst_429, 429, headers={"Retry-After": "1"}, path_prefix="/events")
        time.sleep(max(0.0, recovered + 10 - time.monotonic()))
        fake.fail_next(args.burst_500, 500, path_prefix="/events")
        time.sleep(max(0.0, recovered + args.after_s - time.monotonic()))
        writer.stop()
        _wait_held(events, writer.written, time.monotonic(), 600)
        _report(args, events, fake, writer.written, before_outage, backlog, drained, store, app)
    finally:
        writer.stop()
        read_side.terminate()
        read_side.wait(30)
        store.close()
        app.close()
        proxy.close()
        fake.stop()


def _wait_running(store: ViewStore, timeout_s: float = 60) -> None:
    """Until the read side's runner has beaten once (its deliverer starts with it)."""
    deadline = time.monotonic() + timeout_s
    while not any(row["heartbeat_at"] for row in _tracking(store)):
        if time.monotonic() > deadline:
            raise SystemExit(f"the read side did not start in {timeout_s:g} s")
        time.sleep(0.1)


def _tracking(store: ViewStore) -> list[dict]:
    with store.reading() as cur:
        return tracking.read_all(cur)


def _wait_held(events, request_ids: list[str], since: float, timeout_s: float) -> float:
    """Seconds from `since` until Lago holds every one of `request_ids`."""
    wanted = set(request_ids)
    deadline = time.monotonic() + timeout_s
    while not wanted <= events.transaction_ids():
        if time.monotonic() > deadline:
            raise SystemExit(f"Lago still lacks calls after {timeout_s:g} s")
        time.sleep(0.1)
    return time.monotonic() - since


def _report(args, events, fake, written, before_outage, backlog, drained, store, app) -> None:
    held = events.stored()
    counts = Counter(event["transaction_id"] for event in held)
    twice = sum(1 for count in counts.values() if count > 1)
    lacking = len(set(written) - set(counts))
    with store.reading() as cur:
        attempts = cur.execute("SELECT SUM(attempts) AS total, MAX(attempts) AS most FROM lago_deliveries").one()
    requests = Counter(seen.path for seen in fake.requests if seen.method == "POST")
    duplicates = _duplicates_recorded(app, written)
    up_first = set(before_outage)
    delays = sorted((datetime.fromisoformat(e["created_at"].replace("Z", "+00:00"))
                     - datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00"))).total_seconds()
                    for e in held if e["transaction_id"] in up_first)
    drained_calls = len(backlog) - len(before_outage)
    print(f"\nLago delivery under faults ({args.ledger} ledger, {args.rate} calls/s written, Lago down"
          f" {args.outage_s:g} s, then {args.burst_429} x 429 and {args.burst_500} x 500)")
    print(f"  calls written                     {len(written):>10}")
    print(f"  events Lago holds                 {len(held):>10}")
    print(f"  calls billed twice (must be 0)    {twice:>10}")
    print(f"  calls Lago lacks (must be 0)      {lacking:>10}")
    print(f"  attempts (schedule), most one     {attempts['total']:>10} {attempts['most']:>6}")
    print(f"  requests: /events/batch, /events  {requests['/events/batch']:>10} {requests['/events']:>6}")
    print(f"  duplicates Lago already had       {duplicates:>10}")
    print(f"  delay to Lago, Lago up: p50, p99  {_quantile(delays, 0.5):>9.2f}s {_quantile(delays, 0.99):>5.2f}s")
    print(f"  time to drain after recovery      {drained:>9.2f}s   ({drained_calls} calls written during the outage)")
    print(f"  drain rate                        {drained_calls / drained:>10.0f} events/s")


def _duplicates_recorded(app, request_ids: list[str]) -> int:
    """The calls whose Delivered event says Lago had them already (read from each call's stream)."""
    found = 0
    for request_id in request_ids:
        for stored in app.recorder.select_events(usage_stream_id(request_id)):
            event = app.mapper.to_domain_event(stored)
            found += bool(getattr(event, "duplicate", False))
    return found


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[int(q * 100) - 1] if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ledger", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--rate", type=int, default=200, help="billed calls written per second")
    parser.add_argument("--before-s", type=float, default=10.0)
    parser.add_argument("--outage-s", type=float, default=60.0)
    parser.add_argument("--after-s", type=float, default=20.0)
    parser.add_argument("--burst-429", type=int, default=20)
    parser.add_argument("--burst-500", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="moneta-bench-") as directory:
        workdir = Path(directory)
        if args.ledger == "sqlite":
            run(args, f"sqlite:///{workdir}/ledger.db", workdir)
            return
        name = f"moneta_bench_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        try:
            run(args, ADMIN_URL.rsplit("/", 1)[0] + f"/{name}", workdir)
        finally:
            with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
