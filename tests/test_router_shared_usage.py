"""Two real server processes sharing one Redis: a deployment's rpm holds across both."""
from __future__ import annotations

import time
from typing import Any

import httpx

from tests.live_server import LiveServer

HELLO = {"messages": [{"role": "user", "content": "hello"}]}


def _config(redis_url: str, postgres_url: str) -> dict[str, Any]:
    def mock(group: str, name: str, **params: Any) -> dict[str, Any]:
        return {"model_name": group, "model_info": {"id": name}, "litellm_params": {"model": f"mock/{name}", **params}}

    return {"model_list": [mock("shared", "capped", rpm=2, order=1), mock("shared", "spare", order=2),
                           mock("solo", "alone", rpm=2)],
            "router_settings": {"redis_url": redis_url},
            "general_settings": {"database_url": postgres_url}}


def test_an_rpm_limit_is_exhausted_by_requests_spread_over_two_processes(tmp_path, redis_url, postgres_url):
    config = _config(redis_url, postgres_url)
    with LiveServer(config, tmp_path) as first, LiveServer(config, tmp_path) as second:
        if int(time.time()) % 60 > 50:  # keep the calls inside one minute
            time.sleep(11)

        def post(server: LiveServer, model: str) -> httpx.Response:
            return httpx.post(server.base_url + "/v1/chat/completions", json={"model": model, **HELLO}, timeout=30)

        served = [post(server, "shared").json()["model"] for server in (first, second, first, second)]
        assert served == ["capped", "capped", "spare", "spare"]  # per process, capped would have served all 4

        assert [post(server, "solo").status_code for server in (first, second)] == [200, 200]
        refused = post(first, "solo")
        assert refused.status_code == 429 and 0 < int(refused.headers["retry-after"]) <= 60
        assert "tpm/rpm limit" in refused.json()["error"]["message"]
