"""Reconciling the ledger with Lago over the wire: `moneta reconcile lago` and
`GET /moneta/reconcile` find calls missing in Lago, amounts that differ and events the ledger does
not know, explain parked and pending calls, and `--repair` sends the missing calls again."""
from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import httpx
import pytest
import yaml
from fastapi import FastAPI
from fastapi.testclient import TestClient

from moneta.api.cli import main
from moneta.api.errors import install_error_handlers
from moneta.api.routes.lago import router
from moneta.application.access_directory import Directory
from moneta.application.authentication import Authenticator
from moneta.domain.lago_usage import LagoUsage
from moneta.infrastructure.aggregate_reader import EventStoreReader
from moneta.infrastructure.config_loader import parse_config
from moneta.projections.view_store import ViewStore
from tests.lago_usage_world import CODE, bill, deliverer, drain, lago, outcomes, usage_events  # noqa: F401
from tests.ledger_world import World

HOUR = timedelta(hours=1)


@pytest.fixture
def world(sqlite_url, monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    world = World(sqlite_url)
    yield world
    world.close()


def deliver(world: World, fake) -> int:
    async def run() -> int:
        delivery = deliverer(world, fake)
        try:
            return await drain(delivery)
        finally:
            await delivery.lago.close()

    return asyncio.run(run())


@pytest.fixture
def delivered(world, lago):
    """25 calls billed and delivered: 20 to sub_1, 5 to sub_2."""
    records = bill(world, 20) + bill(world, 5, subscription="sub_2")
    assert deliver(world, lago[0]) == 25
    return records


def config(world: World, fake, tmp_path) -> dict:
    raw = {"general_settings": {"database_url": f"sqlite:///{world.location.sqlite_path}"},
           "moneta_settings": {"lago": {"api_url": fake.url, "api_key": fake.api_key, "billable_metric_code": CODE}}}
    (tmp_path / "lago.yaml").write_text(yaml.safe_dump(raw))
    return raw


def reconcile(tmp_path, capsys, *extra: str, start: datetime | None = None,
              end: datetime | None = None) -> tuple[int, str]:
    now = datetime.now(UTC)
    with pytest.raises(SystemExit) as ended:
        main(["reconcile", "lago", "--config", str(tmp_path / "lago.yaml"),
              "--from", (start or now - HOUR).isoformat(), "--to", (end or now + HOUR).isoformat(), *extra])
    return ended.value.code, capsys.readouterr().out


def report(tmp_path, capsys, *extra: str) -> tuple[int, dict]:
    status, out = reconcile(tmp_path, capsys, "--json", *extra)
    return status, json.loads(out)


def count(table: str, label: str) -> int:
    return int(re.search(rf"^  {label} +(\d+)$", table, re.MULTILINE).group(1))


def send(fake, event: dict) -> None:
    answer = httpx.post(f"{fake.url}/api/v1/events", json={"event": event},
                        headers={"Authorization": f"Bearer {fake.api_key}"})
    assert answer.status_code == 200, answer.text


def test_all_equal_is_exit_0(world, lago, delivered, tmp_path, capsys):
    config(world, lago[0], tmp_path)
    status, out = reconcile(tmp_path, capsys)
    assert status == 0
    assert count(out, "delivered and equal") == 25 and "unexplained differences: 0" in out
    status, found = report(tmp_path, capsys, "--all")
    assert status == 0 and found["counts"] == {"equal": 25, "missing": 0, "unknown": 0, "differs": 0,
                                               "parked": 0, "pending": 0}
    assert (found["ledger_calls"], found["lago_events"], found["unexplained"]) == (25, 25, 0)
    row = next(r for r in found["rows"] if r["transaction_id"] == str(delivered[0].id))
    assert (row["status"], row["subscription"], row["ledger_cents"], row["lago_cents"]) == \
        ("equal", "sub_1", "0.0123", "0.0123")


def test_an_event_deleted_in_lago_is_missing_until_repair_sends_it_again(world, lago, delivered, tmp_path,
                                                                               capsys):
    fake, events = lago
    config(world, fake, tmp_path)
    lost = str(delivered[3].id)
    events.delete(lost)

    status, found = report(tmp_path, capsys)
    assert status == 1 and found["counts"]["missing"] == 1 and found["unexplained"] == 1
    (row,) = found["rows"]
    assert (row["status"], row["transaction_id"], row["lago_cents"]) == ("missing", lost, None)
    assert row["detail"] == "delivered (attempt 1), not held by Lago"
    status, out = reconcile(tmp_path, capsys)
    assert status == 1 and f"missing  {lost}" in out

    status, out = reconcile(tmp_path, capsys, "--repair")
    assert status == 0, out
    assert "repair: 1 call(s) missing in Lago sent again" in out
    assert out.rstrip().endswith("unexplained differences: 0")
    assert [e["transaction_id"] for e in events.stored()].count(lost) == 1
    assert outcomes(world, lost) == [LagoUsage.Delivered, LagoUsage.Requeued, LagoUsage.Delivered]
    requeued, resent = usage_events(world, lost)[2:]
    assert (requeued.actor, requeued.reason, resent.attempt) == ("reconcile", "missing in Lago", 2)
    assert reconcile(tmp_path, capsys)[0] == 0


def test_an_amount_changed_in_lago_differs_and_an_event_of_its_own_is_unknown(world, lago, delivered, tmp_path,
                                                                                   capsys):
    fake, events = lago
    config(world, fake, tmp_path)
    changed = str(delivered[0].id)
    events.alter(changed, precise_total_amount_cents="0.0124")
    stranger = {"transaction_id": "not-from-the-gateway", "external_subscription_id": "sub_2", "code": CODE,
                "timestamp": int(datetime.now(UTC).timestamp()), "precise_total_amount_cents": "99"}
    send(fake, stranger)
    send(fake, {**stranger, "transaction_id": "another-metric", "code": "storage"})  # not ours: another code
    send(fake, {**stranger, "transaction_id": "long-ago", "timestamp": 1_000_000_000})  # out of the range

    status, found = report(tmp_path, capsys)
    assert status == 1 and found["unexplained"] == 2
    rows = {row["status"]: row for row in found["rows"]}
    assert set(rows) == {"differs", "unknown"}
    assert (rows["differs"]["transaction_id"], rows["differs"]["ledger_cents"], rows["differs"]["lago_cents"]) == \
        (changed, "0.0123", "0.0124")
    assert (rows["unknown"]["transaction_id"], rows["unknown"]["subscription"], rows["unknown"]["customer"],
            rows["unknown"]["lago_cents"]) == ("not-from-the-gateway", "sub_2", None, "99.0")
    status, out = reconcile(tmp_path, capsys, "--repair")  # nothing to send: these are not missing
    assert status == 1 and count(out, "amount differs") == 1 and count(out, "unknown to the ledger") == 1
    assert out.rstrip().endswith("repair: no call is missing in Lago")


def test_parked_and_pending_calls_are_explained(world, lago, delivered, tmp_path, capsys):
    fake, _ = lago
    config(world, fake, tmp_path)
    (refused,) = bill(world, 1, subscription="sub_unknown")
    assert deliver(world, fake) == 1
    (waiting,) = bill(world, 1)  # not sent yet

    status, found = report(tmp_path, capsys)
    assert status == 0 and found["unexplained"] == 0
    rows = {row["status"]: row for row in found["rows"]}
    assert (rows["parked"]["transaction_id"], rows["parked"]["detail"]) == \
        (str(refused.id), "HTTP 404: subscription_not_found")
    assert (rows["pending"]["transaction_id"], rows["pending"]["detail"]) == (str(waiting.id), "not sent yet")


def test_only_the_range_is_reconciled(world, lago, delivered, tmp_path, capsys):
    config(world, lago[0], tmp_path)
    now = datetime.now(UTC)
    status, out = reconcile(tmp_path, capsys, "--json", start=now + HOUR, end=now + 2 * HOUR)
    assert status == 0 and json.loads(out)["counts"]["equal"] == 0


def test_lago_unreachable_is_exit_2_and_names_no_key(world, lago, delivered, tmp_path, capsys):
    fake, _ = lago
    config(world, fake, tmp_path)
    now = datetime.now(UTC)
    fake.down()
    try:
        with pytest.raises(SystemExit) as ended:
            main(["reconcile", "lago", "--config", str(tmp_path / "lago.yaml"), "--from", (now - HOUR).isoformat(),
                  "--to", now.isoformat()])
    finally:
        fake.up()
    err = capsys.readouterr().err
    assert ended.value.code == 2 and "Lago could not be read" in err and fake.api_key not in err


@pytest.mark.parametrize("start, end", [("yesterday", "2026-01-01"), ("2026-01-02", "2026-01-01")])
def test_a_bad_range_is_refused(world, lago, tmp_path, capsys, start, end):
    config(world, lago[0], tmp_path)
    with pytest.raises(SystemExit) as ended:
        main(["reconcile", "lago", "--config", str(tmp_path / "lago.yaml"), "--from", start, "--to", end])
    assert ended.value.code not in (0, None)


# -- the route ---------------------------------------------------------------------------------

@pytest.fixture
def client(world, lago, tmp_path):
    app = FastAPI()
    gateway_config = parse_config(config(world, lago[0], tmp_path), {})
    install_error_handlers(app, gateway_config.secrets())
    app.include_router(router)
    store = ViewStore.connect(sqlite_path=world.location.sqlite_path)
    app.state.container = SimpleNamespace(
        authenticator=Authenticator(Directory(), master_key=None), config=gateway_config,
        views=SimpleNamespace(store=store), reader=EventStoreReader(world.app), event_store=world.app)
    return TestClient(app)


def test_the_route_answers_what_the_command_prints(world, lago, delivered, client, tmp_path, capsys):
    lago[1].delete(str(delivered[0].id))
    world.runner.catch_up()  # as the read side does: the route waits for it
    now = datetime.now(UTC)
    start, end = (now - HOUR).isoformat(), (now + HOUR).isoformat()
    answer = client.get("/moneta/reconcile", params={"from": start, "to": end})
    assert answer.status_code == 200
    status, printed = reconcile(tmp_path, capsys, "--json", start=now - HOUR, end=now + HOUR)
    assert answer.json() == json.loads(printed) and status == 1
    assert client.get("/moneta/lago/parked").json() == {"parked": [], "count": 0}


@pytest.mark.parametrize("params, param", [({"from": "soon", "to": "2026-01-01"}, "from"), ({"from": "2026-01-01"}, "to"),
                                           ({"from": "2026-01-02", "to": "2026-01-01"}, "to")])
def test_the_route_refuses_a_bad_range_openai_shaped(client, params, param):
    answer = client.get("/moneta/reconcile", params=params)
    assert answer.status_code == 400
    assert (answer.json()["error"]["type"], answer.json()["error"]["param"]) == ("invalid_request_error", param)
