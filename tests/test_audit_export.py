"""`moneta audit export`: every event stamped in the window, one a line, written as it is read, and a
manifest whose totals are the ledger's and whose seal is the audit chain's."""
from __future__ import annotations

import csv
import hashlib
import json
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from moneta.api.app import create_app
from moneta.api.cli import main
from moneta.application.audit_export import export
from moneta.application.audit_window import SKEW
from moneta.bootstrap import build_proxy, ledger_scan
from moneta.domain.request_record import RequestRecord
from moneta.domain.usage import Usage
from moneta.infrastructure.config_loader import parse_config
from moneta.projections import seals
from tests.ledger_world import TINY, World


def _settled_with_askii(world: World, cost: Decimal, askii: Decimal | None) -> RequestRecord:
    record = world.admit()
    record.trigger_event(RequestRecord.Completed, deployment_id="dep-1", provider="openai",
                         provider_model="gpt-4o-mini", usage=Usage(10, 5).as_event_fields(), cost=cost,
                         price_source="config", latency_ms=50.0, first_token_ms=None, finish_reason="stop",
                         askii=askii, askii_rate=None if askii is None else Decimal(1000))
    world.ledger.record_blocking(record, timeout=10)
    return record


def _moment() -> datetime:
    """A moment strictly between the events written before and after it."""
    time.sleep(0.01)
    moment = datetime.now(UTC)
    time.sleep(0.01)
    return moment


def _ledger(world: World) -> list[tuple[int, object]]:
    """Every event with its position, read the plain way: what the export must agree with."""
    notifications = world.app.recorder.select_notifications(1, 1_000_000)
    return [(n.id, world.app.mapper.to_domain_event(n)) for n in notifications]


def _cli(world: World, monkeypatch: pytest.MonkeyPatch, *args: str) -> None:
    monkeypatch.setenv("DATABASE_URL", world.location.postgres_dsn or f"sqlite:///{world.location.sqlite_path}")
    main(["audit", "export", *args])


@pytest.fixture
def ledger(world: World) -> Iterator[tuple[World, datetime, datetime]]:
    """Calls before `start`, between `start` and `end` (completed, interrupted, failed, denied, with
    and without askii) and after `end`; all of it sealed."""
    sealer = world.new_runner(world.store, name=seals.NAME, views=(seals,), page_size=5, skips_poison=False)
    sealer.create_tables()
    world.completed(Decimal("1"))
    start = _moment()
    world.completed(Decimal("0.1") + TINY)
    world.interrupted(Decimal("0.02"))
    _settled_with_askii(world, Decimal("0.003"), Decimal("3.000000000001"))
    _settled_with_askii(world, Decimal("0.004"), None)
    world.failed(2)
    world.denied()
    end = _moment()
    world.completed(Decimal("7"))
    sealer.catch_up()
    yield world, start, end


def test_jsonl_holds_the_window_and_the_manifest_its_totals(ledger, monkeypatch, tmp_path):
    world, start, end = ledger
    _cli(world, monkeypatch, "--from", start.isoformat(), "--to", end.isoformat(), "--format", "jsonl",
         "--out", str(tmp_path))
    lines = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    expected = [(position, event) for position, event in _ledger(world) if start <= event.timestamp < end]
    assert [line["position"] for line in lines] == [position for position, _ in expected]
    first = lines[0]
    assert set(first) == {"position", "stream_id", "version", "topic", "type", "timestamp", "request_id", "fields"}
    assert first["type"] == "RequestRecord.Admitted" and first["request_id"] == first["stream_id"]
    assert first["topic"] == "moneta.domain.request_record:RequestRecord.Admitted"
    assert datetime.fromisoformat(first["timestamp"]) >= start and first["fields"]["model_group"] == "gpt-4o-mini"
    completed = next(line for line in lines if line["type"] == "RequestRecord.Completed")
    assert completed["fields"]["cost"] == str(Decimal("0.1") + TINY)  # exact, never a float

    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["events"] == len(expected) == 13
    assert manifest["counts"] == dict(Counter(type(event).__qualname__ for _, event in expected))
    assert manifest["counts"]["RequestRecord.Completed"] == 3 and manifest["counts"]["RequestRecord.Denied"] == 1
    settled = [event for _, event in expected if isinstance(event, RequestRecord.Completed)]
    assert Decimal(manifest["usd_total"]) == sum(event.cost for event in settled) == Decimal("0.127") + TINY
    assert manifest["usd_total"] == "0.127000000000000001"
    assert manifest["askii_total"] == "3.000000000001"
    assert (manifest["first_position"], manifest["last_position"]) == (expected[0][0], expected[-1][0])
    assert manifest["sha256"] == hashlib.sha256((tmp_path / "events.jsonl").read_bytes()).hexdigest()
    seal = manifest["seal"]
    with world.store.reading() as cur:
        covering = seals.covering(cur, manifest["last_position"])
    assert seal == covering.summary() and covering.first_position <= manifest["last_position"] <= seal["last_position"]


def test_csv_agrees_with_jsonl(ledger, monkeypatch, tmp_path):
    world, start, end = ledger
    window = ["--from", start.isoformat(), "--to", end.isoformat()]
    _cli(world, monkeypatch, *window, "--format", "jsonl", "--out", str(tmp_path / "jsonl"))
    _cli(world, monkeypatch, *window, "--format", "csv", "--out", str(tmp_path / "csv"), "--page-size", "2")
    with (tmp_path / "csv" / "events.csv").open(newline="") as file:
        rows = list(csv.DictReader(file))
    lines = [json.loads(line) for line in (tmp_path / "jsonl" / "events.jsonl").read_text().splitlines()]
    assert [int(row["position"]) for row in rows] == [line["position"] for line in lines]
    assert [json.loads(row["fields"]) for row in rows] == [line["fields"] for line in lines]
    assert [row["request_id"] for row in rows] == [line["request_id"] for line in lines]
    as_csv, as_jsonl = (json.loads((tmp_path / kind / "manifest.json").read_text()) for kind in ("csv", "jsonl"))
    for field in ("events", "counts", "usd_total", "askii_total", "first_position", "last_position", "seal"):
        assert as_csv[field] == as_jsonl[field]
    assert as_csv["file"] == "events.csv" and as_csv["format"] == "csv"


def test_the_export_is_written_as_it_is_read(ledger, tmp_path):
    """Small pages: each page's lines are on disk before the next page is read, and no page holds
    more than its size, so a month exports in the memory of one page."""
    world, _, _ = ledger
    scan = ledger_scan(world.app, world.location)
    path = tmp_path / "events.jsonl"
    seen: list[int] = []

    def pages():
        for page in scan.events(page_size=3):
            assert len(page) <= 3
            if seen:
                assert len(path.read_text().splitlines()) == len(seen)
            seen.extend(position for position, _ in page)
            yield page

    manifest = export(pages(), datetime(1970, 1, 1, tzinfo=UTC), datetime.now(UTC), "jsonl", tmp_path,
                      lambda position: None)
    assert manifest["events"] == len(seen) == len(_ledger(world)) == 17
    assert manifest["usd_total"] == str(Decimal("8.127") + TINY)


async def test_the_manifest_seal_is_the_chain_head_it_was_exported_at(ledger, monkeypatch, tmp_path):
    world, _, _ = ledger
    _cli(world, monkeypatch, "--out", str(tmp_path))  # everything, to now
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    url = world.location.postgres_dsn or f"sqlite:///{world.location.sqlite_path}"
    container = build_proxy(parse_config({"general_settings": {"database_url": url}}, {}), {})
    try:
        transport = httpx.ASGITransport(app=create_app(container))
        async with httpx.AsyncClient(transport=transport, base_url="http://moneta") as client:
            head = (await client.get("/audit/head")).json()
    finally:
        container.close()
    assert manifest["last_position"] == head["last_position"] == head["ledger_position"]
    assert manifest["seal"]["hash"] == head["hash"] and manifest["seal"]["seq"] == head["seq"]
    assert manifest["events"] == head["count"] and head["unsealed"] == 0


def test_a_bad_window_is_refused_naming_it(ledger, monkeypatch, tmp_path):
    world, _, _ = ledger
    with pytest.raises(SystemExit) as exit_info:
        _cli(world, monkeypatch, "--from", "yesterday", "--out", str(tmp_path))
    assert "--from must be an ISO 8601 time" in str(exit_info.value)
    assert not (tmp_path / "manifest.json").exists()


def test_an_empty_window_has_no_seal(ledger, monkeypatch, tmp_path):
    world, _, _ = ledger
    _cli(world, monkeypatch, "--from", "2001-01-01", "--to", "2001-01-02", "--out", str(tmp_path))
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["events"] == 0 and manifest["seal"] is None and manifest["first_position"] is None
    assert (tmp_path / "events.jsonl").read_text() == ""


def test_a_window_deep_in_the_ledger_is_found_by_bisection(world, monkeypatch, tmp_path):
    """Hours of events: the export starts near its window (a minute early at most), not at the start."""
    world.new_runner(world.store, name=seals.NAME, views=(seals,), skips_poison=False).create_tables()
    base = datetime(2026, 5, 1, tzinfo=UTC)
    events = []
    for minute in range(0, 600, 5):  # ten hours, a call every five minutes
        record = world.admit()
        record.complete(deployment_id="d", provider="openai", provider_model="m", usage=Usage(1, 1),
                        cost=Decimal("0.01"), price_source="config", latency_ms=1.0)
        for offset, event in enumerate(record.collect_events()):
            object.__setattr__(event, "timestamp", base + timedelta(minutes=minute, seconds=offset))
            events.append(event)
    world.app.save(*events)
    scan = ledger_scan(world.app, world.location)
    start, end = base + timedelta(hours=6), base + timedelta(hours=7)
    after = scan.position_before(start - SKEW)
    assert after == 2 * 72  # the 72nd call, at 5:55, is the last stamped a minute before 6:00
    _cli(world, monkeypatch, "--from", start.isoformat(), "--to", end.isoformat(), "--out", str(tmp_path))
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert (manifest["first_position"], manifest["last_position"], manifest["events"]) == (145, 168, 24)
    assert manifest["usd_total"] == "0.12" and manifest["seal"] is None  # nothing sealed in this test
