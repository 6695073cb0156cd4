"""Fakes of the Gemini API (generativelanguage v1beta, API key) and Vertex AI (v1, OAuth bearer
token from a service-account JWT exchanged at the credentials' token_uri; Gemini's generateContent
and text-embedding models' predict), checking requests as Google's references document them and
answering with their documented shapes."""
from __future__ import annotations

import base64
import hashlib
from typing import Any

import orjson
from aiohttp import web

from tests.providers.fakes.server import (
    FakeServer,
    Seen,
    json_response,
    sse,
    stream_lines,
)

API_KEY = "AIza-test-key"
ACCESS_TOKEN = "ya29.test-access-token"
CLIENT_EMAIL = "gateway@test-project.iam.gserviceaccount.com"
VERTEX_MAX_INSTANCES = 250
_DATA_FIELDS = {"text", "inlineData", "fileData", "functionCall", "functionResponse"}

RESPONSE = {
    "candidates": [{"content": {"parts": [{"text": "Hello there."}], "role": "model"},
                    "finishReason": "STOP", "index": 0}],
    "usageMetadata": {"promptTokenCount": 8, "candidatesTokenCount": 12, "totalTokenCount": 20},
    "modelVersion": "gemini-2.5-flash", "responseId": "resp-1",
}

STREAM = [
    {"candidates": [{"content": {"parts": [{"text": "The weather"}], "role": "model"}, "index": 0}],
     "usageMetadata": {"promptTokenCount": 9, "totalTokenCount": 9}, "modelVersion": "gemini-2.5-flash",
     "responseId": "resp-2"},
    {"candidates": [{"content": {"parts": [{"functionCall": {"name": "get_weather", "args": {"location": "Oslo"}}}],
                                 "role": "model"}, "finishReason": "STOP", "index": 0}],
     "usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": 5, "thoughtsTokenCount": 3,
                       "cachedContentTokenCount": 4, "totalTokenCount": 17},
     "modelVersion": "gemini-2.5-flash", "responseId": "resp-2"},
]


def google_error(code: int, status: str, message: str, reason: str | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    if reason:
        error["details"] = [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason,
                             "domain": "googleapis.com"}]
    return {"error": error}


def fake_signature(message: bytes) -> bytes:
    """What the tests' stand-in signer returns, so the fake token endpoint can check it."""
    return b"signed:" + hashlib.sha256(message).digest()


def _b64decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _content_problem(body: Any) -> str | None:
    contents = body.get("contents") if isinstance(body, dict) else None
    if not contents:
        return "contents is not specified"
    for content in contents:
        if content.get("role") not in ("user", "model"):
            return f"Please use a valid role: user, model (got {content.get('role')})"
        for part in content.get("parts") or [None]:
            if not part or len(_DATA_FIELDS & set(part)) != 1:
                return "each part must hold exactly one data field"
    return None


class FakeGoogle(FakeServer):
    """Serves both APIs; the Gemini API under /v1beta, Vertex AI under /v1, the token endpoint at /token."""

    def __init__(self) -> None:
        super().__init__()
        self.response: dict[str, Any] = RESPONSE
        self.stream: list[dict[str, Any]] = STREAM
        self.token_requests = 0
        self.route("POST", "/v1beta/models/{target}", self._gemini)
        self.route("POST", "/v1/projects/{project}/locations/{location}/publishers/google/models/{target}",
                   self._vertex)
        self.route("POST", "/token", self._token)

    @property
    def token_uri(self) -> str:
        return f"{self.url}/token"

    async def _gemini(self, seen: Seen, request: web.Request) -> web.StreamResponse:
        if seen.headers.get("x-goog-api-key") != API_KEY:
            return json_response(google_error(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid "
                                              "API key.", "API_KEY_INVALID"), 400)
        return await self._generate(seen, request)

    async def _vertex(self, seen: Seen, request: web.Request) -> web.StreamResponse:
        if seen.headers.get("authorization") != f"Bearer {ACCESS_TOKEN}":
            return json_response(google_error(401, "UNAUTHENTICATED", "Request had invalid authentication "
                                              "credentials."), 401)
        if request.match_info["target"].endswith(":predict"):
            return self._predict(seen)
        return await self._generate(seen, request)

    async def _generate(self, seen: Seen, request: web.Request) -> web.StreamResponse:
        model, _, method = request.match_info["target"].partition(":")
        if method == "batchEmbedContents":
            return self._embed(seen, model)
        problem = _content_problem(seen.body)
        if problem or method not in ("generateContent", "streamGenerateContent"):
            return json_response(google_error(400, "INVALID_ARGUMENT", problem or f"unknown method {method}"), 400)
        if method == "generateContent":
            return json_response(self.response)
        if seen.query.get("alt") != "sse":
            return json_response(google_error(400, "INVALID_ARGUMENT", "this fake streams with alt=sse only"), 400)
        return await stream_lines(request, sse([(None, event) for event in self.stream]), "text/event-stream")

    def _embed(self, seen: Seen, model: str) -> web.Response:
        requests = seen.body.get("requests") or []
        if any(r.get("model") != f"models/{model}" for r in requests):
            return json_response(google_error(400, "INVALID_ARGUMENT", "model of each request must match"), 400)
        return json_response({"embeddings": [{"values": [0.1 * i, 0.2, 0.3]} for i, _ in enumerate(requests)]})

    def _predict(self, seen: Seen) -> web.Response:
        """A text-embedding model's `:predict`: each vector starts with its text's token count."""
        instances = seen.body.get("instances") or []
        if not 0 < len(instances) <= VERTEX_MAX_INSTANCES or any(not isinstance(i.get("content"), str)
                                                                   for i in instances):
            return json_response(google_error(400, "INVALID_ARGUMENT", "instances must hold 1 to 250 objects "
                                              "with a content string"), 400)
        predictions = []
        for instance in instances:
            tokens = len(instance["content"].split())
            predictions.append({"embeddings": {"values": [float(tokens), 0.5, -0.5],
                                               "statistics": {"truncated": False, "token_count": tokens}}})
        characters = sum(len(instance["content"]) for instance in instances)
        return json_response({"predictions": predictions, "metadata": {"billableCharacterCount": characters}})

    async def _token(self, seen: Seen, request: web.Request) -> web.Response:
        self.token_requests += 1
        form = seen.body
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return json_response({"error": "unsupported_grant_type"}, 400)
        header_b64, claims_b64, signature_b64 = form["assertion"].split(".")
        header, claims = orjson.loads(_b64decode(header_b64)), orjson.loads(_b64decode(claims_b64))
        signed = _b64decode(signature_b64) == fake_signature(f"{header_b64}.{claims_b64}".encode())
        valid = (header.get("alg") == "RS256" and claims.get("iss") == CLIENT_EMAIL
                 and claims.get("aud") == self.token_uri and claims["exp"] - claims["iat"] <= 3600
                 and claims.get("scope") == "https://www.googleapis.com/auth/cloud-platform")
        if not (signed and valid):
            return json_response({"error": "invalid_grant", "error_description": "Invalid JWT Signature."}, 400)
        return json_response({"access_token": ACCESS_TOKEN, "expires_in": 3599, "token_type": "Bearer"})
