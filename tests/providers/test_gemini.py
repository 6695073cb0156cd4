from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from moneta.application.config import Deployment
from moneta.domain import errors
from moneta.infrastructure.providers.gemini import GeminiProvider, VertexAIProvider, rs256_sign
from tests.providers.fakes.google_api import (
    ACCESS_TOKEN,
    API_KEY,
    CLIENT_EMAIL,
    FakeGoogle,
    fake_signature,
    google_error,
)

GEMINI = GeminiProvider({})
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather at a place",
    "parameters": {"type": "object", "additionalProperties": False,
                   "properties": {"location": {"type": "string"}}, "required": ["location"]}}}


@pytest.fixture
async def fake() -> AsyncIterator[FakeGoogle]:
    server = await FakeGoogle().start()
    yield server
    await server.stop()


def gemini(fake: FakeGoogle, **extra) -> Deployment:
    return Deployment(id="g", model_name="flash", provider="gemini", provider_model="gemini-2.5-flash",
                      api_base=f"{fake.url}/v1beta", api_key=API_KEY, extra_params=extra)


def body(**params) -> dict:
    return {"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "Hi"}], **params}


async def test_chat_request_translates_contents_tools_and_generation_config(fake):
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [
            {"type": "text", "text": "Weather here?"},
            {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"}},
            {"type": "image_url", "image_url": {"url": "gs://bucket/photo.png"}}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"location":"Oslo"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature": 4}'},
        {"role": "user", "content": "Thanks"},
    ]
    request = {"model": "gemini-2.5-flash", "messages": messages, "temperature": 0.5, "top_p": 0.8,
               "max_tokens": 256, "stop": ["END"], "seed": 7, "n": 2, "tools": [WEATHER_TOOL],
               "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
               "response_format": {"type": "json_schema", "json_schema": {"name": "w", "schema": {
                   "type": "object", "properties": {"t": {"type": "number"}}, "additionalProperties": False}}}}

    response = await GEMINI.chat(gemini(fake), request)

    assert fake.last.path == "/v1beta/models/gemini-2.5-flash:generateContent"
    assert fake.last.body == {
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
        "contents": [
            {"role": "user", "parts": [
                {"text": "Weather here?"},
                {"inlineData": {"mimeType": "image/jpeg", "data": "/9j/4AAQ"}},
                {"fileData": {"mimeType": "image/png", "fileUri": "gs://bucket/photo.png"}}]},
            {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"location": "Oslo"}}}]},
            {"role": "user", "parts": [
                {"functionResponse": {"name": "get_weather", "response": {"temperature": 4}}},
                {"text": "Thanks"}]},
        ],
        "tools": [{"functionDeclarations": [{"name": "get_weather", "description": "Weather at a place",
                                             "parameters": {"type": "object", "required": ["location"],
                                                            "properties": {"location": {"type": "string"}}}}]}],
        "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}},
        "generationConfig": {"temperature": 0.5, "topP": 0.8, "seed": 7, "candidateCount": 2,
                             "maxOutputTokens": 256, "stopSequences": ["END"],
                             "responseMimeType": "application/json",
                             "responseSchema": {"type": "object", "properties": {"t": {"type": "number"}}}},
    }
    assert response["id"] == "resp-1"
    assert response["choices"] == [{"index": 0, "finish_reason": "stop",
                                    "message": {"role": "assistant", "content": "Hello there."}}]
    assert response["usage"] == {"prompt_tokens": 8, "completion_tokens": 12, "total_tokens": 20}


@pytest.mark.parametrize("reason, expected", [
    ("STOP", "stop"), ("MAX_TOKENS", "length"), ("SAFETY", "content_filter"), ("RECITATION", "content_filter"),
    ("BLOCKLIST", "content_filter"), ("PROHIBITED_CONTENT", "content_filter"),
])
async def test_finish_reasons(fake, reason, expected):
    fake.response = {**fake.response, "candidates": [{**fake.response["candidates"][0], "finishReason": reason}]}
    response = await GEMINI.chat(gemini(fake), body())
    assert response["choices"][0]["finish_reason"] == expected


async def test_function_calls_thoughts_and_usage_details(fake):
    fake.response = {
        "candidates": [{"content": {"role": "model", "parts": [
            {"text": "Thinking it over", "thought": True},
            {"functionCall": {"name": "get_weather", "args": {"location": "Rome"}}}]}, "finishReason": "STOP"}],
        "usageMetadata": {"promptTokenCount": 100, "candidatesTokenCount": 10, "thoughtsTokenCount": 30,
                          "cachedContentTokenCount": 60, "totalTokenCount": 140},
    }
    response = await GEMINI.chat(gemini(fake), body(tools=[WEATHER_TOOL], reasoning_effort="low"))
    assert fake.last.body["generationConfig"]["thinkingConfig"] == {"thinkingBudget": 1024, "includeThoughts": True}
    choice = response["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["reasoning_content"] == "Thinking it over"
    [call] = choice["message"]["tool_calls"]
    assert call["function"] == {"name": "get_weather", "arguments": '{"location":"Rome"}'}
    assert call["id"].startswith("call_")
    assert response["usage"] == {"prompt_tokens": 100, "completion_tokens": 40, "total_tokens": 140,
                                 "prompt_tokens_details": {"cached_tokens": 60},
                                 "completion_tokens_details": {"reasoning_tokens": 30}}


async def test_stream_uses_sse_and_ends_with_usage(fake):
    chunks = [c async for c in GEMINI.chat_stream(gemini(fake), body(tools=[WEATHER_TOOL]))]
    assert fake.last.path == "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
    assert fake.last.query == {"alt": "sse"}
    first, second, final = chunks
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": "The weather"}
    call = second["choices"][0]["delta"]["tool_calls"][0]
    assert call["index"] == 0 and call["function"] == {"name": "get_weather", "arguments": '{"location":"Oslo"}'}
    assert second["choices"][0]["finish_reason"] == "tool_calls"
    assert final["choices"] == [] and final["usage"] == {
        "prompt_tokens": 9, "completion_tokens": 8, "total_tokens": 17,
        "prompt_tokens_details": {"cached_tokens": 4}, "completion_tokens_details": {"reasoning_tokens": 3}}
    assert {c["id"] for c in chunks} == {"resp-2"}


async def test_embeddings_use_batch_embed_contents(fake):
    result = await GEMINI.embedding(gemini(fake), {"model": "text-embedding-004", "input": ["a", "b"],
                                                  "dimensions": 3})
    assert fake.last.path == "/v1beta/models/gemini-2.5-flash:batchEmbedContents"
    assert fake.last.body == {"requests": [
        {"model": "models/gemini-2.5-flash", "outputDimensionality": 3, "content": {"parts": [{"text": "a"}]}},
        {"model": "models/gemini-2.5-flash", "outputDimensionality": 3, "content": {"parts": [{"text": "b"}]}}]}
    assert [d["index"] for d in result["data"]] == [0, 1]
    assert result["data"][1]["embedding"] == [0.1, 0.2, 0.3]


async def test_invalid_api_key_is_an_authentication_error(fake):
    with pytest.raises(errors.AuthenticationError) as caught:
        await GEMINI.chat(Deployment(id="g", model_name="f", provider="gemini", provider_model="gemini-2.5-flash",
                                     api_base=f"{fake.url}/v1beta", api_key="wrong-key"), body())
    assert caught.value.status_code == 401
    assert "wrong-key" not in caught.value.message


async def test_prompt_too_long_is_a_context_window_error(fake):
    fake.failure = (400, google_error(400, "INVALID_ARGUMENT", "The input token count (1200000) exceeds the "
                                      "maximum number of tokens allowed (1048576)."), {})
    with pytest.raises(errors.ContextWindowExceededError):
        await GEMINI.chat(gemini(fake), body())


async def test_unsupported_parameter_is_refused(fake):
    with pytest.raises(errors.UnsupportedParamsError) as caught:
        await GEMINI.chat(gemini(fake), body(logit_bias={"1": 1}))
    assert caught.value.param == "logit_bias"


# -- Vertex AI ---------------------------------------------------------------------------------

def service_account(fake: FakeGoogle) -> dict:
    return {"type": "service_account", "project_id": "test-project", "private_key_id": "key-1",
            "private_key": "-----BEGIN PRIVATE KEY-----\ntest\n-----END PRIVATE KEY-----\n",
            "client_email": CLIENT_EMAIL, "token_uri": fake.token_uri}


def vertex(fake: FakeGoogle, credentials) -> Deployment:
    return Deployment(id="v", model_name="flash", provider="vertex_ai", provider_model="gemini-2.5-flash",
                      api_base=fake.url, extra_params={"vertex_credentials": credentials,
                                                       "vertex_location": "europe-west4"})


def stand_in_signer(private_key_pem: str, message: bytes) -> bytes:
    assert "PRIVATE KEY" in private_key_pem
    return fake_signature(message)


async def test_vertex_signs_in_as_the_service_account_and_caches_the_token(fake, tmp_path):
    path = tmp_path / "sa.json"
    path.write_text(json.dumps(service_account(fake)))
    provider = VertexAIProvider({}, signer=stand_in_signer)

    for credentials in (str(path), json.dumps(service_account(fake))):
        response = await provider.chat(vertex(fake, credentials), body())
        assert response["choices"][0]["message"]["content"] == "Hello there."

    assert fake.last.path == ("/v1/projects/test-project/locations/europe-west4/publishers/google/models/"
                              "gemini-2.5-flash:generateContent")
    assert fake.last.headers["authorization"] == f"Bearer {ACCESS_TOKEN}"
    assert fake.token_requests == 1


async def test_vertex_stream(fake):
    provider = VertexAIProvider({}, signer=stand_in_signer)
    chunks = [c async for c in provider.chat_stream(vertex(fake, service_account(fake)), body())]
    assert fake.last.path.endswith("gemini-2.5-flash:streamGenerateContent")
    assert chunks[-1]["usage"]["total_tokens"] == 17


def vertex_embedder(fake: FakeGoogle) -> Deployment:
    return Deployment(id="ve", model_name="embedder", provider="vertex_ai", provider_model="text-embedding-005",
                      api_base=fake.url, extra_params={"vertex_credentials": service_account(fake),
                                                       "vertex_location": "europe-west4"})


def predictions(fake: FakeGoogle) -> list:
    return [seen for seen in fake.seen if seen.path.endswith(":predict")]


async def test_vertex_embeddings_predict_with_the_service_account_token(fake):
    provider = VertexAIProvider({}, signer=stand_in_signer)
    result = await provider.embedding(vertex_embedder(fake), {"model": "text-embedding-005",
                                                              "input": "hello vertex world", "dimensions": 256})
    assert fake.last.path == ("/v1/projects/test-project/locations/europe-west4/publishers/google/models/"
                              "text-embedding-005:predict")
    assert fake.last.headers["authorization"] == f"Bearer {ACCESS_TOKEN}"
    assert fake.last.body == {"instances": [{"content": "hello vertex world"}],
                              "parameters": {"outputDimensionality": 256}}
    assert result == {"object": "list", "model": "text-embedding-005",
                      "data": [{"object": "embedding", "index": 0, "embedding": [3.0, 0.5, -0.5]}],
                      "usage": {"prompt_tokens": 3, "total_tokens": 3}}


async def test_vertex_embeddings_go_in_batches_of_at_most_250(fake):
    texts = [" ".join(["word"] * (i % 4 + 1)) for i in range(501)]
    provider = VertexAIProvider({}, signer=stand_in_signer)

    result = await provider.embedding(vertex_embedder(fake), {"model": "text-embedding-005", "input": texts})

    sent = predictions(fake)
    assert sorted(len(seen.body["instances"]) for seen in sent) == [1, 250, 250]
    assert all(seen.body["parameters"] == {} for seen in sent)
    assert sorted(i["content"] for seen in sent for i in seen.body["instances"]) == sorted(texts)
    assert [d["index"] for d in result["data"]] == list(range(501))
    assert [d["embedding"][0] for d in result["data"]] == [float(i % 4 + 1) for i in range(501)]
    assert result["usage"] == {"prompt_tokens": sum(i % 4 + 1 for i in range(501)),
                               "total_tokens": sum(i % 4 + 1 for i in range(501))}
    assert fake.token_requests == 1


async def test_vertex_embeddings_refuse_token_ids(fake):
    provider = VertexAIProvider({}, signer=stand_in_signer)
    with pytest.raises(errors.BadRequestError) as caught:
        await provider.embedding(vertex_embedder(fake), {"model": "text-embedding-005", "input": [[101, 102]]})
    assert caught.value.param == "input"
    assert predictions(fake) == []


async def test_vertex_refused_assertion_is_an_authentication_error(fake):
    provider = VertexAIProvider({}, signer=lambda key, message: b"not-a-signature")
    with pytest.raises(errors.AuthenticationError) as caught:
        await provider.chat(vertex(fake, service_account(fake)), body())
    assert "invalid_grant" in caught.value.message
    assert "PRIVATE KEY" not in caught.value.message


async def test_vertex_needs_service_account_credentials(fake):
    provider = VertexAIProvider({}, signer=stand_in_signer)
    with pytest.raises(errors.AuthenticationError):
        await provider.chat(vertex(fake, json.dumps({"type": "authorized_user"})), body())


def test_rs256_signature_verifies_with_the_public_key():
    pytest.importorskip("cryptography")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    signature = rs256_sign(pem, b"header.claims")
    key.public_key().verify(signature, b"header.claims", padding.PKCS1v15(), hashes.SHA256())