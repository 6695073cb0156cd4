"""`moneta audit replay`: every view rebuilt from the ledger in a scratch place and compared with the
live views, row by row, at the same position, on SQLite and on Postgres."""
from __future__ import annotations

import sqlite3
import sys
import threading
import uuid
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest

from moneta.api.cli import main
from moneta.domain.access import Team, entity_id
from moneta.domain.request_record import RequestRecord
from moneta.domain.usage import Usage
from moneta.projections.replay import replay
from moneta.projections.runner import DEFAULT_VIEWS
from tests.ledger_world import World

BUDGET = {"budget": {"allowed": True, "reserved": "0.010000000", "scopes": [
    {"scope": "team:red", "period": "lifetime", "limit": "1.000000000", "soft": "0.100000000", "spent": "0.000000000",
     "reserved": "0.000000000", "resets_at": None}]}}


def a_ledger(world: World) -> RequestRecord:
    """Calls of every outcome, a budget crossed, a team changed a few times; the live views caught
    up in pages of 3 (the replay reads pages of 500)."""
    team = Team.create(entity_id("team", "red"), {"team_id": "red", "max_budget": "1"}, "master_key")
    for budget in ("2", "3"):
        team.record(Team.TeamUpdated, actor="master_key", changes={"max_budget": budget})
    world.app.save(team)
    for cost in ("0.06", "0.05"):
        call = RequestRecord.admit(uuid.uuid4(), call_type="chat", key_hash="k", end_user="", model_group="m",
                                   stream=False, decision=BUDGET, principal={"team_id": "red"})
        call.complete(deployment_id="dep-1", provider="openai", provider_model="gpt-4o-mini", usage=Usage(10, 5),
                      cost=Decimal(cost), price_source="config", latency_ms=12.0)
        world.ledger.record_blocking(call, timeout=10)
    settled = world.completed(Decimal("0.000024"))
    world.failed(2)
    world.denied()
    world.interrupted(Decimal("0.3"))
    world.ledger.record_blocking(world.admit(), timeout=10)  # still in flight
    world.new_runner(world.store, page_size=3).catch_up()
    return settled


def audit_replay(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, url: str) -> tuple[int, str, str]:
    monkeypatch.setenv("DATABASE_URL", url)
    capsys.readouterr()
    try:
        main(["audit", "replay"])
        status = 0
    except SystemExit as exit_:  # as the interpreter would end: a message goes to stderr, with status 1
        status = 1 if isinstance(exit_.code, str) else int(exit_.code or 0)
        if isinstance(exit_.code, str):
            print(exit_.code, file=sys.stderr)
    out, err = capsys.readouterr()
    return status, out, err


def ledger_url(world: World) -> str:
    location = world.location
    return location.postgres_dsn if location.kind == "postgres" else f"sqlite:///{location.sqlite_path}"


def scratch_places(world: World) -> list[str]:
    if world.location.kind == "sqlite":
        return [path.name for path in Path(world.location.sqlite_path).parent.glob("moneta-replay-*")]
    with psycopg.connect(world.location.postgres_dsn) as conn:
        return [row[0] for row in conn.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'moneta_replay_%'")]


def test_an_untouched_ledger_replays_to_the_live_views(world: World, capsys, monkeypatch) -> None:
    a_ledger(world)
    status, out, err = audit_replay(capsys, monkeypatch, ledger_url(world))
    assert (status, out) == (0, ""), err
    assert f"the live views are what the ledger says, up to event {world.last_position()}" in err
    assert "spend_logs" in err and "access_entities" in err and "budget_alerts" in err
    assert scratch_places(world) == []


def test_a_view_row_changed_by_hand_is_reported(world: World, capsys, monkeypatch) -> None:
    settled = a_ledger(world)
    with world.store.transaction() as cur:
        cur.execute("UPDATE spend_logs SET spend = ? WHERE request_id = ?", (Decimal("0.5"), str(settled.id)))
        cur.execute("DELETE FROM budget_spend WHERE scope = 'team:red' AND period = 'lifetime'")
        cur.execute("UPDATE access_entities SET revision = 99")  # not derived from the events: not compared

    status, out, err = audit_replay(capsys, monkeypatch, ledger_url(world))

    assert status == 1
    assert out.splitlines() == [
        f"spend_logs request_id={settled.id} spend: live 0.5, replayed 0.000024",
        "budget_spend scope=team:red period=lifetime: row absent live, present replayed",
    ]
    assert f"2 difference(s) between the live views and the ledger replayed up to event {world.last_position()}" in err
    assert scratch_places(world) == []


def test_events_gone_from_the_ledger_are_reported(world: World) -> None:
    a_ledger(world)
    last = world.last_position()
    if world.location.kind == "sqlite":
        with sqlite3.connect(world.location.sqlite_path) as conn:
            conn.execute("DELETE FROM stored_events WHERE rowid = ?", (last,))
    else:
        with psycopg.connect(world.location.postgres_dsn) as conn:
            conn.execute("DELETE FROM moneta_events WHERE notification_id = %s", (last,))

    report = replay(world.app, world.store, name="spend", views=DEFAULT_VIEWS)

    position = [(d.table, d.column, d.live, d.replayed) for d in report.differences if d.table == "projection_tracking"]
    assert position == [("projection_tracking", "position", last, last - 1)]
    assert any(d.table == "spend_logs" and d.column == "(row)" for d in report.differences)  # the call still in flight


def test_the_comparison_holds_while_the_read_side_and_the_gateway_run(world: World) -> None:
    a_ledger(world)
    world.runner.start()
    stop = threading.Event()

    def write() -> None:
        while not stop.is_set():
            world.completed(Decimal("0.001"))

    writer = threading.Thread(target=write)
    writer.start()
    reports = []
    try:
        for _ in range(3):
            assert world.runner.wait_until(world.last_position(), 10)  # the live views move on meanwhile
            reports.append(replay(world.app, world.store, name="spend", views=DEFAULT_VIEWS))
    finally:
        stop.set()
        writer.join()
    assert [report.differences for report in reports] == [[], [], []]
    assert reports[0].position < reports[1].position < reports[2].position
