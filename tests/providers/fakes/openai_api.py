"""A fake of OpenAI's API as OpenAI-compatible providers and Azure OpenAI serve it, plus the
Microsoft Entra ID token endpoint; checks auth and answers with OpenAI's documented shapes."""
from __future__ import annotations

from typing import Any

from aiohttp import web

from tests.providers.fakes.server import (
    FakeServer,
    Seen,
    json_response,
    sse,
    stream_lines,
)

ENTRA_TOKEN = "entra-access-token"

COMPLETION = {
    "id": "chatcmpl-abc123", "object": "chat.completion", "created": 1741569952, "model": "gpt-4.1-2025-04-14",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello!"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 19, "completion_tokens": 10, "total_tokens": 29},
}


def stream_chunks() -> list[dict[str, Any]]:
    base = {"id": "chatcmpl-abc123", "object": "chat.completion.chunk", "created": 1694268190, "model": "gpt-4.1"}
    return [
        {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]},
        {**base, "choices": [{"index": 0, "delta": {"content": "Hello"}, "finish_reason": None}]},
        {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        {**base, "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10}},
    ]


def openai_error(message: str, kind: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


class FakeOpenAICompatible(FakeServer):
    """OpenAI-style routes under /v1 (bearer auth) and Azure's under /openai/deployments/{name}
    (an `api-key` header or an Entra bearer token, and an `api-version` query)."""

    def __init__(self, api_key: str) -> None:
        super().__init__()
        self.api_key = api_key
        self.token_requests = 0
        for path, handler in (("/chat/completions", self._chat), ("/embeddings", self._embeddings),
                              ("/audio/transcriptions", self._transcription)):
            self.route("POST", "/v1" + path, self._checked(handler, azure=False))
            self.route("POST", "/openai/deployments/{deployment}" + path, self._checked(handler, azure=True))
        self.route("POST", "/{tenant}/oauth2/v2.0/token", self._entra_token)

    def _checked(self, handler: Any, azure: bool) -> Any:
        async def serve(seen: Seen, request: web.Request) -> web.StreamResponse:
            if not self._authorized(seen, azure):
                return json_response(openai_error("Incorrect API key provided.", "invalid_request_error",
                                                  "invalid_api_key"), 401)
            if azure and "api-version" not in seen.query:
                return json_response({"error": {"code": "404", "message": "Resource not found"}}, 404)
            return await handler(seen, request)
        return serve

    def _authorized(self, seen: Seen, azure: bool) -> bool:
        bearer = seen.headers.get("authorization")
        if azure:
            return seen.headers.get("api-key") == self.api_key or bearer == f"Bearer {ENTRA_TOKEN}"
        return bearer == f"Bearer {self.api_key}"

    async def _chat(self, seen: Seen, request: web.Request) -> web.StreamResponse:
        if not seen.body.get("messages"):
            return json_response(openai_error("'messages' is required", "invalid_request_error"), 400)
        if seen.body.get("stream"):
            return await stream_lines(request, sse([(None, c) for c in stream_chunks()]) + [b"data: [DONE]\n\n"],
                                      "text/event-stream")
        return json_response(COMPLETION)

    async def _embeddings(self, seen: Seen, request: web.Request) -> web.Response:
        inputs = seen.body["input"] if isinstance(seen.body["input"], list) else [seen.body["input"]]
        return json_response({"object": "list", "model": seen.body["model"],
                              "data": [{"object": "embedding", "index": i, "embedding": [0.0023, -0.0093]}
                                       for i, _ in enumerate(inputs)],
                              "usage": {"prompt_tokens": 8, "total_tokens": 8}})

    async def _transcription(self, seen: Seen, request: web.Request) -> web.Response:
        return json_response({"task": "transcribe", "language": "english", "duration": 8.47,
                              "text": "The quick brown fox.", "segments": []})

    async def _entra_token(self, seen: Seen, request: web.Request) -> web.Response:
        self.token_requests += 1
        form = seen.body
        if (form.get("grant_type") != "client_credentials" or form.get("client_secret") != "s3cret"
                or form.get("scope") != "https://cognitiveservices.azure.com/.default"):
            return json_response({"error": "invalid_client", "error_description": "AADSTS7000215"}, 401)
        return json_response({"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599,
                              "access_token": ENTRA_TOKEN})
