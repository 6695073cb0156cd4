"""Events as older versions stored them (their module names before `moneta`, their fields before
principals, instances, causes and askii, no class version) still load, project, replay and explain."""
from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from eventsourcing.persistence import StoredEvent

from moneta.api.cli import main
from moneta.domain.request_record import RequestRecord
from moneta.domain.usage import Usage
from moneta.infrastructure.event_store import LedgerApplication, StoreLocation, migrate
from moneta.projections.replay import replay
from moneta.projections.runner import DEFAULT_VIEWS, ProjectionRunner
from moneta.projections.view_store import ViewStore
from tests.live_server import LiveServer

RECORD = "domain.request_record:RequestRecord"  # the topic of a stream written before `moneta` named the layers
T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
COMPLETED_V1 = {"deployment_id": "dep-1", "provider": "openai", "provider_model": "gpt-4o-mini",
                "usage": {"prompt_tokens": 10, "completion_tokens": 5}, "cost": Decimal("0.000012"),
                "price_source": "genai-prices", "latency_ms": 120.5, "first_token_ms": None, "finish_reason": "stop"}
ADMITTED_V1 = {"originator_topic": RECORD, "call_type": "chat", "key_hash": "a1b2c3", "end_user": "cust-1",
               "model_group": "gpt-4o-mini", "stream": True, "decision": {"deployment": "dep-1", "reason": "only candidate"}}


@dataclass
class OldLedger:
    url: str
    app: LedgerApplication
    ids: dict[str, uuid.UUID]  # by story: completed, interrupted, broken_off, denied, failed


def _stored(app: LedgerApplication, stream: uuid.UUID, version: int, kind: str, state: dict[str, Any]) -> StoredEvent:
    state = {"timestamp": T0 + timedelta(seconds=version), **state}
    return StoredEvent(stream, version, f"{RECORD}.{kind}", app.mapper.transcoder.encode(state))


def write_old_ledger(app: LedgerApplication) -> dict[str, uuid.UUID]:
    """Each request's stream as the version of its time wrote it, as raw rows."""
    ids = {story: uuid.uuid4() for story in ("completed", "interrupted", "broken_off", "denied", "failed")}
    rows = [
        # the first version: Admitted without instance or principal, Completed without askii
        _stored(app, ids["completed"], 1, "Admitted", ADMITTED_V1),
        _stored(app, ids["completed"], 2, "Completed", COMPLETED_V1),
        # Interrupted before it had a cause
        _stored(app, ids["interrupted"], 1, "Admitted", ADMITTED_V1),
        _stored(app, ids["interrupted"], 2, "Interrupted", {**COMPLETED_V1, "finish_reason": None,
                                                            "usage_estimated": True}),
        # later, still without class versions: instances and causes, no principal, no askii
        _stored(app, ids["broken_off"], 1, "Admitted", {**ADMITTED_V1, "instance": "host:1:abcd"}),
        _stored(app, ids["broken_off"], 2, "Interrupted", {**COMPLETED_V1, "finish_reason": None,
                                                           "usage_estimated": False, "cause": "upstream_error",
                                                           "error_type": "api_connection_error", "status_code": 502}),
        # Denied before it carried the principal and the checks' numbers
        _stored(app, ids["denied"], 1, "Denied", {
            "originator_topic": RECORD, "call_type": "chat", "key_hash": "a1b2c3", "end_user": "",
            "model_group": "gpt-4o-mini", "status_code": 429, "error_type": "rate_limit_error",
            "code": "rate_limit_exceeded", "reason": "too many requests"}),
        _stored(app, ids["failed"], 1, "Admitted", ADMITTED_V1),
        _stored(app, ids["failed"], 2, "AttemptFailed", {
            "attempt": 1, "deployment_id": "dep-1", "provider": "openai", "provider_model": "gpt-4o-mini",
            "status_code": 503, "error_type": "service_unavailable", "reason": "down", "latency_ms": 3.5}),
        _stored(app, ids["failed"], 3, "Failed", {"status_code": 503, "error_type": "service_unavailable",
                                                  "reason": "no deployment answered"}),
    ]
    app.recorder.insert_events(rows)
    return ids


@pytest.fixture(params=["sqlite", "postgres"])
def old_ledger(request) -> Iterator[OldLedger]:
    url = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "postgres_url")
    app = migrated(url)
    try:
        yield OldLedger(url, app, write_old_ledger(app))
    finally:
        app.close()


def migrated(url: str) -> LedgerApplication:
    """The ledger and its views' tables, as `moneta migrate` leaves them."""
    location = StoreLocation.from_url(url)
    migrate(location)
    app = location.open()
    store = ViewStore.connect(sqlite_path=location.sqlite_path, postgres_dsn=location.postgres_dsn)
    try:
        ProjectionRunner(app, store).create_tables()
    finally:
        store.close()
    return app


def test_new_events_carry_their_class_version_and_older_ones_are_upcast() -> None:
    record = RequestRecord.admit(uuid.uuid4(), call_type="chat", key_hash="h", end_user="", model_group="g",
                                 stream=False)
    record.record_attempt_failure(deployment_id="d", provider="p", provider_model="m", status_code=500,
                                  error_type="e", reason="r", latency_ms=1.0)
    record.interrupt(deployment_id="d", provider="p", provider_model="m", usage=Usage(1, 2), cost=Decimal("0.1"),
                     price_source="s", latency_ms=1.0, first_token_ms=None, usage_estimated=False)
    app = LedgerApplication(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    states = [app.mapper.transcoder.decode(app.mapper.to_stored_event(e).state) for e in record.collect_events()]
    assert [state.get("class_version") for state in states] == [3, None, 3]
    denied = RequestRecord.deny(uuid.uuid4(), call_type="chat", key_hash="h", end_user="", model_group="g",
                                status_code=429, error_type="e", code="c", reason="r")
    completed = RequestRecord.admit(uuid.uuid4(), call_type="chat", key_hash="h", end_user="", model_group="g",
                                    stream=False)
    completed.complete(deployment_id="d", provider="p", provider_model="m", usage=Usage(1, 2), cost=Decimal("0.1"),
                       price_source="s", latency_ms=1.0)
    versions = [app.mapper.transcoder.decode(app.mapper.to_stored_event(e).state).get("class_version")
                for e in [*denied.collect_events(), *completed.collect_events()]]
    assert versions == [2, 3, 2]


def test_old_streams_load_with_the_fields_added_since(old_ledger: OldLedger) -> None:
    ids, app = old_ledger.ids, old_ledger.app
    admitted, completed = app.events.get(ids["completed"])
    assert type(admitted) is RequestRecord.Admitted and type(completed) is RequestRecord.Completed
    assert (vars(admitted)["instance"], vars(admitted)["principal"]) == ("", None)  # in the event, not a class default
    assert completed.cost == Decimal("0.000012") and {"askii": None, "askii_rate": None}.items() <= vars(completed).items()
    _, interrupted = app.events.get(ids["interrupted"])
    assert {"cause": "client_disconnected", "error_type": None, "status_code": None,
            "askii": None}.items() <= vars(interrupted).items()
    _, broken_off = app.events.get(ids["broken_off"])
    assert (broken_off.cause, broken_off.status_code) == ("upstream_error", 502)  # kept: only what is missing is added
    (denied,) = app.events.get(ids["denied"])
    assert {"principal": None, "decision": None}.items() <= vars(denied).items()
    assert app.repository.get(ids["interrupted"]).outcome == "interrupted"


def test_old_streams_project_and_replay(old_ledger: OldLedger) -> None:
    location = StoreLocation.from_url(old_ledger.url)
    store = ViewStore.connect(sqlite_path=location.sqlite_path, postgres_dsn=location.postgres_dsn)
    try:
        runner = ProjectionRunner(old_ledger.app, store)
        runner.rebuild()
        with store.reading() as cur:
            rows = {row["request_id"]: row for row in cur.execute(
                "SELECT request_id, status, spend, error_type, status_code, attempts, team_id FROM spend_logs").all()}
        report = replay(old_ledger.app, store, name=runner.name, views=DEFAULT_VIEWS)
    finally:
        store.close()
    ids = old_ledger.ids
    shown = {story: (rows[str(ids[story])]["status"], Decimal(rows[str(ids[story])]["spend"]),
                     rows[str(ids[story])]["status_code"]) for story in ids}
    assert shown == {
        "completed": ("success", Decimal("0.000012"), None),
        "interrupted": ("client_disconnected", Decimal("0.000012"), None),
        "broken_off": ("failure", Decimal("0.000012"), 502),
        "denied": ("denied", Decimal(0), 429),
        "failed": ("failure", Decimal(0), 503),
    }
    assert rows[str(ids["failed"])]["attempts"] == 1 and rows[str(ids["completed"])]["team_id"] is None
    assert report.differences == [] and report.quarantined == 0 and report.rows["spend_logs"] == 5


def test_old_streams_explain_in_the_command_line(old_ledger: OldLedger, capsys, monkeypatch) -> None:
    monkeypatch.setenv("DATABASE_URL", old_ledger.url)
    capsys.readouterr()
    main(["audit", "explain", str(old_ledger.ids["interrupted"]), "--json"])
    body = json.loads(capsys.readouterr().out)
    assert body["caller"] == {"kind": "unknown_key", "key_hash": "a1b2c3", "key_id": None, "key_alias": None,
                              "team_id": None, "user_id": None, "org_id": None, "end_user": "cust-1"}
    assert body["decision"]["instance"] is None and body["decision"]["route"]["deployment"] == "dep-1"
    settled = body["settlement"]
    assert (settled["outcome"], settled["cause"], settled["askii"], settled["usage_estimated"]) == (
        "interrupted", "client_disconnected", None, True)
    assert [(e["type"], e["class_version"]) for e in body["events"]] == [
        ("RequestRecord.Admitted", 3), ("RequestRecord.Interrupted", 3)]
    admitted, interrupted = (e["fields"] for e in body["events"])  # each event in its class's current shape
    assert (admitted["instance"], admitted["principal"]) == ("", None)
    assert (interrupted["cause"], interrupted["askii"], interrupted["askii_rate"]) == ("client_disconnected", None, None)


def test_old_streams_explain_through_the_proxy(tmp_path, sqlite_url) -> None:
    app = migrated(sqlite_url)
    try:
        ids = write_old_ledger(app)
    finally:
        app.close()
    master = "sk-master-upcasting-0001"
    config = {"model_list": [{"model_name": "m", "litellm_params": {"model": "mock/mock-gpt"}}],
              "general_settings": {"master_key": master}}
    with LiveServer(config, tmp_path, env={"DATABASE_URL": sqlite_url}) as server:
        get = lambda story: httpx.get(f"{server.base_url}/audit/requests/{ids[story]}",  # noqa: E731
                                      headers={"Authorization": f"Bearer {master}"}, timeout=30).json()
        denied, broken_off, failed = get("denied"), get("broken_off"), get("failed")
    assert denied["decision"]["refusal"] == {"status_code": 429, "error_type": "rate_limit_error",
                                             "code": "rate_limit_exceeded", "reason": "too many requests"}
    assert denied["decision"]["rate_limits"] is None and denied["settlement"]["outcome"] == "denied"
    assert (broken_off["settlement"]["cause"], broken_off["settlement"]["status_code"]) == ("upstream_error", 502)
    assert broken_off["decision"]["instance"] == "host:1:abcd"
    assert [a["outcome"] for a in failed["attempts"]] == ["failed"]
    assert (failed["settlement"]["outcome"], failed["settlement"]["reason"]) == ("failed", "no deployment answered")
