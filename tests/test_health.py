"""Readiness reports the ledger, the read side and, when configured, Redis."""
from __future__ import annotations

import time
import types
import uuid
from datetime import UTC, datetime, timedelta
from typing import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient

from moneta.api.app import create_app
from moneta.bootstrap import Container, build
from moneta.domain.request_record import RequestRecord
from moneta.infrastructure.config_loader import parse_config
from moneta.projections import quarantine, tracking
from moneta.projections.queries import SpendQueries
from moneta.projections.runner import ProjectionRunner
from moneta.projections.view_store import ViewStore
from tests.live_server import LiveServer

CONFIG = {"model_list": [{"model_name": "m", "litellm_params": {"model": "mock/m"}}]}


def readiness_once_read_side_ran(server: LiveServer, timeout: float = 20.0) -> httpx.Response:
    """The projection process starts beside the workers; until its first heartbeat the read side is down."""
    deadline = time.monotonic() + timeout
    while True:
        response = httpx.get(server.base_url + "/health/readiness")
        if response.json()["read_side"]["status"] != "down" or time.monotonic() > deadline:
            return response
        time.sleep(0.1)


def test_readiness_checks_redis_when_configured(tmp_path, redis_url, sqlite_url):
    with LiveServer(CONFIG, tmp_path, env={"DATABASE_URL": sqlite_url, "REDIS_URL": redis_url}) as server:
        body = readiness_once_read_side_ran(server).json()
        assert body["status"] == "healthy" and body["cache"] == "redis" and body["db"] == "connected"


def test_readiness_is_503_when_redis_is_unreachable(tmp_path, sqlite_url):
    env = {"DATABASE_URL": sqlite_url, "REDIS_URL": "redis://127.0.0.1:1/0"}
    with LiveServer(CONFIG, tmp_path, env=env) as server:
        response = readiness_once_read_side_ran(server)
        assert response.status_code == 503 and response.json()["cache"] == "unreachable"
        assert httpx.get(server.base_url + "/health/liveliness").status_code == 200


@pytest.mark.parametrize("ledger", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_readiness_reports_the_running_read_side(tmp_path, request, ledger):
    url = request.getfixturevalue(f"{ledger}_url")
    with LiveServer(CONFIG, tmp_path, env={"DATABASE_URL": url}) as server:
        response = readiness_once_read_side_ran(server)
        body = response.json()
        assert response.status_code == 200 and body["status"] == "healthy"
        assert body["read_side"]["status"] == "ok" and body["read_side"]["lag_events"] == 0
        assert body["read_side"]["heartbeat_age_s"] <= 5


# -- the read side down or lagging, in process ---------------------------------------------------


@pytest.fixture
def container(sqlite_url: str) -> Iterator[Container]:
    container = build(parse_config({**CONFIG, "general_settings": {"database_url": sqlite_url}}, {}), {}, migrate=True)
    yield container
    container.close()


@pytest.fixture
def store(container: Container) -> Iterator[ViewStore]:
    store = ViewStore.connect(sqlite_path=container.location.sqlite_path)
    ProjectionRunner(container.event_store, store).create_tables()
    yield store
    store.close()


def readiness(container: Container, store: ViewStore) -> httpx.Response:
    container.views = SpendQueries(store)
    return TestClient(create_app(container)).get("/health/readiness")


def beat(store: ViewStore, seconds_ago: float) -> None:
    with store.transaction() as cur:
        tracking.beat(cur, "spend", datetime.now(UTC) - timedelta(seconds=seconds_ago))


def test_readiness_is_503_when_the_read_side_never_ran(container, store):
    response = readiness(container, store)
    assert response.status_code == 503 and response.json()["status"] == "unhealthy"
    assert response.json()["read_side"] == {"status": "down", "lag_events": 0, "lag_s": 0.0, "heartbeat_age_s": None,
                                            "quarantined": 0}


def test_readiness_is_503_when_the_read_side_stopped_beating(container, store):
    beat(store, seconds_ago=6)
    response = readiness(container, store)
    assert response.status_code == 503 and response.json()["db"] == "connected"
    assert response.json()["read_side"]["status"] == "down" and response.json()["read_side"]["heartbeat_age_s"] >= 6


def test_readiness_is_200_while_the_read_side_lags(container, store):
    record = RequestRecord.admit(uuid.uuid4(), call_type="acompletion", key_hash="k", end_user="u",
                                 model_group="m", stream=False)
    container.ledger.record_blocking(record, timeout=10)  # type: ignore[attr-defined]
    time.sleep(1.2)
    beat(store, seconds_ago=0)

    response = readiness(container, store)

    assert response.status_code == 200 and response.json()["status"] == "healthy"
    read_side = response.json()["read_side"]
    assert (read_side["status"], read_side["lag_events"]) == ("lagging", 1) and read_side["lag_s"] >= 1.2


def test_readiness_is_degraded_while_events_are_quarantined(container, store):
    beat(store, seconds_ago=0)
    notification = types.SimpleNamespace(id=7, originator_id=uuid.uuid4(), topic="x:Y")
    with store.transaction() as cur:
        quarantine.add(cur, "spend", notification, "ValueError: poison", datetime.now(UTC))

    response = readiness(container, store)

    assert response.status_code == 200 and response.json()["status"] == "degraded"
    assert response.json()["read_side"]["status"] == "degraded" and response.json()["read_side"]["quarantined"] == 1
