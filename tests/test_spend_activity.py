"""LiteLLM's global spend and daily activity routes over the projections: exact money, grouping,
paging, dates, who may read what, and a rebuild that gives the same answers."""
from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from moneta.api.errors import install_error_handlers
from moneta.api.routes.spend_activity import router
from moneta.application.access_directory import Directory
from moneta.application.authentication import Authenticator
from moneta.domain.redaction import key_hash
from moneta.projections.activity_queries import ActivityQueries
from tests.ledger_world import TINY, World

TODAY = datetime.now(UTC).date()
RANGE = {"start_date": (TODAY - timedelta(days=1)).isoformat(), "end_date": (TODAY + timedelta(days=1)).isoformat()}
RED = {"team_id": "t-red", "user_id": "alice"}
BLUE = {"team_id": "t-blue", "user_id": "bob"}


def _directory() -> Directory:
    directory = Directory()
    for user, role in (("alice", "internal_user"), ("bob", "internal_user"), ("vera", "proxy_admin_viewer")):
        directory.put("user", user, {"user_id": user, "user_role": role})
    directory.put("team", "t-red", {"team_id": "t-red", "team_alias": "Red", "members": {"alice": {"role": "admin"}}})
    directory.put("team", "t-blue", {"team_id": "t-blue", "members": {"bob": {"role": "user"}}})
    for name, user, team in (("alice", "alice", "t-red"), ("bob", "bob", "t-blue"), ("vera", "vera", None),
                             ("lone", None, None)):
        directory.put("key", f"k-{name}", {"key_id": f"k-{name}", "token": key_hash(f"sk-{name}"),
                                           "key_alias": f"{name}-key", "key_name": f"sk-...{name}",
                                           "user_id": user, "team_id": team})
    return directory


@pytest.fixture
def world(ledger_url: str) -> Iterator[World]:
    world = World(ledger_url)
    try:
        yield world
    finally:
        world.close()


@pytest.fixture
def client(world: World) -> TestClient:
    app = FastAPI()
    install_error_handlers(app, ())
    app.include_router(router)
    directory = _directory()
    app.state.activity = ActivityQueries(world.store)
    app.state.container = SimpleNamespace(authenticator=Authenticator(directory, master_key="sk-master"),
                                          directory=directory, config=SimpleNamespace(max_request_body_bytes=1 << 20))
    return TestClient(app)


@pytest.fixture
def spent(world: World) -> World:
    world.completed(Decimal("0.1") + TINY, key="sk-alice", user="cust-1", principal=RED)
    world.completed(Decimal("0.2"), key="sk-alice", user="cust-2", model="gpt-4o", principal=RED)
    world.completed(Decimal("0.5"), key="sk-bob", user="cust-1", principal=BLUE, tokens=(100, 50))
    world.failed(2, key="sk-bob", user="cust-3", principal=BLUE)
    world.completed(Decimal("0.05"), key="sk-lone", user="cust-4")
    world.runner.catch_up()
    return world


def get(client: TestClient, path: str, key: str = "sk-master", **params):
    return client.get(path, params=params, headers={"Authorization": f"Bearer {key}"})


def exact(value: dict, name: str) -> Decimal:
    return Decimal(value[f"{name}_exact"])


def test_top_keys_by_exact_spend_with_their_alias(spent: World, client: TestClient) -> None:
    rows = get(client, "/global/spend/keys").json()

    assert [row["api_key"] for row in rows] == [key_hash("sk-bob"), key_hash("sk-alice"), key_hash("sk-lone")]
    assert exact(rows[1], "total_spend") == Decimal("0.3") + TINY and rows[1]["total_spend"] == 0.3
    assert (rows[1]["key_alias"], rows[1]["key_name"]) == ("alice-key", "sk-...alice")
    assert len(get(client, "/global/spend/keys", limit=1).json()) == 1


def test_top_models_are_the_model_groups_asked_for(spent: World, client: TestClient) -> None:
    rows = get(client, "/global/spend/models").json()

    assert {row["model"]: exact(row, "total_spend") for row in rows} == {
        "gpt-4o-mini": Decimal("0.65") + TINY, "gpt-4o": Decimal("0.2")}
    assert rows[0]["model"] == "gpt-4o-mini"


def test_spend_per_team_by_alias_and_day(spent: World, client: TestClient) -> None:
    body = get(client, "/global/spend/teams").json()

    assert sorted(body["teams"]) == ["Red", "Unassigned", "t-blue"]
    totals = {row["team_id"]: exact(row, "total_spend") for row in body["total_spend_per_team"]}
    assert totals == {"t-blue": Decimal("0.5"), "Red": Decimal("0.3") + TINY, "Unassigned": Decimal("0.05")}
    (day,) = body["daily_spend"]
    assert day["date"] == TODAY.isoformat() and Decimal(day["Red_exact"]) == Decimal("0.3") + TINY


def test_end_users_by_spend_for_one_key(spent: World, client: TestClient) -> None:
    everyone = client.post("/global/spend/end_users", headers={"Authorization": "Bearer sk-master"}).json()
    assert [(row["end_user"], row["total_count"]) for row in everyone][:2] == [("cust-1", 2), ("cust-2", 1)]
    assert exact(everyone[0], "total_spend") == Decimal("0.6") + TINY

    bob = client.post("/global/spend/end_users", json={"api_key": "sk-bob", "startTime": RANGE["start_date"]},
                      headers={"Authorization": "Bearer sk-master"}).json()
    assert [(row["end_user"], row["total_count"]) for row in bob] == [("cust-1", 1), ("cust-3", 1)]


def test_user_daily_activity_in_litellm_shape(spent: World, client: TestClient) -> None:
    body = get(client, "/user/daily/activity", **RANGE).json()

    (day,) = body["results"]
    metrics = day["metrics"]
    assert day["date"] == TODAY.isoformat() and exact(metrics, "spend") == Decimal("0.85") + TINY
    assert (metrics["api_requests"], metrics["successful_requests"], metrics["failed_requests"]) == (5, 4, 1)
    assert (metrics["prompt_tokens"], metrics["completion_tokens"], metrics["total_tokens"]) == (130, 65, 195)
    assert "cache_creation_input_tokens" not in metrics
    alice = day["breakdown"]["api_keys"][key_hash("sk-alice")]
    assert exact(alice["metrics"], "spend") == Decimal("0.3") + TINY
    assert alice["metadata"] == {"team_id": "t-red", "key_alias": "alice-key"}
    assert set(day["breakdown"]["model_groups"]) == {"gpt-4o-mini", "gpt-4o"}
    assert day["breakdown"]["providers"]["openai"]["metrics"]["api_requests"] == 5  # the failed one tried openai
    assert exact(body["metadata"], "total_spend") == Decimal("0.85") + TINY
    assert (body["metadata"]["page"], body["metadata"]["total_pages"], body["metadata"]["has_more"]) == (1, 1, False)


def test_daily_activity_pages_and_filters(spent: World, client: TestClient) -> None:
    pages = [get(client, "/user/daily/activity", page=n, page_size=2, **RANGE).json() for n in (1, 2, 3)]

    assert [(p["metadata"]["total_pages"], p["metadata"]["has_more"]) for p in pages] == [(3, True)] * 2 + [(3, False)]
    assert sum(Decimal(p["metadata"]["total_spend_exact"]) for p in pages) == Decimal("0.85") + TINY
    by_model = get(client, "/user/daily/activity", model="gpt-4o", **RANGE).json()
    assert Decimal(by_model["metadata"]["total_spend_exact"]) == Decimal("0.2")
    by_key = get(client, "/user/daily/activity", api_key="sk-bob", **RANGE).json()
    assert by_key["metadata"]["total_api_requests"] == 2
    before = get(client, "/user/daily/activity", start_date="2020-01-01", end_date="2020-01-31").json()
    assert before["results"] == [] and before["metadata"]["total_pages"] == 0


def test_team_daily_activity_names_the_teams(spent: World, client: TestClient) -> None:
    body = get(client, "/team/daily/activity", team_ids="t-red,t-blue", **RANGE).json()

    entities = body["results"][0]["breakdown"]["entities"]
    assert set(entities) == {"t-red", "t-blue"} and entities["t-red"]["metadata"]["team_alias"] == "Red"
    assert exact(entities["t-blue"]["metrics"], "spend") == Decimal("0.5")
    assert body["metadata"]["total_api_requests"] == 4  # the key of no team is in no team's activity
    excluded = get(client, "/team/daily/activity", exclude_team_ids="t-blue", **RANGE).json()
    assert set(excluded["results"][0]["breakdown"]["entities"]) == {"t-red"}


def test_each_reader_sees_what_it_may(spent: World, client: TestClient) -> None:
    viewer = get(client, "/global/spend/keys", key="sk-vera").json()
    assert len(viewer) == 3
    alice_keys = get(client, "/global/spend/keys", key="sk-alice").json()
    assert [row["api_key"] for row in alice_keys] == [key_hash("sk-alice")]
    lone = get(client, "/user/daily/activity", key="sk-lone", **RANGE).json()
    assert list(lone["results"][0]["breakdown"]["api_keys"]) == [key_hash("sk-lone")]
    bob = get(client, "/user/daily/activity", key="sk-bob", **RANGE).json()
    assert bob["metadata"]["total_api_requests"] == 2
    red = get(client, "/team/daily/activity", key="sk-alice", **RANGE).json()
    assert set(red["results"][0]["breakdown"]["entities"]) == {"t-red"}
    assert [row["team_id"] for row in get(client, "/global/spend/teams", key="sk-alice").json()[
        "total_spend_per_team"]] == ["Red"]

    for path, key, params in (("/user/daily/activity", "sk-alice", {"user_id": "bob"}),
                              ("/user/daily/activity", "sk-lone", {"user_id": "alice"}),
                              ("/team/daily/activity", "sk-alice", {"team_ids": "t-blue"}),
                              ("/team/daily/activity", "sk-bob", {}),
                              ("/global/spend/teams", "sk-bob", {})):
        assert get(client, path, key=key, **params, **RANGE).status_code == 403, (path, key)


@pytest.mark.parametrize(("params", "param"), [
    ({"end_date": "2025-01-01"}, "start_date"),
    ({"start_date": "2025-13-01", "end_date": "2025-01-01"}, "start_date"),
    ({"start_date": "2025-01-01", "end_date": "2025-01-01T00:00"}, "end_date"),
    ({**RANGE, "page_size": 5000}, "page_size"),
    ({**RANGE, "page": 0}, "page"),
])
def test_bad_parameters_are_a_400_naming_them(client: TestClient, params: dict, param: str) -> None:
    response = get(client, "/user/daily/activity", **params)

    assert response.status_code == 400 and response.json()["error"]["param"] == param


def test_a_rebuild_gives_the_same_answers(spent: World, client: TestClient) -> None:
    paths = [("/global/spend/keys", {}), ("/global/spend/models", {}), ("/global/spend/teams", {}),
             ("/user/daily/activity", RANGE), ("/team/daily/activity", RANGE)]
    before = [get(client, path, **params).json() for path, params in paths]

    spent.runner.rebuild()

    assert [get(client, path, **params).json() for path, params in paths] == before


def test_through_a_real_server_with_keys_made_by_the_management_routes(tmp_path) -> None:
    import httpx
    import openai

    from tests.live_server import LiveServer
    from tests.test_access_management import ADMIN, config, eventually

    with LiveServer(config(), tmp_path) as live, httpx.Client(base_url=live.base_url, timeout=30) as api:
        assert api.post("/team/new", headers=ADMIN, json={"team_id": "t-live", "team_alias": "Live"}).status_code == 200
        key = api.post("/key/generate", headers=ADMIN, json={"team_id": "t-live"}).json()["key"]
        client = openai.OpenAI(base_url=live.base_url + "/v1", api_key=key, max_retries=0)
        client.chat.completions.create(model="m1", messages=[{"role": "user", "content": "hi"}])

        activity = eventually(lambda: api.get("/team/daily/activity", headers=ADMIN, params=RANGE).json()["results"])
        entity = activity[0]["breakdown"]["entities"]["t-live"]
        assert entity["metadata"]["team_alias"] == "Live" and entity["metrics"]["api_requests"] == 1
        (top,) = api.get("/global/spend/keys", headers=ADMIN).json()
        assert top["api_key"] == key_hash(key) and top["total_spend_exact"] == entity["metrics"]["spend_exact"]
        assert api.get("/global/spend/teams", headers={"Authorization": f"Bearer {key}"}).status_code == 403
