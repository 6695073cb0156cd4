"""No secret (a virtual key, the master key, a provider key) in the logs, the ledger, the views or
any response but the one that creates a key: checked by scanning them all after a busy run."""
from __future__ import annotations

from pathlib import Path

import httpx

from tests.fake_openai import FakeOpenAI
from tests.live_server import LiveServer

MASTER = "sk-master-never-shown-0042"
PROVIDER_KEY = "sk-provider-never-shown-0042"
ADMIN = {"Authorization": f"Bearer {MASTER}"}


def test_secrets_appear_only_in_the_response_that_creates_them(tmp_path: Path) -> None:
    upstream = FakeOpenAI(api_key=PROVIDER_KEY).start()
    config = {"model_list": [{"model_name": "gpt", "litellm_params": {
        "model": "openai/gpt-4o-mini", "api_base": upstream.base_url, "api_key": "os.environ/UPSTREAM_KEY"}}],
        "general_settings": {"master_key": MASTER}}
    env = {"UPSTREAM_KEY": PROVIDER_KEY, "DATABASE_URL": f"sqlite:///{tmp_path / 'ledger.db'}"}
    issued: list[str] = []
    answers: list[str] = []
    try:
        with LiveServer(config, tmp_path, env=env, args=["--log-level", "debug"]) as live:
            with httpx.Client(base_url=live.base_url, timeout=30) as api:
                issued, answers = busy_run(api)
    finally:
        upstream.stop()

    secrets = [MASTER, PROVIDER_KEY, *issued]
    # Everything the run wrote (the ledger and views, with SQLite's journals, and the log), not the config.
    stored = b"".join(path.read_bytes() for path in tmp_path.iterdir() if path.is_file() and path.suffix != ".yaml")
    for secret in secrets:
        assert secret.encode() not in stored, "a secret is in the ledger, the views or the log"
        assert not any(secret in answer for answer in answers), "a secret is in a response"
    assert b"ledger.db" in b"".join(path.name.encode() for path in tmp_path.iterdir())  # the scan saw the ledger


def busy_run(api: httpx.Client) -> tuple[list[str], list[str]]:
    """Keys made, used, refused, regenerated, blocked and deleted; returns the secrets issued and
    every other response's text."""
    answers: list[str] = []

    def ask(method: str, path: str, key: str = MASTER, **kwargs: object) -> httpx.Response:
        response = api.request(method, path, headers={"Authorization": f"Bearer {key}"}, **kwargs)
        answers.append(response.text + str(response.headers))
        return response

    chat = {"model": "gpt", "messages": [{"role": "user", "content": "hi"}]}
    team = ask("POST", "/team/new", json={"team_id": "t", "rpm_limit": 100})
    assert team.status_code == 200
    first = api.post("/key/generate", headers=ADMIN, json={"team_id": "t", "key_alias": "first"}).json()["key"]
    user = api.post("/user/new", headers=ADMIN, json={"user_id": "u", "teams": ["t"]}).json()["key"]
    regenerated = api.post("/key/regenerate", headers=ADMIN, json={"key": first}).json()["key"]
    for key in (regenerated, user, first, "sk-never-issued-0042"):
        ask("POST", "/v1/chat/completions", key, json=chat)
        ask("POST", "/v1/chat/completions", key, json={**chat, "stream": True})
        ask("POST", "/v1/chat/completions", key, json={**chat, "model": "nope"})
        ask("GET", "/key/info", key)
    for path in ("/key/list?return_full_object=true", "/team/info?team_id=t", "/user/info?user_id=u", "/spend/logs",
                 "/user/list", "/health/readiness", f"/key/info?key={user}"):
        ask("GET", path)
    ask("POST", "/key/block", json={"key": user})
    ask("POST", "/v1/chat/completions", user, json=chat)
    ask("POST", "/key/delete", json={"keys": [regenerated]})
    ask("POST", "/v1/chat/completions", regenerated, json=chat)
    return [first, user, regenerated], [answer for answer in answers if "never-issued" not in answer]
