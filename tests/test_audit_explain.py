"""Explaining one call from its ledger stream: `GET /audit/requests/{id}` and `moneta audit explain`,
after a real call through the proxy (a virtual key with a budget and a rate limit, a failed attempt,
then the fallback) and a real refusal."""
from __future__ import annotations

import asyncio
import functools
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest

from moneta.api.cli import main
from moneta.domain.access import entity_id
from tests.fake_openai import FakeOpenAI
from tests.live_server import LiveServer
from tests.webhook_receiver import WebhookReceiver

MASTER = "sk-master-audit-explain-0001"
ADMIN = {"Authorization": f"Bearer {MASTER}"}
DOWN = (500, {"message": "upstream is down", "type": "server_error", "param": None, "code": None})


def deployment(group: str, upstream: FakeOpenAI, deployment_id: str) -> dict[str, Any]:
    return {"model_name": group, "model_info": {"id": deployment_id}, "litellm_params": {
        "model": "openai/gpt-4o-mini", "api_base": upstream.base_url, "api_key": "os.environ/UPSTREAM_KEY"}}


@dataclass
class Audited:
    server: LiveServer
    upstream: FakeOpenAI
    key: dict[str, Any]  # the caller's key, as /key/generate answered
    request_id: str  # a call that failed over and completed, crossing the key's soft budget
    later_id: str  # a call after it, on the same key
    denied_id: str  # a call refused by its budget
    viewer: str  # a proxy admin viewer's key
    env: dict[str, str]

    def get(self, request_id: str, key: str = MASTER) -> httpx.Response:
        return httpx.get(f"{self.server.base_url}/audit/requests/{request_id}",
                         headers={"Authorization": f"Bearer {key}"}, timeout=30)

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        """`moneta audit explain ...` as a process of its own."""
        return subprocess.run([sys.executable, "-m", "moneta.api.cli", "audit", "explain", *args, "--config",
                               str(self.server.config_path)], capture_output=True, text=True, timeout=60,
                              env=self.env)


def explain_command(audited: Audited, *args: str, capsys: pytest.CaptureFixture[str],
                    monkeypatch: pytest.MonkeyPatch) -> tuple[int, str, str]:
    """`moneta audit explain ...` in this process (a process of its own takes seconds to start):
    its exit status, output and errors."""
    for name in ("DATABASE_URL", "UPSTREAM_KEY"):  # what the server's config reads
        monkeypatch.setenv(name, audited.env[name])
    capsys.readouterr()
    try:
        main(["audit", "explain", *args, "--config", str(audited.server.config_path)])
        status = 0
    except SystemExit as exit_:
        status = exit_.code if isinstance(exit_.code, int) else 1
        if isinstance(exit_.code, str):
            print(exit_.code, file=sys.stderr)
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture(scope="module")
def audited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Audited]:
    workdir = tmp_path_factory.mktemp("explain")
    down, up = FakeOpenAI(fail_with=DOWN).start(), FakeOpenAI().start()
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    receiver = asyncio.run_coroutine_threadsafe(WebhookReceiver().start(), loop).result(10)
    config = {
        "model_list": [deployment("flaky", down, "flaky-1"), deployment("steady", up, "steady-1")],
        "router_settings": {"fallbacks": [{"flaky": ["steady"]}], "num_retries": 0},
        "general_settings": {"master_key": MASTER, "alerting": ["webhook"], "alerting_webhook_url": receiver.url,
                             "alerting_webhook_secret": "whsec-explain-test"},
    }
    env = {**os.environ, "UPSTREAM_KEY": up.api_key, "DATABASE_URL": f"sqlite:///{workdir / 'ledger.db'}"}
    try:
        with LiveServer(config, workdir, env=env) as server:
            yield _calls(server, up, receiver, env)
    finally:
        asyncio.run_coroutine_threadsafe(receiver.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        down.stop()
        up.stop()


def _calls(server: LiveServer, upstream: FakeOpenAI, receiver: WebhookReceiver, env: dict[str, str]) -> Audited:
    def admin(path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = httpx.post(server.base_url + path, headers=ADMIN, json=body, timeout=30)
        assert response.status_code == 200, response.text
        return response.json()

    admin("/organization/new", {"organization_id": "acme"})
    admin("/team/new", {"team_id": "auditors", "organization_id": "acme"})
    admin("/user/new", {"user_id": "alice", "user_role": "internal_user", "auto_create_key": False})
    admin("/user/new", {"user_id": "victor", "user_role": "proxy_admin_viewer", "auto_create_key": False})
    key = admin("/key/generate", {"user_id": "alice", "team_id": "auditors", "key_alias": "alice-laptop",
                                  "max_budget": "0.001", "soft_budget": "0.000001", "rpm_limit": 100})
    client = openai.OpenAI(base_url=server.base_url + "/v1", api_key=key["key"], max_retries=0)
    hi = [{"role": "user", "content": "hi"}]
    first = client.chat.completions.with_raw_response.create(model="flaky", messages=hi, max_tokens=100_000,
                                                             user="customer-7")
    later = client.chat.completions.with_raw_response.create(model="steady", messages=hi, max_tokens=10)
    broke = admin("/key/generate", {"key_alias": "broke", "max_budget": "0.000000001"})
    with pytest.raises(openai.RateLimitError) as refused:
        openai.OpenAI(base_url=server.base_url + "/v1", api_key=broke["key"], max_retries=0).chat.completions.create(
            model="steady", messages=hi)
    deadline = time.monotonic() + 20
    while not receiver.received:  # the soft budget's alert, delivered by the read side
        assert time.monotonic() < deadline, "the soft budget alert was not delivered"
        time.sleep(0.1)
    return Audited(server, upstream, key, first.headers["x-request-id"], later.headers["x-request-id"],
                   refused.value.response.headers["x-request-id"],
                   admin("/key/generate", {"user_id": "victor"})["key"], env)


def explained(audited: Audited, request_id: str) -> dict[str, Any]:
    """The explanation once the alert's delivery is in the ledger (the read side appends it)."""
    deadline = time.monotonic() + 10
    while True:
        response = audited.get(request_id)
        assert response.status_code == 200, response.text
        body = response.json()
        alerts = body["related"]["budget_alerts"]
        if request_id != audited.request_id or (alerts and len(alerts[0]["events"]) == 2):
            return body
        assert time.monotonic() < deadline, body["related"]
        time.sleep(0.1)


def test_a_call_is_explained_from_its_stream(audited: Audited) -> None:
    body = explained(audited, audited.request_id)
    key = audited.key
    assert body["request_id"] == audited.request_id
    assert body["caller"] == {"kind": "virtual_key", "key_hash": key["token"], "key_id": key["key_id"],
                              "key_alias": "alice-laptop", "team_id": "auditors", "user_id": "alice",
                              "org_id": "acme", "end_user": "customer-7"}
    assert key["key"] not in json.dumps(body)  # the key itself is never in the ledger

    decision = body["decision"]
    assert (decision["outcome"], decision["model_group"], decision["call_type"]) == ("admitted", "flaky", "chat")
    assert decision["route"] == {"deployment": "flaky-1", "reason": "only candidate"}
    assert decision["rate_limits"] == {"allowed": True, "scopes": [
        {"scope": f"key:{key['key_id']}", "requests": 0, "tokens": 0, "parallel": 0, "rpm": 100}]}
    budget = decision["budget"]
    (scope,) = budget["scopes"]
    assert (scope["scope"], scope["period"], scope["limit"], scope["soft"], scope["spent"], scope["headroom"]) \
        == (f"key:{key['key_id']}", "lifetime", "0.001000000", "0.000001000", "0.000000000", "0.001000000")
    assert budget["allowed"] and budget["reserved"] == "0.001000000"  # all that was left: the output was capped
    capped = decision["max_tokens_capped_to"]
    assert 0 < capped < 100_000 and audited.upstream.requests[0].body["max_tokens"] == capped

    first, second = body["attempts"]
    assert (first["deployment_id"], first["outcome"], first["status_code"], first["reason"]) == (
        "flaky-1", "failed", 500, "openai error: upstream is down")
    assert (second["attempt"], second["deployment_id"], second["outcome"]) == (2, "steady-1", "succeeded")

    settled = body["settlement"]
    assert (settled["outcome"], settled["deployment_id"], settled["prompt_tokens"], settled["completion_tokens"],
            settled["total_tokens"]) == ("completed", "steady-1", 11, 7, 18)
    assert Decimal(settled["cost_usd_exact"]) == Decimal("0.00000585")  # gpt-4o-mini: 11 x $0.15/M + 7 x $0.6/M
    assert settled["price_source"].startswith("genai-prices") and settled["overruns"] == []
    assert Decimal(str(settled["askii"])) == Decimal("0.00585") and Decimal(str(settled["askii_rate"])) == 1000

    assert [(e["type"], e["version"]) for e in body["events"]] == [
        ("RequestRecord.Admitted", 1), ("RequestRecord.AttemptFailed", 2), ("RequestRecord.Completed", 3)]
    assert body["events"][0]["fields"]["principal"]["key_id"] == key["key_id"]

    (alert,) = body["related"]["budget_alerts"]
    raised, delivered = alert["events"]
    assert alert["aggregate"] == "BudgetAlert" and raised["type"] == "BudgetAlert.Raised"
    assert (raised["fields"]["request_id"], raised["fields"]["kind"]) == (audited.request_id, "soft_budget")
    assert delivered["type"] == "BudgetAlert.Delivered" and delivered["fields"]["status"] == 200


def test_an_alert_belongs_to_the_call_that_crossed_it(audited: Audited) -> None:
    body = explained(audited, audited.later_id)
    assert body["decision"]["budget"]["scopes"][0]["spent"] == "0.000005850"  # the first call's cost, settled
    assert body["decision"]["max_tokens_capped_to"] is None
    assert [a["outcome"] for a in body["attempts"]] == ["succeeded"]
    assert body["related"] == {"budget_alerts": [], "lago_usage": []}  # no alert crossed, not billed through Lago


def test_a_refusal_is_explained_with_the_numbers_that_refused_it(audited: Audited) -> None:
    body = explained(audited, audited.denied_id)
    decision = body["decision"]
    assert decision["outcome"] == "denied" and decision["refusal"]["code"] == "budget_exceeded"
    assert decision["refusal"]["status_code"] == 429 and body["caller"]["key_alias"] == "broke"
    (scope,) = decision["budget"]["scopes"]
    assert not decision["budget"]["allowed"] and decision["budget"]["refused_scope"] == scope["scope"]
    assert scope["headroom"] == "0.000000001"
    assert body["attempts"] == [] and body["settlement"]["outcome"] == "denied"
    assert [e["type"] for e in body["events"]] == ["RequestRecord.Denied"]


def test_the_command_line_prints_it_as_text_and_as_the_same_json(audited: Audited, capsys, monkeypatch) -> None:
    body = explained(audited, audited.request_id)
    as_json = audited.cli(audited.request_id, "--json")
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout) == body

    status, text, errors = explain_command(audited, audited.request_id, capsys=capsys, monkeypatch=monkeypatch)
    assert status == 0, errors
    lines = text.splitlines()
    assert lines[0] == f"Request {audited.request_id}"
    assert "  alias alice-laptop" in lines and "  end user (customer) customer-7" in lines
    assert f"    key:{audited.key['key_id']}: rpm 100 (seen 0)" in lines
    assert "  route: deployment flaky-1 (only candidate)" in lines
    assert any(line.startswith("  1. flaky-1 (openai/gpt-4o-mini) failed 500 server_error: openai error") for line in lines)
    assert any(line.startswith("  2. steady-1 (openai/gpt-4o-mini) succeeded") for line in lines)
    assert "  tokens: 11 prompt + 7 completion = 18" in lines
    assert any(line.startswith("  cost: $0.00000585, 0.005850 askii at 1000 askii per USD (price: genai-prices") for line in lines)
    assert any(line.startswith("  budget_alerts: BudgetAlert ") for line in lines)
    assert audited.key["key"] not in text


def test_an_unknown_id_is_a_404_and_a_malformed_one_a_400(audited: Audited, capsys, monkeypatch) -> None:
    unknown = str(uuid.uuid4())
    missing = audited.get(unknown)
    assert missing.status_code == 404
    assert missing.json() == {"error": {"message": f"No request {unknown} in the ledger.", "type": "invalid_request_error",
                                        "param": "request_id", "code": "request_not_found"}}
    malformed = audited.get("not-a-uuid")
    assert malformed.status_code == 400
    assert (malformed.json()["error"]["param"], malformed.json()["error"]["code"]) == ("request_id", "invalid_request_id")
    assert audited.get(str(entity_id("team", "auditors"))).status_code == 404  # a stream, but not a request's

    command = functools.partial(explain_command, audited, capsys=capsys, monkeypatch=monkeypatch)
    assert command(unknown) == (1, "", f"moneta: no request {unknown} in the ledger\n")
    assert command("not-a-uuid")[0] == 2


def test_a_viewer_may_read_an_internal_user_may_not(audited: Audited) -> None:
    assert audited.get(audited.request_id, audited.viewer).status_code == 200
    refused = audited.get(audited.request_id, audited.key["key"])
    assert refused.status_code == 403 and refused.json()["error"]["type"] == "permission_error"
    assert audited.get(audited.request_id, "sk-nobody").status_code == 401
