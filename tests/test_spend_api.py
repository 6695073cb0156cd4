"""LiteLLM's spend routes over the projections: JSON shapes, exact money, bad input as a 400."""
from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from types import SimpleNamespace

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from moneta.api.errors import install_error_handlers
from moneta.api.routes.spend import router
from moneta.application.access_directory import Directory
from moneta.application.authentication import Authenticator
from moneta.domain.redaction import key_hash
from tests.ledger_world import TINY, World


@pytest.fixture
def world(sqlite_url: str) -> Iterator[World]:
    world = World(sqlite_url)
    try:
        yield world
    finally:
        world.close()


@pytest.fixture
def client(world: World) -> TestClient:
    app = FastAPI()
    install_error_handlers(app, ())
    app.include_router(router)
    app.state.views = world.queries
    app.state.container = SimpleNamespace(authenticator=Authenticator(Directory(), master_key=None))
    return TestClient(app)


def test_spend_logs_render_money_as_number_and_exact_string(world: World, client: TestClient) -> None:
    record = world.completed(Decimal("0.1") + TINY, user="u7")
    world.denied()
    world.runner.catch_up()

    response = client.get("/spend/logs", params={"api_key": "sk-alice", "user_id": "u7"})

    assert response.status_code == 200
    (row,) = response.json()
    assert row["request_id"] == str(record.id) and row["api_key"] == key_hash("sk-alice")
    assert row["spend"] == 0.1 and Decimal(row["spend_exact"]) == Decimal("0.1") + TINY
    assert row["startTime"].endswith("+00:00") and row["status"] == "success"


def test_spend_logs_v2_pages(world: World, client: TestClient) -> None:
    for _ in range(3):
        world.completed(Decimal(1))
    world.runner.catch_up()

    body = client.get("/spend/logs/v2", params={"page": 2, "page_size": 2}).json()

    assert (body["total"], body["page"], body["page_size"], body["total_pages"]) == (3, 2, 2, 2)
    assert len(body["data"]) == 1


def test_global_spend_report_by_api_key(world: World, client: TestClient) -> None:
    world.completed(Decimal("0.2"))
    world.completed(Decimal("0.3"), key="sk-bob")
    world.runner.catch_up()

    (day,) = client.get("/global/spend/report", params={"group_by": "api_key"}).json()

    assert Decimal(day["total_spend_exact"]) == Decimal("0.5")
    assert {entry["api_key"]: entry["total_spend"] for entry in day["api_keys"]} == {
        key_hash("sk-alice"): 0.2, key_hash("sk-bob"): 0.3}


@pytest.mark.parametrize(
    ("path", "params", "status"),
    [
        ("/spend/logs", {"start_date": "last week"}, 400),
        ("/spend/logs", {"page_size": 5000}, 400),
        ("/global/spend/report", {"group_by": "team"}, 400),
        ("/global/spend/report", {"group_by": "planet"}, 400),
    ],
)
def test_bad_parameters_are_client_errors(client: TestClient, path: str, params: dict, status: int) -> None:
    assert client.get(path, params=params).status_code == status


def test_views_that_cannot_be_reached_are_a_503_not_a_500(world: World, client: TestClient, monkeypatch) -> None:
    import psycopg

    def unreachable(*args, **kwargs):
        raise psycopg.OperationalError("connection refused by the test")

    monkeypatch.setattr(world.queries, "spend_logs", unreachable)

    response = client.get("/spend/logs")

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "database_unavailable"
    assert "refused by the test" not in response.text
