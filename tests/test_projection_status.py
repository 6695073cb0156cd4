"""The read side's status: position against the ledger's head, lag, and the runner's heartbeat."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from moneta.projections import tracking
from moneta.projections.status import ProjectionStatus, read_status
from tests.ledger_world import World


def spend_status(world: World, now: datetime) -> ProjectionStatus:
    (status,) = read_status(world.app, world.store, now=now)
    return status


def test_status_of_a_caught_up_read_side(world: World) -> None:
    world.completed(Decimal("0.5"))
    world.runner.catch_up()
    now = datetime.now(UTC) + timedelta(seconds=2)

    status = spend_status(world, now)

    head = world.last_position()
    assert (status.name, status.position, status.head, status.lag_events, status.lag_s) == ("spend", head, head, 0, 0.0)
    assert 2 <= status.heartbeat_age_s < 10


def test_status_of_a_lagging_read_side(world: World) -> None:
    world.completed(Decimal("0.5"))
    world.runner.catch_up()
    position = world.last_position()
    first_unapplied = world.completed(Decimal("0.25"))
    world.failed(attempts=1)
    now = datetime.now(UTC) + timedelta(seconds=30)

    status = spend_status(world, now)

    assert (status.position, status.head) == (position, world.last_position())
    assert status.lag_events == 2 + 3  # Admitted + Completed, Admitted + AttemptFailed + Failed
    assert status.lag_s == (now - first_unapplied.created_on).total_seconds()


def test_status_of_a_read_side_that_never_ran(world: World) -> None:
    world.completed(Decimal("0.5"))

    status = spend_status(world, datetime.now(UTC))

    assert (status.position, status.lag_events, status.heartbeat_age_s) == (0, world.last_position(), None)
    assert status.lag_s > 0


def test_an_idle_runner_beats_about_once_a_second(world: World, monkeypatch) -> None:
    beats: list[datetime] = []
    beat = tracking.beat

    def counted_beat(cur, name: str, now: datetime) -> None:
        beats.append(now)
        beat(cur, name, now)

    monkeypatch.setattr(tracking, "beat", counted_beat)
    runner = world.new_runner(world.store, poll_interval_s=0.01, min_interval_s=0.01)
    runner.start()
    time.sleep(2.5)
    runner.stop()

    assert 2 <= len(beats) <= 3  # not one per poll (about 120 of them)
    assert all(later - earlier >= timedelta(seconds=1) for earlier, later in zip(beats, beats[1:]))
    assert spend_status(world, datetime.now(UTC)).heartbeat_age_s < 2


def test_create_tables_upgrades_a_tracking_table_without_heartbeat(world: World) -> None:
    with world.store.transaction() as cur:
        cur.execute("DROP TABLE projection_tracking")
        cur.execute("CREATE TABLE projection_tracking (name TEXT PRIMARY KEY, position BIGINT NOT NULL)")
        cur.execute("INSERT INTO projection_tracking (name, position) VALUES ('spend', 0)")
    world.completed(Decimal("0.5"))

    world.runner.create_tables()
    assert spend_status(world, datetime.now(UTC)).heartbeat_age_s is None
    world.runner.catch_up()

    status = spend_status(world, datetime.now(UTC))
    assert status.position == world.last_position() and status.heartbeat_age_s < 5
    assert world.queries.spend_logs().total == 1


def test_the_status_command_shows_position_head_and_lag(world: World, tmp_path) -> None:
    world.completed(Decimal("0.5"))
    world.runner.catch_up()
    world.completed(Decimal("0.25"))  # not applied yet
    config = tmp_path / "config.yaml"
    url = f"sqlite:///{world.location.sqlite_path}" if world.location.kind == "sqlite" else world.location.postgres_dsn
    config.write_text(f"general_settings:\n  database_url: {url}\n")
    command = [sys.executable, "-m", "moneta.api.cli", "projections", "status", "--config", str(config)]

    (row,) = json.loads(subprocess.run([*command, "--json"], capture_output=True, text=True, check=True).stdout)
    table = subprocess.run(command, capture_output=True, text=True, check=True).stdout

    head = world.last_position()
    assert (row["name"], row["head"]) == ("spend", head)
    assert row["lag_events"] == head - row["position"] > 0 and row["lag_s"] >= 0
    assert row["heartbeat_age_s"] is not None
    assert table.splitlines()[0].split()[:3] == ["projection", "position", "head"]
    assert table.splitlines()[1].split()[:4] == ["spend", str(row["position"]), str(head), str(row["lag_events"])]
