"""Readiness reports the ledger and, when configured, Redis."""
from __future__ import annotations

import httpx

from tests.live_server import LiveServer

CONFIG = {"model_list": [{"model_name": "m", "litellm_params": {"model": "mock/m"}}]}


def test_readiness_checks_redis_when_configured(tmp_path, redis_url, sqlite_url):
    with LiveServer(CONFIG, tmp_path, env={"DATABASE_URL": sqlite_url, "REDIS_URL": redis_url}) as server:
        body = httpx.get(server.base_url + "/health/readiness").json()
        assert body["status"] == "healthy" and body["cache"] == "redis" and body["db"] == "connected"


def test_readiness_is_503_when_redis_is_unreachable(tmp_path, sqlite_url):
    env = {"DATABASE_URL": sqlite_url, "REDIS_URL": "redis://127.0.0.1:1/0"}
    with LiveServer(CONFIG, tmp_path, env=env) as server:
        response = httpx.get(server.base_url + "/health/readiness")
        assert response.status_code == 503 and response.json()["cache"] == "unreachable"
        assert httpx.get(server.base_url + "/health/liveliness").status_code == 200
