"""`moneta.Router`, LiteLLM's Router: calls through a model group against wire-level fake upstreams,
recorded in the library's ledger; `route()`, `mark_failure()`, `cooldown_deployment()`; and the
admin's `POST /deployment/cooldown` over a real server."""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import time
from typing import Iterator

import httpx
import openai
import pytest

import moneta
from moneta.application.results import EmbeddingResponse, ModelResponse
from moneta.domain.deployment_health import DeploymentHealth, health_id
from moneta.domain.request_record import RequestRecord
from moneta.infrastructure.config_loader import ConfigError
from moneta.infrastructure.event_store import StoreLocation
from moneta.projections import deployment_health
from moneta.projections.runner import ProjectionRunner
from moneta.projections.view_store import ViewStore
from tests.fake_openai import FakeOpenAI
from tests.library_ledger import ledger_events, library_over
from tests.live_server import LiveServer

MESSAGES = [{"role": "user", "content": "Hello"}]


@pytest.fixture
def library(tmp_path, monkeypatch):
    container = library_over(tmp_path, monkeypatch)
    yield container
    container.close()


@pytest.fixture
def upstreams() -> Iterator[tuple[FakeOpenAI, FakeOpenAI]]:
    first, second = FakeOpenAI(reply="from a").start(), FakeOpenAI(reply="from b").start()
    yield first, second
    first.stop()
    second.stop()


def model_list(first: FakeOpenAI, second: FakeOpenAI) -> list[dict]:
    """Group `gpt` of dep-a (tried first: `order` 1) and dep-b; `emb`, one embedding deployment."""
    def deployment(fake: FakeOpenAI, name: str, model: str, **params) -> dict:
        return {"model_name": name, "model_info": {"id": params.pop("id")},
                "litellm_params": {"model": model, "api_base": fake.base_url, "api_key": fake.api_key, **params}}
    return [deployment(first, "gpt", "openai/gpt-4o-mini", id="dep-a", order=1),
            deployment(second, "gpt", "openai/gpt-4o-mini", id="dep-b", order=2),
            deployment(first, "emb", "openai/text-embedding-3-small", id="dep-emb")]


def cooldowns_of(library, deployment_id: str) -> list[DeploymentHealth.CooledDown]:
    health = health_id(deployment_id)
    return [e for e in ledger_events(library)
            if isinstance(e, DeploymentHealth.CooledDown) and e.originator_id == health]


def test_calls_answer_as_the_library_does_and_are_in_its_ledger(library, upstreams):
    router = moneta.Router(model_list=model_list(*upstreams), routing_strategy="simple-shuffle", num_retries=1)
    answer = router.completion(model="gpt", messages=MESSAGES)
    assert isinstance(answer, ModelResponse) and answer.choices[0].message.content == "from a"
    assert asyncio.run(router.acompletion(model="gpt", messages=MESSAGES)).choices[0].message.content == "from a"
    streamed = "".join(c.choices[0].delta.content or "" for c in
                       router.completion(model="gpt", messages=MESSAGES, stream=True) if c.choices)
    assert streamed == "from a"
    assert isinstance(router.embedding(model="emb", input="x"), EmbeddingResponse)
    assert asyncio.run(router.aembedding(model="emb", input="x")).data
    assert router.text_completion(model="gpt", prompt="Once").choices
    completed = [e for e in ledger_events(library) if isinstance(e, RequestRecord.Completed)]
    assert [e.deployment_id for e in completed] == ["dep-a"] * 3 + ["dep-emb"] * 2 + ["dep-a"]
    assert all(e.cost > 0 for e in completed)


def test_a_failing_deployment_is_cooled_down_and_the_other_serves(library, upstreams):
    first, second = upstreams
    first.fail_with = (500, {"message": "boom", "type": "server_error"})
    router = moneta.Router(model_list=model_list(first, second), num_retries=1, allowed_fails=0, cooldown_time=60)
    assert router.route("gpt")["id"] == "dep-a"
    for _ in range(3):
        assert router.completion(model="gpt", messages=MESSAGES).choices[0].message.content == "from b"
    assert len(first.requests) == 1  # cooled down after its one failure: never tried again
    assert router.route("gpt", MESSAGES) == {"id": "dep-b", "model_name": "gpt", "provider": "openai",
                                             "model": "openai/gpt-4o-mini", "reason": "only candidate"}
    (cooled,) = cooldowns_of(library, "dep-a")
    assert (cooled.status_code, cooled.requested_by) == (500, "")


def test_mark_failure_counts_as_a_failed_call_under_the_same_policy(library, upstreams):
    router = moneta.Router(model_list=model_list(*upstreams), allowed_fails=2, cooldown_time=60)
    assert [router.mark_failure("dep-a", "InternalServerError") for _ in range(3)] == [False, False, True]
    assert router.route("gpt")["id"] == "dep-b"
    assert router.mark_failure("dep-b", moneta.RateLimitError("slow down", "openai", "gpt-4o-mini")) is True
    with pytest.raises(moneta.RateLimitError, match="all 2 are cooling down"):
        router.route("gpt")
    with pytest.raises(moneta.RateLimitError):
        router.completion(model="gpt", messages=MESSAGES)
    assert [c.reason for c in cooldowns_of(library, "dep-b")] == ["RateLimitError: more than 0 in 60s"]
    with pytest.raises(moneta.BadRequestError, match="one of BadRequestError"):
        router.mark_failure("dep-a", "Oops")
    with pytest.raises(moneta.NotFoundError):
        router.mark_failure("dep-x", "InternalServerError")


def test_a_manual_cooldown_names_who_asked_and_is_avoided_until_it_ends(library, upstreams, tmp_path):
    router = moneta.Router(model_list=model_list(*upstreams))
    until = router.cooldown_deployment("dep-a", 60, "maintenance window", "alice")
    assert until == pytest.approx(time.time() + 60, abs=2)
    assert router.route("gpt")["id"] == "dep-b"
    assert router.completion(model="gpt", messages=MESSAGES).choices[0].message.content == "from b"
    (cooled,) = cooldowns_of(library, "dep-a")
    assert (cooled.requested_by, cooled.reason, cooled.error_type) == ("alice", "maintenance window", "manual")
    store = ViewStore.connect(sqlite_path=library.location.sqlite_path)
    try:
        runner = ProjectionRunner(library.event_store, store, name="health", views=(deployment_health,))
        runner.create_tables()
        runner.catch_up()
        row = deployment_health.deployment_health(store)["dep-a"]
    finally:
        store.close()
    assert row["cooldown_count"] == 1 and row["last_cooldown_reason"] == "maintenance window"
    assert row["cooling_until"].timestamp() == pytest.approx(until)
    router.cooldown_deployment("dep-a", 0.2, "short", "alice")
    time.sleep(0.3)
    assert router.completion(model="gpt", messages=MESSAGES).choices[0].message.content == "from a"
    assert any(isinstance(e, DeploymentHealth.Recovered) for e in ledger_events(library))
    for bad in (0, -1, "10", float("nan"), 86_401):
        with pytest.raises(moneta.BadRequestError, match="seconds"):
            router.cooldown_deployment("dep-a", bad, "", "alice")
    with pytest.raises(moneta.NotFoundError):
        router.cooldown_deployment("dep-x", 10, "", "alice")


def test_settings_are_checked_as_the_config_files_are(library):
    with pytest.raises(ConfigError, match="router_settings.routing_strategy: 'fastest' is not one of"):
        moneta.Router(model_list=[], routing_strategy="fastest")
    with pytest.raises(ConfigError, match="model_list\\[0\\].litellm_params.model is required"):
        moneta.Router(model_list=[{"model_name": "x", "litellm_params": {}}])
    router = moneta.Router(model_list=[{"model_name": "m", "litellm_params": {"model": "mock/demo"}}])
    with pytest.raises(moneta.UnsupportedParamsError, match="api_key cannot be set per call"):
        router.completion(model="m", messages=MESSAGES, api_key="sk-other")


SCRIPT = textwrap.dedent("""
    import json
    import moneta
    from moneta.infrastructure.event_store import StoreLocation

    router = moneta.Router(model_list=[{"model_name": "m", "litellm_params": {"model": "mock/demo"}}])
    router.completion(model="m", messages=[{"role": "user", "content": "hi"}])
    moneta.completion(model="mock/demo", messages=[{"role": "user", "content": "hi"}])
    ledger = StoreLocation.from_url(None).open()
    print(json.dumps(ledger.recorder.max_notification_id()))
""")


def test_a_router_records_in_the_librarys_default_ledger(tmp_path):
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120,
                            cwd=tmp_path, env={k: v for k, v in os.environ.items()
                                               if k not in ("DATABASE_URL", "MONETA_CONFIG", "REDIS_URL")})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == 4  # two calls, each Admitted + Completed, in ./moneta.db


# -- the admin route ---------------------------------------------------------------------------------

MASTER = "sk-master-test"


def test_the_admin_route_cools_a_deployment_down_in_the_servers_ledger(tmp_path):
    ledger = tmp_path / "ledger.db"
    config = {"model_list": [
        {"model_name": "g", "model_info": {"id": "dep-1"}, "litellm_params": {"model": "mock/one"}},
        {"model_name": "g", "model_info": {"id": "dep-2"}, "litellm_params": {"model": "mock/two"}}],
        "general_settings": {"master_key": MASTER, "database_url": f"sqlite:///{ledger}"}}
    admin = {"Authorization": f"Bearer {MASTER}"}
    with LiveServer(config, tmp_path) as server:
        def cool(headers, **body):
            return httpx.post(server.base_url + "/deployment/cooldown", json=body, headers=headers, timeout=10)

        virtual = httpx.post(server.base_url + "/key/generate", json={}, headers=admin, timeout=10).json()["key"]
        denied = cool({"Authorization": f"Bearer {virtual}"}, deployment_id="dep-1", seconds=60, reason="x")
        assert denied.status_code == 403 and denied.json()["error"]["type"] == "permission_error"
        assert cool(admin, deployment_id="dep-x", seconds=60).status_code == 404
        for bad in ({"seconds": "soon"}, {"seconds": 0}, {"seconds": 60, "colour": "red"}, {"seconds": 60, "reason": 1}):
            refused = cool(admin, deployment_id="dep-1", **bad)
            assert refused.status_code == 400, refused.text
        assert cool(admin, seconds=60).status_code == 400  # no deployment named
        done = cool(admin, model_id="dep-1", seconds=60, reason="provider incident")
        assert done.status_code == 200, done.text
        assert done.json()["requested_by"] == "master_key" and done.json()["deployment_id"] == "dep-1"
        client = openai.OpenAI(base_url=server.base_url + "/v1", api_key=MASTER)
        for _ in range(5):
            client.chat.completions.create(model="g", messages=MESSAGES)
        health = httpx.get(server.base_url + "/health", headers=admin, timeout=10).json()
        assert [e["model_id"] for e in health["unhealthy_endpoints"]] == ["dep-1"]
    app = StoreLocation.from_url(f"sqlite:///{ledger}").open()
    events = [app.mapper.to_domain_event(n) for n in app.recorder.select_notifications(start=1, limit=10_000)]
    (cooled,) = [e for e in events if isinstance(e, DeploymentHealth.CooledDown)]
    assert (cooled.requested_by, cooled.reason) == ("master_key", "provider incident")
    served = {e.deployment_id for e in events if isinstance(e, RequestRecord.Completed)}
    assert served == {"dep-2"}
