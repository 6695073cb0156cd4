"""A fake of Ollama's native API: /api/chat (JSON or NDJSON stream) and /api/embed."""
from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from tests.providers.fakes.server import FakeServer, Seen, json_response, stream_lines

FINAL = {"model": "llama3.2", "created_at": "2025-01-01T00:00:02Z", "done": True, "done_reason": "stop",
         "total_duration": 4883583458, "load_duration": 1334875, "prompt_eval_count": 26,
         "prompt_eval_duration": 342546000, "eval_count": 282, "eval_duration": 4535599000}

ANSWER = {**FINAL, "message": {"role": "assistant", "content": "The sky is blue because of Rayleigh scattering."}}

STREAM = [
    {"model": "llama3.2", "created_at": "2025-01-01T00:00:00Z", "message": {"role": "assistant", "content": "The"},
     "done": False},
    {"model": "llama3.2", "created_at": "2025-01-01T00:00:01Z",
     "message": {"role": "assistant", "content": "", "tool_calls": [
         {"function": {"name": "get_weather", "arguments": {"city": "Toronto"}}}]}, "done": False},
    {**FINAL, "message": {"role": "assistant", "content": ""}},
]


class FakeOllama(FakeServer):
    def __init__(self) -> None:
        super().__init__()
        self.answer: dict[str, Any] = ANSWER
        self.stream: list[dict[str, Any]] = STREAM
        self.route("POST", "/api/chat", self._chat)
        self.route("POST", "/api/embed", self._embed)

    async def _chat(self, seen: Seen, request: web.Request) -> web.StreamResponse:
        messages = seen.body.get("messages")
        if not seen.body.get("model") or not isinstance(messages, list):
            return json_response({"error": "model and messages are required"}, 400)
        if any(not isinstance(m.get("content"), str) for m in messages):
            return json_response({"error": "json: cannot unmarshal array into Go struct field .content"}, 400)
        if seen.body.get("stream", True):  # Ollama streams unless told not to
            lines = [orjson.dumps(line) + b"\n" for line in self.stream]
            return await stream_lines(request, lines, "application/x-ndjson")
        return json_response(self.answer)

    async def _embed(self, seen: Seen, request: web.Request) -> web.Response:
        inputs = seen.body["input"] if isinstance(seen.body["input"], list) else [seen.body["input"]]
        return json_response({"model": seen.body["model"], "embeddings": [[0.01, -0.02] for _ in inputs],
                              "total_duration": 14143917, "load_duration": 1019500, "prompt_eval_count": 8})
