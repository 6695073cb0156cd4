"""The gateway at the edge, for the validation and fuzz tests: `moneta serve` on loopback with
the built-in mock models (no network), a master key and a Postgres ledger (where a NUL in the
ledger stops the projections); and the error shapes every refusal must have."""
from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any, Iterator

import httpx

from tests import services
from tests.live_server import LiveServer

MASTER_KEY = "sk-edge-master-0123456789"
HEADERS = {"Authorization": f"Bearer {MASTER_KEY}"}
ANTHROPIC_PATHS = ("/v1/messages", "/v1/messages/count_tokens")
CONFIG = {
    "model_list": [
        {"model_name": "mock-chat", "litellm_params": {"model": "mock/mock-chat"}},
        {"model_name": "mock-embed", "litellm_params": {"model": "mock/mock-embed"}},
        {"model_name": "mock-whisper", "litellm_params": {"model": "mock/mock-whisper"}},
        {"model_name": "mock-broken", "litellm_params": {"model": "mock/mock-broken", "mock_failure_rate": 1,
                                                         "mock_failure_status": 500}},
    ],
    "router_settings": {"num_retries": 0},
    "general_settings": {"master_key": MASTER_KEY},
}


@contextlib.contextmanager
def edge_server(workdir: Path) -> Iterator[LiveServer]:
    url = services.create_database()
    try:
        with LiveServer(CONFIG, workdir, env={"DATABASE_URL": url}) as server:
            yield server
    finally:
        services.drop_database(url)


def shape_problems(path: str, response: httpx.Response) -> list[str]:
    """What is wrong with an answer: a 5xx, or a 4xx not in the route's error shape."""
    if response.status_code >= 500:
        return [f"HTTP {response.status_code}: {response.text[:300]}"]
    if response.status_code < 400:
        return []
    try:
        body = response.json()
    except ValueError:
        return [f"HTTP {response.status_code} without JSON: {response.text[:300]}"]
    anthropic = path in ANTHROPIC_PATHS
    problems = _anthropic_problems(body) if anthropic else _openai_problems(body)
    return [f"HTTP {response.status_code} {problem}: {body}" for problem in problems]


_OPENAI_ERROR = {"message": str, "type": str, "param": (str, type(None)), "code": (str, type(None))}


def _openai_problems(body: Any) -> list[str]:
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict) or set(body) != {"error"}:
        return ["not {'error': {...}}"]
    problems = [f"error.{name} missing or not {kinds}" for name, kinds in _OPENAI_ERROR.items()
                if name not in error or not isinstance(error[name], kinds)]
    return problems + ([] if error.get("message") else ["an empty message"])


def _anthropic_problems(body: Any) -> list[str]:
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict) or body.get("type") != "error":
        return ["not {'type': 'error', 'error': {...}}"]
    return [f"error.{name} is not a non-empty string" for name in ("type", "message")
            if not isinstance(error.get(name), str) or not error[name]]


def spend_log_rows(server: LiveServer, request_id: str, timeout: float = 20.0) -> list[dict[str, Any]]:
    """The request's row in `/spend/logs` once the projection has it ([] after `timeout`)."""
    deadline = time.monotonic() + timeout
    while True:
        response = httpx.get(server.base_url + "/spend/logs", params={"request_id": request_id}, headers=HEADERS)
        assert response.status_code == 200, response.text
        if response.json() or time.monotonic() > deadline:
            return response.json()
        time.sleep(0.1)
