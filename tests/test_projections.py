"""The read side: spend log and usage report views, fed by the runner from a real ledger."""
from __future__ import annotations

import sqlite3
import threading
import types
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from moneta.domain.redaction import key_hash
from moneta.domain.usage import Usage
from moneta.projections import spend_log
from tests.ledger_world import TINY, World

def _today() -> str:
    return datetime.now(UTC).date().isoformat()


def _all_logs(world: World) -> list[dict]:
    return world.queries.spend_logs(page_size=1000).rows


def test_each_outcome_becomes_one_spend_log_row(world: World) -> None:
    done = world.completed(Decimal("0.000123") + TINY, tokens=(100, 20), first_token_ms=250.0)
    cut = world.interrupted(Decimal("0.00005"))
    failed = world.failed(attempts=2)
    denied = world.denied(key="sk-bob", user="u2")
    world.ledger.record_blocking(world.admit(), timeout=10)  # still in flight: not listed

    world.runner.catch_up()

    rows = {row["request_id"]: row for row in _all_logs(world)}
    assert set(rows) == {str(r.id) for r in (done, cut, failed, denied)}
    ok = rows[str(done.id)]
    assert ok["status"] == "success" and ok["spend"] == Decimal("0.000123") + TINY
    assert (ok["prompt_tokens"], ok["completion_tokens"], ok["total_tokens"]) == (100, 20, 120)
    assert ok["api_key"] == key_hash("sk-alice") and ok["user"] == "u1" and ok["model"] == "gpt-4o-mini"
    assert (ok["model_id"], ok["custom_llm_provider"], ok["price_source"]) == ("dep-1", "openai", "genai-prices")
    assert ok["completionStartTime"] - ok["startTime"] == timedelta(milliseconds=250)
    assert ok["endTime"] >= ok["startTime"] and ok["cache_hit"] is False
    assert ok["metadata"]["finish_reason"] == "stop" and ok["metadata"]["usage_estimated"] is False
    assert rows[str(cut.id)]["status"] == "client_disconnected"
    assert rows[str(cut.id)]["metadata"]["usage_estimated"] is True
    assert rows[str(cut.id)]["completionStartTime"] is None
    fail = rows[str(failed.id)]
    assert (fail["status"], fail["attempts"], fail["status_code"], fail["spend"]) == ("failure", 2, 503, 0)
    assert fail["model_id"] == "dep-1"  # the last deployment tried
    deny = rows[str(denied.id)]
    assert (deny["status"], deny["error_type"], deny["attempts"]) == ("denied", "BudgetExceededError", 0)
    assert deny["startTime"] == deny["endTime"]


def test_usage_report_adds_money_exactly_and_counts_every_outcome(world: World) -> None:
    costs = [Decimal("0.1"), Decimal("0.2") + TINY, Decimal("0.000000375")]
    for cost in costs:
        world.completed(cost)
    world.interrupted(Decimal("0.7"), key="sk-bob", user="u2")
    world.failed(attempts=1)
    world.denied()
    world.runner.catch_up()

    (day,) = world.queries.spend_report(group_by="model")
    assert day["group_by_day"] == _today()
    assert day["total_spend"] == sum(costs) + Decimal("0.7")
    (model,) = day["models"]
    assert model["model"] == "gpt-4o-mini"
    assert {k: model[k] for k in ("requests", "successful_requests", "failed_requests")} == {
        "requests": 6, "successful_requests": 3, "failed_requests": 1}
    assert (model["interrupted_requests"], model["denied_requests"]) == (1, 1)
    assert (model["prompt_tokens"], model["completion_tokens"], model["total_tokens"]) == (37, 18, 55)

    (by_key,) = world.queries.spend_report(group_by="api_key")
    spend = {entry["api_key"]: entry["total_spend"] for entry in by_key["api_keys"]}
    assert spend == {key_hash("sk-alice"): sum(costs), key_hash("sk-bob"): Decimal("0.7")}
    (by_customer,) = world.queries.spend_report(group_by="customer")
    assert {e["customer"]: e["requests"] for e in by_customer["customers"]} == {"u1": 5, "u2": 1}
    with pytest.raises(ValueError, match="team"):
        world.queries.spend_report(group_by="team")


def test_spend_logs_filter_and_page_newest_first(world: World) -> None:
    records = [
        world.completed(Decimal(i), key="sk-alice" if i % 2 else "sk-bob", user=f"u{i % 3}",
                        model="gpt-4o" if i < 4 else "claude")
        for i in range(12)
    ]
    world.runner.catch_up()
    newest_first = [str(r.id) for r in reversed(records)]

    pages = [world.queries.spend_logs(page=n, page_size=5) for n in (1, 2, 3)]
    assert [len(p.rows) for p in pages] == [5, 5, 2]
    assert [row["request_id"] for p in pages for row in p.rows] == newest_first
    assert (pages[0].total, pages[0].total_pages) == (12, 3)

    def ids(**filters) -> set[str]:
        return {row["request_id"] for row in world.queries.spend_logs(**filters).rows}

    alice = {str(r.id) for i, r in enumerate(records) if i % 2}
    assert ids(api_key="sk-alice") == alice
    assert ids(api_key=key_hash("sk-alice")) == alice
    assert ids(model="gpt-4o") == {str(r.id) for r in records[:4]}
    assert ids(user="u0") == {str(r.id) for i, r in enumerate(records) if i % 3 == 0}
    assert ids(request_id=str(records[5].id)) == {str(records[5].id)}
    today = datetime.now(UTC).date()
    assert len(ids(start_date=today.isoformat(), end_date=today.isoformat())) == 12
    assert ids(end_date=(today - timedelta(days=1)).isoformat()) == set()
    assert ids(start_date=(today + timedelta(days=1)).isoformat()) == set()
    start_of_fifth = world.queries.spend_logs(request_id=str(records[5].id)).rows[0]["startTime"]
    assert ids(end_date=start_of_fifth.isoformat()) == {str(r.id) for r in records[:6]}
    with pytest.raises(ValueError, match="start_date"):
        world.queries.spend_logs(start_date="yesterday")
    with pytest.raises(ValueError, match="page_size"):
        world.queries.spend_logs(page_size=1001)


def test_two_runners_at_once_apply_each_event_exactly_once(world: World, caplog) -> None:
    costs = [Decimal(f"0.00{i}") + TINY for i in range(1, 121)]

    def write(chunk: list[Decimal]) -> None:
        for cost in chunk:
            world.completed(cost)

    write(costs[:40])  # a backlog both runners race for, then events arriving while they run
    runners = [world.new_runner(world.new_store(), page_size=1, poll_interval_s=0.01) for _ in range(2)]
    for runner in runners:
        runner.start()
    writers = [threading.Thread(target=write, args=(costs[40 + i::4],)) for i in range(4)]
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join()
    end = world.last_position()
    assert all(runner.wait_until(end, timeout=30) for runner in runners)

    rows = _all_logs(world)
    assert len(rows) == len(costs)
    assert sum(row["spend"] for row in rows) == sum(costs)
    (day,) = world.queries.spend_report()
    assert day["total_spend"] == sum(costs) and day["models"][0]["requests"] == len(costs)
    assert world.runner.position() == end
    # They took turns on the tracking lock rather than colliding and retrying.
    assert [r.getMessage() for r in caplog.records if r.name == "moneta.projections"] == []


def test_rebuild_replays_to_identical_views(world: World) -> None:
    for i in range(5):
        world.completed(Decimal("0.0001") * i + TINY, first_token_ms=10.0 * i)
    world.failed(attempts=3)
    world.denied()
    world.runner.catch_up()
    before = (_all_logs(world), world.queries.spend_report(group_by="api_key"))

    assert world.runner.rebuild() == world.last_position()

    assert (_all_logs(world), world.queries.spend_report(group_by="api_key")) == before
    assert len(before[0]) == 7


def test_runner_survives_a_failing_page_without_applying_it_twice(world: World) -> None:
    applied: list[int] = []
    failures = iter([sqlite3.OperationalError("database is locked")])  # transient: retried, not quarantined

    def flaky_apply_page(cur, page) -> None:
        spend_log.apply_page(cur, page)
        applied.append(len(page.events))
        error = next(failures, None)
        if error is not None:
            raise error

    flaky = types.SimpleNamespace(TABLES=spend_log.TABLES, DDL=(), EVENT_TYPES=spend_log.EVENT_TYPES,
                                  apply_page=flaky_apply_page)
    runner = world.new_runner(world.store, name="flaky", views=[flaky], poll_interval_s=0.01)
    runner.create_tables()
    records = [world.completed(Decimal("0.5")) for _ in range(3)]
    runner.start()

    assert runner.wait_until(world.last_position(), timeout=10)
    assert runner.is_running()
    assert len(_all_logs(world)) == 3
    # the failed page was rolled back, and the retry applied it again whole: Admitted and Completed per record
    assert applied == [2 * len(records)] * 2


def test_create_tables_is_idempotent(world: World) -> None:
    world.completed(Decimal("1.5"))
    world.runner.catch_up()
    world.runner.create_tables()
    assert world.runner.position() == world.last_position()
    assert len(_all_logs(world)) == 1


@pytest.mark.postgres
def test_postgres_runner_wakes_on_notify_not_on_poll(postgres_url: str) -> None:
    world = World(postgres_url)
    try:
        runner = world.new_runner(world.store, listen_dsn=world.location.postgres_dsn, poll_interval_s=60)
        runner.start()
        world.completed(Decimal("0.25"))
        assert runner.wait_until(world.last_position(), timeout=5)
        # The runner is now listening, idle, and would not poll for a minute.
        world.completed(Decimal("0.5"))
        assert runner.wait_until(world.last_position(), timeout=5)
        assert sum(row["spend"] for row in _all_logs(world)) == Decimal("0.75")
    finally:
        world.close()


def test_a_stream_the_provider_broke_off_is_a_failure_with_its_spend(world: World) -> None:
    record = world.admit()
    record.interrupt(
        deployment_id="dep-2", provider="openai", provider_model="gpt-4o-mini", usage=Usage(7, 3),
        cost=Decimal("0.25"), price_source="config", latency_ms=80.0, first_token_ms=None, usage_estimated=True,
        cause="upstream_error", error_type="InternalServerError", status_code=500,
    )
    world.ledger.record_blocking(record, timeout=10)
    world.runner.catch_up()

    (row,) = _all_logs(world)
    assert (row["status"], row["error_type"], row["status_code"]) == ("failure", "InternalServerError", 500)
    assert row["spend"] == Decimal("0.25") and row["completion_tokens"] == 3
    with world.store.reading() as cur:
        (day,) = cur.execute("SELECT failed_requests, interrupted_requests FROM usage_daily").all()
    assert (day["failed_requests"], day["interrupted_requests"]) == (1, 0)
