"""Provider error responses -> the gateway's error classes, across providers, over the wire."""
from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from moneta.application.config import Deployment
from moneta.domain import errors
from moneta.infrastructure.providers.anthropic import AnthropicProvider
from moneta.infrastructure.providers.registry import default_providers
from moneta.infrastructure.tokenizer import TiktokenCounter
from tests.providers.fakes.anthropic_api import error_body as anthropic_body
from tests.providers.fakes.google_api import google_error
from tests.providers.fakes.openai_api import openai_error
from tests.providers.fakes.server import FakeServer

KEY = "sk-secret-never-shown"
_ANY = "{tail:.*}"


CASES = [
    # provider, status, body, headers, expected class, expected retry_after
    ("openai", 429, openai_error("Rate limit reached", "requests", "rate_limit_exceeded"), {"retry-after": "20"},
     errors.RateLimitError, 20.0),
    ("openai", 400, openai_error("This model's maximum context length is 128000 tokens", "invalid_request_error",
                                 "context_length_exceeded", "messages"), {}, errors.ContextWindowExceededError, None),
    ("openai", 400, openai_error("Your request was rejected", "invalid_request_error", "content_policy_violation"),
     {}, errors.ContentPolicyViolationError, None),
    ("openai", 401, openai_error("Incorrect API key provided", "invalid_request_error", "invalid_api_key"), {},
     errors.AuthenticationError, None),
    ("openai", 500, openai_error("The server had an error", "server_error"), {}, errors.InternalServerError, None),
    ("openai", 503, openai_error("The engine is currently overloaded", "server_error"), {},
     errors.ServiceUnavailableError, None),
    ("groq", 429, openai_error("Rate limit reached for model", "tokens", "rate_limit_exceeded"),
     {"retry-after-ms": "1500"}, errors.RateLimitError, 1.5),
    ("mistral", 422, {"object": "error", "message": "Extra inputs are not permitted", "type": "invalid_request_error"},
     {}, errors.UnprocessableEntityError, None),
    ("azure", 400, openai_error("The response was filtered", "invalid_request_error", "content_filter", "prompt"), {},
     errors.ContentPolicyViolationError, None),
    ("azure", 404, {"error": {"code": "DeploymentNotFound", "message": "The API deployment does not exist"}}, {},
     errors.NotFoundError, None),
    ("anthropic", 400, anthropic_body("invalid_request_error", "max_tokens: Field required"), {},
     errors.BadRequestError, None),
    ("anthropic", 400, anthropic_body("invalid_request_error", "prompt is too long: 210000 tokens > 200000 maximum"),
     {}, errors.ContextWindowExceededError, None),
    ("anthropic", 401, anthropic_body("authentication_error", "invalid x-api-key"), {}, errors.AuthenticationError,
     None),
    ("anthropic", 403, anthropic_body("permission_error", "no access"), {}, errors.PermissionDeniedError, None),
    ("anthropic", 404, anthropic_body("not_found_error", "model: claude-x"), {}, errors.NotFoundError, None),
    ("anthropic", 413, anthropic_body("request_too_large", "Request exceeds the maximum size"), {},
     errors.RequestTooLargeError, None),
    ("anthropic", 429, anthropic_body("rate_limit_error", "Number of request tokens has exceeded your limit"),
     {"retry-after": "30"}, errors.RateLimitError, 30.0),
    ("anthropic", 500, anthropic_body("api_error", "Internal server error"), {}, errors.InternalServerError, None),
    ("anthropic", 529, anthropic_body("overloaded_error", "Overloaded"), {}, errors.ServiceUnavailableError, None),
    ("gemini", 400, google_error(400, "INVALID_ARGUMENT", "API key not valid.", "API_KEY_INVALID"), {},
     errors.AuthenticationError, None),
    ("gemini", 403, google_error(403, "PERMISSION_DENIED", "Permission denied"), {}, errors.PermissionDeniedError,
     None),
    ("gemini", 404, google_error(404, "NOT_FOUND", "models/gemini-x is not found"), {}, errors.NotFoundError, None),
    ("gemini", 429, google_error(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted"), {"retry-after": "7"},
     errors.RateLimitError, 7.0),
    ("gemini", 500, google_error(500, "INTERNAL", "An internal error has occurred"), {}, errors.InternalServerError,
     None),
    ("gemini", 503, google_error(503, "UNAVAILABLE", "The model is overloaded"), {}, errors.ServiceUnavailableError,
     None),
    ("gemini", 504, google_error(504, "DEADLINE_EXCEEDED", "Deadline exceeded"), {}, errors.TimeoutError, None),
    ("ollama", 404, {"error": "model \"llama9\" not found, try pulling it first"}, {}, errors.NotFoundError, None),
    ("ollama", 500, {"error": "llama runner process has terminated"}, {}, errors.InternalServerError, None),
]


@pytest.fixture
async def server() -> AsyncIterator[FakeServer]:
    fake = FakeServer()

    async def unreachable(seen, request):
        raise AssertionError("the fake answers with its failure")

    fake.route("POST", "/" + _ANY, unreachable)
    yield await fake.start()
    await fake.stop()


@pytest.mark.parametrize("provider, status, body, headers, expected, retry_after", CASES,
                         ids=[f"{c[0]}-{c[1]}-{c[4].__name__}" for c in CASES])
@pytest.mark.parametrize("call", ["chat", "chat_stream"])
async def test_provider_error_maps_to_gateway_error(server, call, provider, status, body, headers, expected,
                                                    retry_after):
    server.failure = (status, body, headers)
    deployment = Deployment(id="d", model_name="m", provider=provider, provider_model="some-model",
                            api_base=server.url, api_key=KEY)
    request = {"model": "some-model", "messages": [{"role": "user", "content": "Hi"}]}
    adapter = default_providers({}, TiktokenCounter()).for_deployment(deployment)
    with pytest.raises(errors.GatewayError) as caught:
        if call == "chat":
            await adapter.chat(deployment, request)
        else:
            [c async for c in adapter.chat_stream(deployment, request)]
    error = caught.value
    assert type(error) is expected
    assert error.retry_after == retry_after
    assert error.provider == provider and error.body == body
    assert KEY not in error.message
    if status == 529:
        assert error.status_code == 503


async def test_unreachable_provider_is_a_connection_error():
    deployment = Deployment(id="d", model_name="m", provider="anthropic", provider_model="m",
                            api_base="http://127.0.0.1:9", api_key=KEY)
    with pytest.raises(errors.APIConnectionError):
        await AnthropicProvider({}).chat(deployment, {"model": "m", "messages": [{"role": "user", "content": "x"}]})
