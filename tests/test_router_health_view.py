"""The deployment health projection and `GET /health` in LiteLLM's shape."""
from __future__ import annotations

import uuid
from typing import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from moneta.api.routes.deployment_health import router as health_router
from moneta.bootstrap import Container, build
from moneta.application.gateway import Caller
from moneta.domain.errors import GatewayError
from moneta.infrastructure.config_loader import parse_config
from moneta.projections import deployment_health
from moneta.projections.queries import SpendQueries
from moneta.projections.runner import ProjectionRunner
from moneta.projections.view_store import ViewStore

MODELS = [
    {"model_name": "g", "model_info": {"id": "steady"}, "litellm_params": {"model": "mock/steady", "order": 2}},
    {"model_name": "g", "model_info": {"id": "flaky"},
     "litellm_params": {"model": "mock/flaky", "order": 1, "mock_failure_rate": 1, "mock_failure_status": 503}},
    {"model_name": "other", "model_info": {"id": "lone"}, "litellm_params": {"model": "mock/lone"}},
]


@pytest.fixture
def container(sqlite_url: str) -> Iterator[Container]:
    config = parse_config({"model_list": MODELS, "router_settings": {"allowed_fails": 1, "cooldown_time": 60},
                           "general_settings": {"database_url": sqlite_url}}, {})
    container = build(config, {}, migrate=True)
    yield container
    container.close()


@pytest.fixture
def store(container: Container) -> Iterator[ViewStore]:
    store = ViewStore.connect(sqlite_path=container.location.sqlite_path)
    yield store
    store.close()


def project(container: Container, store: ViewStore) -> None:
    runner = ProjectionRunner(container.event_store, store, name="health", views=(deployment_health,))
    runner.create_tables()
    runner.catch_up()


async def test_health_view_and_route(container: Container, store: ViewStore):
    for _ in range(4):
        await container.gateway.chat(Caller(), {"model": "g", "messages": [{"role": "user", "content": "hi"}]},
                                     uuid.uuid4())
    with pytest.raises(GatewayError):
        await container.gateway.chat(Caller(), {"model": "missing", "messages": []}, uuid.uuid4())
    project(container, store)

    view = deployment_health.deployment_health(store)
    assert view["steady"]["success_count"] == 4 and view["steady"]["failure_count"] == 0
    assert view["steady"]["latency_p50_ms"] is not None
    flaky = view["flaky"]
    assert (flaky["success_count"], flaky["failure_count"], flaky["cooldown_count"]) == (0, 2, 1)
    assert flaky["model_group"] == "g" and flaky["cooling_until"] is not None
    assert flaky["last_status_code"] == 503 and "InternalServerError" in flaky["last_cooldown_reason"]

    app = FastAPI()
    app.include_router(health_router)
    app.state.container = container
    app.state.views = SpendQueries(store)
    body = TestClient(app).get("/health").json()
    assert (body["healthy_count"], body["unhealthy_count"]) == (2, 1)
    assert {e["model_id"] for e in body["healthy_endpoints"]} == {"steady", "lone"}
    (sick,) = body["unhealthy_endpoints"]
    assert sick["model"] == "mock/flaky" and sick["failure_count"] == 2 and "cooling down until" in sick["error"]
    only_other = TestClient(app).get("/health", params={"model": "other"}).json()
    assert only_other["healthy_count"] == 1 and only_other["unhealthy_count"] == 0


def test_percentiles_come_from_the_latency_buckets():
    counts = [(deployment_health.bucket_of(ms), 1) for ms in (10, 10, 10, 10, 10, 10, 10, 10, 10, 500)]
    counts = sorted({b: sum(n for bb, n in counts if bb == b) for b, _ in counts}.items())
    assert 10 <= deployment_health.percentile(counts, 50) < 12
    assert 500 <= deployment_health.percentile(counts, 99) < 600
    assert deployment_health.percentile([], 50) is None
