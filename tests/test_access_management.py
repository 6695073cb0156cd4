"""LiteLLM's management API over a real server: keys, teams, users, organizations, customers and
budgets, each change an event, each refusal saying why."""
from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import httpx
import openai
import pytest

from tests.live_server import LiveServer

MASTER = "sk-master-test-1234"
ADMIN = {"Authorization": f"Bearer {MASTER}"}
MODELS = [{"model_name": name, "litellm_params": {"model": "mock/mock-gpt"}} for name in ("m1", "m2")]


def config(**general: Any) -> dict[str, Any]:
    return {"model_list": MODELS, "general_settings": {"master_key": MASTER, **general},
            "litellm_settings": {"max_end_user_budget_id": "end-users"}}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with LiveServer(config(), tmp_path_factory.mktemp("access")) as live:
        yield live


@pytest.fixture
def api(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        yield client


def chat(server: LiveServer, key: str, model: str = "m1", **extra: Any) -> Any:
    client = openai.OpenAI(base_url=server.base_url + "/v1", api_key=key, max_retries=0)
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}], **extra)


def new_key(api: httpx.Client, **fields: Any) -> dict[str, Any]:
    response = api.post("/key/generate", headers=ADMIN, json=fields)
    assert response.status_code == 200, response.text
    return response.json()


def error(response: httpx.Response) -> dict[str, Any]:
    return response.json()["error"]


def eventually(read: Callable[[], Any], timeout: float = 5.0) -> Any:
    """What `read` returns once it is truthy (the views follow the ledger within moments)."""
    deadline = time.monotonic() + timeout
    while not (value := read()):
        assert time.monotonic() < deadline, "the views did not catch up"
        time.sleep(0.05)
    return value


def test_a_key_is_shown_once_works_for_its_models_and_its_info_reads_back(server: LiveServer,
                                                                          api: httpx.Client) -> None:
    made = new_key(api, models=["m1"], key_alias="lifecycle", max_budget=12.5, metadata={"env": "test"},
                   rpm_limit=100)
    key = made["key"]
    assert key.startswith("sk-") and made["key_name"] == f"sk-...{key[-4:]}" and len(made["token"]) == 64
    assert made["max_budget"] == 12.5 and made["max_budget_exact"] == "12.5" and made["spend"] == 0

    assert chat(server, key).choices[0].message.content
    with pytest.raises(openai.AuthenticationError) as refused:
        chat(server, key, model="m2")
    assert refused.value.code == "key_model_access_denied"

    info = eventually(lambda: (found := api.get("/key/info", params={"key": key}, headers=ADMIN).json())
                      ["info"]["spend"] and found)
    assert info["info"]["key_alias"] == "lifecycle" and info["info"]["metadata"] == {"env": "test"}
    assert "key" not in info["info"]
    own = api.get("/key/info", headers={"Authorization": f"Bearer {key}"})
    assert own.status_code == 200 and own.json()["info"]["token"] == made["token"]


def test_update_regenerate_block_and_delete_take_effect_at_once(server: LiveServer, api: httpx.Client) -> None:
    key = new_key(api, models=["m1"])["key"]
    updated = api.post("/key/update", headers=ADMIN, json={"key": key, "models": ["m1", "m2"], "key_alias": "upd"})
    assert updated.status_code == 200 and updated.json()["models"] == ["m1", "m2"] and "key" not in updated.json()
    assert chat(server, key, model="m2").id

    regenerated = api.post("/key/regenerate", headers=ADMIN, json={"key": key}).json()
    new = regenerated["key"]
    assert new != key and regenerated["key_alias"] == "upd"
    with pytest.raises(openai.AuthenticationError):
        chat(server, key)
    assert chat(server, new).id

    assert api.post("/key/block", headers=ADMIN, json={"key": new}).json()["blocked"] is True
    with pytest.raises(openai.AuthenticationError) as blocked:
        chat(server, new)
    assert blocked.value.code == "key_blocked"
    assert api.post("/key/unblock", headers=ADMIN, json={"key": new}).json()["blocked"] is False
    assert chat(server, new).id

    deleted = api.post("/key/delete", headers=ADMIN, json={"keys": [new]})
    assert deleted.status_code == 200 and deleted.json() == {"deleted_keys": [regenerated["token"]]}
    with pytest.raises(openai.AuthenticationError) as gone:
        chat(server, new)
    assert gone.value.code == "key_deleted"
    assert api.get("/key/info", params={"key": new}, headers=ADMIN).status_code == 404


def test_an_expired_key_is_refused_saying_so(server: LiveServer, api: httpx.Client) -> None:
    made = new_key(api, duration="1s")
    assert made["expires"]
    time.sleep(1.2)
    with pytest.raises(openai.AuthenticationError) as expired:
        chat(server, made["key"])
    assert expired.value.code == "key_expired" and "expired at" in expired.value.message


def test_keys_of_a_blocked_team_are_refused_until_it_is_unblocked(server: LiveServer, api: httpx.Client) -> None:
    assert api.post("/team/new", headers=ADMIN, json={"team_id": "blockable", "models": ["m1"]}).status_code == 200
    key = new_key(api, team_id="blockable")["key"]
    assert chat(server, key).id
    with pytest.raises(openai.AuthenticationError) as team_models:
        chat(server, key, model="m2")
    assert team_models.value.code == "team_model_access_denied"

    assert api.post("/team/block", headers=ADMIN, json={"team_id": "blockable"}).json()["blocked"] is True
    with pytest.raises(openai.PermissionDeniedError) as refused:
        chat(server, key)
    assert refused.value.code == "team_blocked" and "blockable" in refused.value.message
    api.post("/team/unblock", headers=ADMIN, json={"team_id": "blockable"})
    assert chat(server, key).id


def test_bad_input_names_the_field_and_missing_ids_are_404_and_clashes_409(api: httpx.Client) -> None:
    unknown = api.post("/key/generate", headers=ADMIN, json={"models": ["m1"], "guardrails": [], "spend": 3})
    assert unknown.status_code == 400 and error(unknown)["message"] == "Unknown field(s): guardrails, spend."
    negative = api.post("/key/generate", headers=ADMIN, json={"max_budget": -1})
    assert negative.status_code == 400 and error(negative)["param"] == "max_budget"
    nan = api.post("/team/new", headers=ADMIN, content=b'{"max_budget": NaN}')
    assert nan.status_code == 400
    duration = api.post("/key/generate", headers=ADMIN, json={"budget_duration": "monthly"})
    assert duration.status_code == 400 and error(duration)["param"] == "budget_duration"
    assert api.post("/key/generate", headers=ADMIN, json={"team_id": "no-such-team"}).status_code == 404
    assert api.get("/team/info", params={"team_id": "no-such-team"}, headers=ADMIN).status_code == 404
    assert api.post("/key/block", headers=ADMIN, json={"key": "sk-never-issued"}).status_code == 404
    assert api.post("/team/member_delete", headers=ADMIN, json={"team_id": "x-none", "user_id": "u"}).status_code == 404

    new_key(api, key_alias="taken-alias")
    clash = api.post("/key/generate", headers=ADMIN, json={"key_alias": "taken-alias"})
    assert clash.status_code == 409 and error(clash)["code"] == "alias_taken"
    api.post("/team/new", headers=ADMIN, json={"team_id": "twice"})
    assert api.post("/team/new", headers=ADMIN, json={"team_id": "twice"}).status_code == 409


def test_key_list_pages_and_filters(api: httpx.Client) -> None:
    api.post("/team/new", headers=ADMIN, json={"team_id": "listing"})
    tokens = [new_key(api, team_id="listing")["token"] for _ in range(3)]
    first = api.get("/key/list", params={"team_id": "listing", "size": 2}, headers=ADMIN).json()
    second = api.get("/key/list", params={"team_id": "listing", "size": 2, "page": 2}, headers=ADMIN).json()
    assert first["total_count"] == 3 and first["total_pages"] == 2 and first["current_page"] == 1
    assert first["keys"] + second["keys"] == tokens
    full = api.get("/key/list", params={"team_id": "listing", "return_full_object": "true"}, headers=ADMIN).json()
    assert [key["token"] for key in full["keys"]] == tokens and all(key["team_id"] == "listing" for key in full["keys"])


def test_users_get_a_key_and_their_teams_and_lose_the_keys_when_deleted(server: LiveServer,
                                                                         api: httpx.Client) -> None:
    api.post("/team/new", headers=ADMIN, json={"team_id": "user-team"})
    made = api.post("/user/new", headers=ADMIN, json={"user_id": "ursula", "user_email": "u@example.com",
                                                      "user_role": "internal_user", "teams": ["user-team"]}).json()
    assert made["user_id"] == "ursula" and made["key"].startswith("sk-")
    assert chat(server, made["key"]).id
    info = eventually(lambda: (found := api.get("/user/info", params={"user_id": "ursula"}, headers=ADMIN).json())
                      ["user_info"]["spend"] and found)
    assert info["teams"] == ["user-team"] and [key["token"] for key in info["keys"]] == [made["token"]]
    assert info["user_info"]["user_email"] == "u@example.com"
    listed = api.get("/user/list", params={"role": "internal_user"}, headers=ADMIN).json()
    assert "ursula" in [user["user_id"] for user in listed["users"]]
    bad_role = api.post("/user/update", headers=ADMIN, json={"user_id": "ursula", "user_role": "king"})
    assert bad_role.status_code == 400 and error(bad_role)["param"] == "user_role"

    assert api.post("/user/delete", headers=ADMIN, json={"user_ids": ["ursula"]}).status_code == 200
    with pytest.raises(openai.AuthenticationError):
        chat(server, made["key"])
    team = api.get("/team/info", params={"team_id": "user-team"}, headers=ADMIN).json()
    assert team["team_memberships"] == []


def test_team_members_are_added_updated_and_removed(api: httpx.Client) -> None:
    api.post("/team/new", headers=ADMIN, json={"team_id": "members", "members_with_roles": [
        {"role": "admin", "user_id": "anna"}]})
    added = api.post("/team/member_add", headers=ADMIN, json={"team_id": "members", "member": {
        "role": "user", "user_id": "bert"}, "max_budget_in_team": 5})
    assert added.status_code == 200
    assert {m["user_id"]: m["role"] for m in added.json()["members_with_roles"]} == {"anna": "admin", "bert": "user"}
    again = api.post("/team/member_add", headers=ADMIN, json={"team_id": "members", "member": {"user_id": "bert"}})
    assert again.status_code == 409
    updated = api.post("/team/member_update", headers=ADMIN, json={"team_id": "members", "user_id": "bert",
                                                                   "role": "admin", "max_budget_in_team": 7.25})
    assert updated.json()["role"] == "admin" and updated.json()["max_budget_in_team_exact"] == "7.25"
    removed = api.post("/team/member_delete", headers=ADMIN, json={"team_id": "members", "user_id": "bert"})
    assert [m["user_id"] for m in removed.json()["members_with_roles"]] == ["anna"]


def test_organizations_hold_teams_and_members(api: httpx.Client) -> None:
    org = api.post("/organization/new", headers=ADMIN, json={"organization_id": "acme", "organization_alias": "Acme",
                                                             "max_budget": 100}).json()
    assert org["organization_id"] == "acme" and org["max_budget_exact"] == "100"
    api.post("/organization/new", headers=ADMIN, json={"organization_id": "globex"})
    api.post("/organization/member_add", headers=ADMIN, json={"organization_id": "globex", "member": [
        {"user_id": "gina", "role": "internal_user"}]})
    assert api.post("/team/new", headers=ADMIN, json={"team_id": "acme-team", "organization_id": "acme"}).status_code == 200
    moved = api.post("/team/update", headers=ADMIN, json={"team_id": "acme-team", "organization_id": "globex"})
    assert moved.status_code == 409 and error(moved)["code"] == "organization_mismatch"
    other_org = api.post("/team/member_add", headers=ADMIN, json={"team_id": "acme-team", "member": {"user_id": "gina"}})
    assert other_org.status_code == 400 and error(other_org)["code"] == "organization_mismatch"
    info = api.get("/organization/info", params={"organization_id": "acme"}, headers=ADMIN).json()
    assert [team["team_id"] for team in info["teams"]] == ["acme-team"]
    assert {o["organization_id"] for o in api.get("/organization/list", headers=ADMIN).json()} >= {"acme", "globex"}
    in_use = api.request("DELETE", "/organization/delete", headers=ADMIN, json={"organization_ids": ["acme"]})
    assert in_use.status_code == 409
    api.post("/team/delete", headers=ADMIN, json={"team_ids": ["acme-team"]})
    assert api.request("DELETE", "/organization/delete", headers=ADMIN,
                       json={"organization_ids": ["acme"]}).status_code == 200
    removed = api.request("DELETE", "/organization/member_delete", headers=ADMIN,
                          json={"organization_id": "globex", "user_id": "gina"})
    assert removed.json()["members"] == []


def test_end_users_become_customers_on_first_use_and_can_be_blocked(server: LiveServer, api: httpx.Client) -> None:
    api.post("/budget/new", headers=ADMIN, json={"budget_id": "end-users", "max_budget": 1, "rpm_limit": 60})
    key = new_key(api)["key"]
    chat(server, key, user="carol")
    found = eventually(lambda: (got := api.get("/customer/info", params={"end_user_id": "carol"}, headers=ADMIN))
                       .status_code == 200 and got.json()["spend"] and got.json())
    assert found["budget_id"] == "end-users"

    assert api.post("/customer/block", headers=ADMIN, json={"user_ids": ["carol"]}).status_code == 200
    with pytest.raises(openai.PermissionDeniedError) as refused:
        chat(server, key, user="carol")
    assert refused.value.code == "customer_blocked"
    header = httpx.post(server.base_url + "/v1/chat/completions", json={"model": "m1", "messages": [
        {"role": "user", "content": "hi"}]}, headers={"Authorization": f"Bearer {key}", "x-litellm-end-user-id": "carol"})
    assert header.status_code == 403
    api.post("/customer/unblock", headers=ADMIN, json={"user_ids": ["carol"]})
    assert chat(server, key, user="carol").id
    made = api.post("/customer/new", headers=ADMIN, json={"user_id": "dave", "alias": "Dave", "budget_id": "end-users"})
    assert made.status_code == 200 and made.json()["alias"] == "Dave"
    assert api.post("/customer/new", headers=ADMIN, json={"user_id": "dave"}).status_code == 409
    assert "dave" in [c["user_id"] for c in api.get("/customer/list", headers=ADMIN).json()]
    assert api.post("/customer/delete", headers=ADMIN, json={"user_ids": ["dave"]}).status_code == 200


def test_reusable_budgets(api: httpx.Client) -> None:
    made = api.post("/budget/new", headers=ADMIN, json={"budget_id": "small", "max_budget": "0.50",
                                                        "budget_duration": "30d", "tpm_limit": 1000})
    assert made.status_code == 200 and made.json()["max_budget_exact"] == "0.50"
    updated = api.post("/budget/update", headers=ADMIN, json={"budget_id": "small", "rpm_limit": 10})
    assert updated.json()["rpm_limit"] == 10 and updated.json()["tpm_limit"] == 1000
    assert api.post("/budget/info", headers=ADMIN, json={"budgets": ["small"]}).json()[0]["budget_id"] == "small"
    assert "small" in [b["budget_id"] for b in api.get("/budget/list", headers=ADMIN).json()]
    api.post("/customer/new", headers=ADMIN, json={"user_id": "budgeted", "budget_id": "small"})
    in_use = api.post("/budget/delete", headers=ADMIN, json={"id": "small"})
    assert in_use.status_code == 409 and "budgeted" in error(in_use)["message"]
    api.post("/customer/update", headers=ADMIN, json={"user_id": "budgeted", "budget_id": "end-users"})
    assert api.post("/budget/delete", headers=ADMIN, json={"id": "small"}).status_code == 200
    assert api.post("/budget/info", headers=ADMIN, json={"budgets": ["small"]}).status_code == 404


def test_without_a_master_key_management_says_what_is_missing(tmp_path: Path) -> None:
    with LiveServer({"model_list": MODELS}, tmp_path) as live:
        response = httpx.post(live.base_url + "/key/generate", json={})
    assert response.status_code == 400 and error(response)["code"] == "no_master_key"
