"""A fake of Anthropic's Messages API (POST /v1/messages), checking requests as the API reference
documents them and answering with its documented message, stream and error shapes."""
from __future__ import annotations

from itertools import pairwise
from typing import Any

from aiohttp import web

from tests.providers.fakes.server import (
    FakeServer,
    Seen,
    json_response,
    sse,
    stream_lines,
)

API_KEY = "sk-ant-test-key"

MESSAGE = {
    "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF", "type": "message", "role": "assistant",
    "model": "claude-sonnet-4-5-20250929",
    "content": [{"type": "text", "text": "Hi! My name is Claude."}],
    "stop_reason": "end_turn", "stop_sequence": None,
    "usage": {"input_tokens": 2095, "output_tokens": 503, "cache_creation_input_tokens": 0,
              "cache_read_input_tokens": 0},
}

TOOL_STREAM: list[tuple[str | None, Any]] = [
    ("message_start", {"type": "message_start", "message": {
        "id": "msg_014p7gG3wDgGV9EUtLvnow3U", "type": "message", "role": "assistant",
        "model": "claude-opus-4-1-20250805", "stop_sequence": None, "content": [], "stop_reason": None,
        "usage": {"input_tokens": 472, "output_tokens": 2, "cache_read_input_tokens": 100}}}),
    ("content_block_start", {"type": "content_block_start", "index": 0,
                             "content_block": {"type": "text", "text": ""}}),
    ("ping", {"type": "ping"}),
    ("content_block_delta", {"type": "content_block_delta", "index": 0,
                             "delta": {"type": "text_delta", "text": "Okay, let's check"}}),
    ("content_block_stop", {"type": "content_block_stop", "index": 0}),
    ("content_block_start", {"type": "content_block_start", "index": 1, "content_block": {
        "type": "tool_use", "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "name": "get_weather", "input": {}}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 1,
                             "delta": {"type": "input_json_delta", "partial_json": ""}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 1,
                             "delta": {"type": "input_json_delta", "partial_json": "{\"location\":"}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 1,
                             "delta": {"type": "input_json_delta", "partial_json": " \"San Francisco, CA\"}"}}),
    ("content_block_stop", {"type": "content_block_stop", "index": 1}),
    ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                       "usage": {"output_tokens": 89}}),
    ("message_stop", {"type": "message_stop"}),
]


def error_body(kind: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": message}}


def _problem(seen: Seen) -> tuple[int, dict[str, Any]] | None:
    if seen.headers.get("x-api-key") != API_KEY:
        return 401, error_body("authentication_error", "invalid x-api-key")
    if seen.headers.get("anthropic-version") != "2023-06-01":
        return 400, error_body("invalid_request_error", "anthropic-version: header is required")
    if not seen.headers.get("content-type", "").startswith("application/json"):
        return 400, error_body("invalid_request_error", "content-type must be application/json")
    body = seen.body
    for required in ("model", "max_tokens", "messages"):
        if required not in body:
            return 400, error_body("invalid_request_error", f"{required}: Field required")
    roles = [m["role"] for m in body["messages"]]
    if not roles or roles[0] != "user" or any(a == b for a, b in pairwise(roles)) or set(roles) - {
            "user", "assistant"}:
        return 400, error_body("invalid_request_error", "messages: roles must alternate, starting with user")
    return None


class FakeAnthropic(FakeServer):
    def __init__(self) -> None:
        super().__init__()
        self.message: dict[str, Any] = MESSAGE
        self.events: list[tuple[str | None, Any]] = TOOL_STREAM
        self.route("POST", "/v1/messages", self._messages)

    async def _messages(self, seen: Seen, request: web.Request) -> web.StreamResponse:
        problem = _problem(seen)
        if problem:
            return json_response(problem[1], problem[0])
        if seen.body.get("stream"):
            return await stream_lines(request, sse(self.events), "text/event-stream")
        return json_response(self.message)
