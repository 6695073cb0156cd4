"""Who may do what: every kind of caller against the management, spend and call routes."""
from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from moneta.domain.redaction import key_hash
from tests.live_server import LiveServer
from tests.test_access_management import ADMIN, config

CHAT = {"model": "m1", "messages": [{"role": "user", "content": "hi"}]}


class World:
    """A proxy with two teams and a key for each kind of caller."""

    def __init__(self, api: httpx.Client) -> None:
        self.api = api
        post = self.admin
        post("/team/new", {"team_id": "alpha", "members_with_roles": [
            {"user_id": "alice", "role": "admin"}, {"user_id": "bob", "role": "user"}]})
        post("/team/new", {"team_id": "beta"})
        post("/team/new", {"team_id": "frozen"})
        post("/user/new", {"user_id": "victor", "user_role": "proxy_admin_viewer", "auto_create_key": False})
        self.keys = {
            "viewer": self.key(user_id="victor"),
            "team_admin": self.key(user_id="alice", team_id="alpha"),
            "team_member": self.key(user_id="bob", team_id="alpha"),
            "other_team": self.key(team_id="beta"),
            "expired": self.key(duration="1s"),
            "blocked": self.key(),
            "deleted": self.key(),
            "blocked_team": self.key(team_id="frozen"),
        }
        self.alpha_key = self.key(team_id="alpha")  # the key the others ask about
        post("/key/block", {"key": self.keys["blocked"]})
        post("/key/delete", {"keys": [self.keys["deleted"]]})
        post("/team/block", {"team_id": "frozen"})
        time.sleep(1.1)  # the 1 s key expires

    def admin(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = self.api.post(path, headers=ADMIN, json=body)
        assert response.status_code == 200, response.text
        return response.json()

    def key(self, **fields: Any) -> str:
        return self.admin("/key/generate", fields)["key"]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, World]]:
    with LiveServer(config(), tmp_path_factory.mktemp("authz")) as live:
        with httpx.Client(base_url=live.base_url, timeout=30) as api:
            yield live, World(api)


def attempt(api: httpx.Client, world: World, action: str, key: str) -> int:
    headers = {"Authorization": f"Bearer {key}"}
    requests = {
        "call a model": ("POST", "/v1/chat/completions", CHAT, None),
        "read a team key": ("GET", "/key/info", None, {"key": world.alpha_key}),
        "list keys": ("GET", "/key/list", None, None),
        "issue a team key": ("POST", "/key/generate", {"team_id": "alpha"}, None),
        "block a team key": ("POST", "/key/block", {"key": world.alpha_key}, None),
        "read the team": ("GET", "/team/info", None, {"team_id": "alpha"}),
        "rename the team": ("POST", "/team/update", {"team_id": "alpha", "team_alias": "Alpha"}, None),
        "add a team member": ("POST", "/team/member_add", {"team_id": "alpha", "member": {
            "user_id": f"new-{time.monotonic_ns()}"}}, None),
        "raise the team budget": ("POST", "/team/update", {"team_id": "alpha", "max_budget": 1000}, None),
        "create a team": ("POST", "/team/new", {}, None),
        "list users": ("GET", "/user/list", None, None),
        "read all spend": ("GET", "/spend/logs", None, None),
        "read the spend report": ("GET", "/global/spend/report", None, None),
        "read another key's spend": ("GET", "/spend/logs", None, {"api_key": world.alpha_key}),
    }
    method, path, body, params = requests[action]
    status = api.request(method, path, headers=headers, json=body, params=params).status_code
    if action == "block a team key" and status == 200:
        world.admin("/key/unblock", {"key": world.alpha_key})
    return status


ACTIONS = ("call a model", "read a team key", "list keys", "issue a team key", "block a team key", "read the team",
           "rename the team", "add a team member", "raise the team budget", "create a team", "list users",
           "read all spend", "read the spend report", "read another key's spend")
# One row per caller, one status per action, in ACTIONS' order.
MATRIX = {
    "master":       (200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200),
    "viewer":       (200, 200, 200, 403, 403, 200, 403, 403, 403, 403, 200, 200, 200, 200),
    "team_admin":   (200, 200, 200, 200, 200, 200, 200, 200, 403, 403, 403, 200, 403, 403),
    "team_member":  (200, 403, 200, 200, 403, 200, 403, 403, 403, 403, 403, 200, 403, 403),
    "other_team":   (200, 403, 200, 403, 403, 403, 403, 403, 403, 403, 403, 200, 403, 403),
    "expired":      (401,) * 14,
    "blocked":      (401,) * 14,
    "deleted":      (401,) * 14,
    "blocked_team": (403,) * 14,
}


@pytest.mark.parametrize("caller", list(MATRIX))
def test_the_authorization_matrix(world: tuple[LiveServer, World], caller: str) -> None:
    live, state = world
    key = "sk-master-test-1234" if caller == "master" else state.keys[caller]
    with httpx.Client(base_url=live.base_url, timeout=30) as api:
        seen = tuple(attempt(api, state, action, key) for action in ACTIONS)
    assert dict(zip(ACTIONS, seen)) == dict(zip(ACTIONS, MATRIX[caller]))


def test_a_key_sees_only_its_own_keys_and_spend(world: tuple[LiveServer, World]) -> None:
    live, state = world
    mine = state.keys["other_team"]
    with httpx.Client(base_url=live.base_url, timeout=30, headers={"Authorization": f"Bearer {mine}"}) as api:
        api.post("/v1/chat/completions", json=CHAT)
        listed = api.get("/key/list", params={"return_full_object": "true"}).json()
        logs = api.get("/spend/logs").json()
    assert [key["team_id"] for key in listed["keys"]] == ["beta"]
    assert logs and {row["api_key"] for row in logs} == {key_hash(mine)}


def test_an_open_gateway_still_refuses_nothing_but_management(tmp_path: Path) -> None:
    with LiveServer({"model_list": config()["model_list"]}, tmp_path) as live:
        assert httpx.post(live.base_url + "/v1/chat/completions", json=CHAT).status_code == 200
        assert httpx.get(live.base_url + "/spend/logs").status_code == 200
