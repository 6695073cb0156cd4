"""The Bedrock adapter against a wire-level fake: signed requests, Converse translation both
ways, binary event streams, embeddings and error mapping."""
from __future__ import annotations

import struct
import zlib

import pytest

from moneta.application.config import Deployment
from moneta.domain import errors
from moneta.infrastructure.http_session import close_session
from moneta.infrastructure.providers import bedrock as bedrock_module
from moneta.infrastructure.providers.bedrock import BedrockProvider
from moneta.infrastructure.providers.bedrock_eventstream import (
    EventStreamDecoder,
    EventStreamError,
)
from tests.providers.bedrock_fake import (
    ACCESS_KEY,
    REGION,
    SECRET_KEY,
    SESSION_TOKEN,
    FakeBedrock,
    Reply,
    event,
    exception,
    frame,
)

MODEL_ID = "anthropic.claude-3-5-sonnet-20240620-v1:0"
ENCODED_MODEL_ID = "anthropic.claude-3-5-sonnet-20240620-v1%3A0"


@pytest.fixture
async def fake():
    server = await FakeBedrock().start()
    yield server
    await server.stop()
    await close_session()


def deployment(fake: FakeBedrock, model: str = MODEL_ID, **extra) -> Deployment:
    params = {"aws_access_key_id": ACCESS_KEY, "aws_secret_access_key": SECRET_KEY,
              "aws_session_token": SESSION_TOKEN, "aws_region_name": REGION, **extra}
    return Deployment(id="d1", model_name="claude", provider="bedrock", provider_model=model,
                      api_base=fake.url, extra_params=params)


CONVERSE_ANSWER = {
    "output": {"message": {"role": "assistant", "content": [
        {"reasoningContent": {"reasoningText": {"text": "The user wants weather.", "signature": "sig"}}},
        {"text": "Let me check."},
        {"toolUse": {"toolUseId": "tooluse_1", "name": "get_weather", "input": {"city": "Paris"}}},
    ]}},
    "stopReason": "tool_use",
    "usage": {"inputTokens": 30, "outputTokens": 12, "totalTokens": 52, "cacheReadInputTokens": 10},
    "metrics": {"latencyMs": 420},
}

WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


async def test_chat_sends_a_signed_converse_request_and_translates_the_answer(fake):
    fake.reply = lambda received: Reply(json=CONVERSE_ANSWER, headers={"x-amzn-RequestId": "req-123"})
    body = {
        "model": MODEL_ID,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [
                {"type": "text", "text": "Weather here?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
            ]},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "18C and sunny"},
            {"role": "user", "content": "And tomorrow?"},
        ],
        "tools": [WEATHER_TOOL],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "max_tokens": 256, "temperature": 0.2, "top_p": 0.9, "stop": "END",
    }

    result = await BedrockProvider().chat(deployment(fake), body)

    (received,) = fake.received
    assert received.signature_problem is None
    assert received.raw_path == f"/model/{ENCODED_MODEL_ID}/converse"
    assert received.headers["Content-Type"] == "application/json"
    assert received.headers["Accept"] == "application/json"
    signed = received.headers["Authorization"].split("SignedHeaders=")[1].split(",")[0].split(";")
    assert {"host", "x-amz-date", "x-amz-security-token", "content-type"} <= set(signed)
    assert received.json == {
        "system": [{"text": "Be brief."}],
        "messages": [
            {"role": "user", "content": [
                {"text": "Weather here?"},
                {"image": {"format": "png", "source": {"bytes": "iVBORw0KGgo="}}}]},
            {"role": "assistant", "content": [
                {"toolUse": {"toolUseId": "call_1", "name": "get_weather", "input": {"city": "Paris"}}}]},
            {"role": "user", "content": [
                {"toolResult": {"toolUseId": "call_1", "content": [{"text": "18C and sunny"}]}},
                {"text": "And tomorrow?"}]},
        ],
        "inferenceConfig": {"maxTokens": 256, "temperature": 0.2, "topP": 0.9, "stopSequences": ["END"]},
        "toolConfig": {
            "tools": [{"toolSpec": {"name": "get_weather", "description": "Weather for a city",
                                    "inputSchema": {"json": WEATHER_TOOL["function"]["parameters"]}}}],
            "toolChoice": {"tool": {"name": "get_weather"}},
        },
    }
    assert result["id"] == "chatcmpl-req-123"
    assert result["model"] == MODEL_ID
    choice = result["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"] == {
        "role": "assistant", "content": "Let me check.", "reasoning_content": "The user wants weather.",
        "tool_calls": [{"id": "tooluse_1", "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}],
    }
    assert result["usage"] == {"prompt_tokens": 40, "completion_tokens": 12, "total_tokens": 52,
                               "prompt_tokens_details": {"cached_tokens": 10}}


async def test_converse_prefix_is_stripped_and_tool_choice_required_becomes_any(fake):
    fake.reply = lambda received: Reply(json={"output": {"message": {"content": [{"text": "ok"}]}},
                                              "stopReason": "end_turn", "usage": {"inputTokens": 3, "outputTokens": 1}})
    body = {"model": f"converse/{MODEL_ID}", "messages": [{"role": "user", "content": "hi"}],
            "tools": [WEATHER_TOOL], "tool_choice": "required"}

    result = await BedrockProvider().chat(deployment(fake, f"converse/{MODEL_ID}"), body)

    assert fake.received[0].raw_path == f"/model/{ENCODED_MODEL_ID}/converse"
    assert fake.received[0].json["toolConfig"]["toolChoice"] == {"any": {}}
    assert result["choices"][0]["message"] == {"role": "assistant", "content": "ok"}
    assert result["choices"][0]["finish_reason"] == "stop"


async def test_default_credential_chain_signs_without_a_session_token(monkeypatch, tmp_path):
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    server = await FakeBedrock(session_token=None).start()
    try:
        server.reply = lambda received: Reply(json={"output": {"message": {"content": [{"text": "hi"}]}},
                                                    "stopReason": "end_turn", "usage": {}})
        plain = Deployment(id="d", model_name="m", provider="bedrock", provider_model=MODEL_ID,
                           api_base=server.url, extra_params={"aws_region_name": REGION})
        await BedrockProvider().chat(plain, {"model": MODEL_ID, "messages": [{"role": "user", "content": "hi"}]})
    finally:
        await server.stop()
        await close_session()
    assert server.received[0].signature_problem is None
    assert "X-Amz-Security-Token" not in server.received[0].headers


async def test_no_credentials_anywhere_is_an_authentication_error(monkeypatch):
    monkeypatch.setattr(bedrock_module, "_credential_chain", lambda profile: None)
    plain = Deployment(id="d", model_name="m", provider="bedrock", provider_model=MODEL_ID,
                       api_base="http://127.0.0.1:9", extra_params={"aws_region_name": REGION})
    with pytest.raises(errors.AuthenticationError):
        await BedrockProvider().chat(plain, {"model": MODEL_ID, "messages": [{"role": "user", "content": "hi"}]})


async def test_a_tampered_signature_is_refused_by_the_fake(fake, monkeypatch):
    real_sign = bedrock_module.sign

    def tampered(credentials, region, url, data, headers):
        return real_sign(credentials, region, url, data + b" ", headers)

    monkeypatch.setattr(bedrock_module, "sign", tampered)
    with pytest.raises(errors.AuthenticationError):
        await BedrockProvider().chat(deployment(fake), {"model": MODEL_ID,
                                                        "messages": [{"role": "user", "content": "hi"}]})
    assert fake.received[0].signature_problem == "signature mismatch"


STREAM_FRAMES = [
    event("messageStart", {"role": "assistant", "p": "abc"}),
    event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"reasoningContent": {"text": "Thinking."}}}),
    event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"reasoningContent": {"signature": "sig"}}}),
    event("contentBlockStop", {"contentBlockIndex": 0}),
    event("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"text": "Checking "}}),
    event("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"text": "now."}}),
    event("contentBlockStop", {"contentBlockIndex": 1}),
    event("contentBlockStart", {"contentBlockIndex": 2,
                                "start": {"toolUse": {"toolUseId": "tooluse_9", "name": "get_weather"}}}),
    event("contentBlockDelta", {"contentBlockIndex": 2, "delta": {"toolUse": {"input": '{"city":'}}}),
    event("contentBlockDelta", {"contentBlockIndex": 2, "delta": {"toolUse": {"input": '"Oslo"}'}}}),
    event("contentBlockStop", {"contentBlockIndex": 2}),
    event("messageStop", {"stopReason": "tool_use"}),
    event("metadata", {"usage": {"inputTokens": 20, "outputTokens": 9, "totalTokens": 29},
                       "metrics": {"latencyMs": 300}}),
]


async def test_stream_decodes_split_event_frames_into_openai_chunks(fake):
    fake.reply = lambda received: Reply(frames=STREAM_FRAMES, piece_size=5, headers={"x-amzn-RequestId": "s-1"})
    body = {"model": MODEL_ID, "messages": [{"role": "user", "content": "Weather in Oslo?"}], "tools": [WEATHER_TOOL]}

    chunks = [c async for c in BedrockProvider().chat_stream(deployment(fake), body)]

    received = fake.received[0]
    assert received.signature_problem is None
    assert received.raw_path == f"/model/{ENCODED_MODEL_ID}/converse-stream"
    assert received.headers["Accept"] == "application/vnd.amazon.eventstream"
    assert {c["id"] for c in chunks} == {"chatcmpl-s-1"}
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert deltas == [
        {"role": "assistant", "content": ""},
        {"reasoning_content": "Thinking."},
        {"content": "Checking "},
        {"content": "now."},
        {"tool_calls": [{"index": 0, "id": "tooluse_9", "type": "function",
                         "function": {"name": "get_weather", "arguments": ""}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": '"Oslo"}'}}]},
        {},
    ]
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["prompt_tokens"] == 20
    assert chunks[-1]["usage"]["completion_tokens"] == 9


async def test_stream_exception_frame_raises_the_mapped_error(fake):
    frames = [event("messageStart", {"role": "assistant"}),
              event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Hi"}}),
              exception("throttlingException", "Too many requests, please wait before trying again.")]
    fake.reply = lambda received: Reply(frames=frames, piece_size=3)
    seen = []
    with pytest.raises(errors.RateLimitError) as caught:
        async for chunk in BedrockProvider().chat_stream(deployment(fake), {
                "model": MODEL_ID, "messages": [{"role": "user", "content": "hi"}]}):
            seen.append(chunk)
    assert len(seen) == 2
    assert "Too many requests" in caught.value.message
    assert caught.value.code == "ThrottlingException"


async def test_stream_with_a_corrupted_frame_is_a_connection_error(fake):
    good = event("messageStart", {"role": "assistant"})
    corrupted = bytearray(event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Hi"}}))
    corrupted[20] ^= 0xFF
    fake.reply = lambda received: Reply(frames=[good, bytes(corrupted)])
    with pytest.raises(errors.APIConnectionError, match="checksum"):
        async for _ in BedrockProvider().chat_stream(deployment(fake), {
                "model": MODEL_ID, "messages": [{"role": "user", "content": "hi"}]}):
            pass


async def test_stream_http_error_before_any_event(fake):
    fake.reply = lambda received: Reply(status=429, json={"message": "Rate exceeded"},
                                        headers={"x-amzn-ErrorType": "ThrottlingException:http://internal.amazon.com/"})
    with pytest.raises(errors.RateLimitError, match="Rate exceeded"):
        async for _ in BedrockProvider().chat_stream(deployment(fake), {
                "model": MODEL_ID, "messages": [{"role": "user", "content": "hi"}]}):
            pass


@pytest.mark.parametrize("status, error_type, message, expected", [
    (400, "ValidationException", "Input is too long for requested model.", errors.ContextWindowExceededError),
    (400, "ValidationException", "messages: roles must alternate", errors.BadRequestError),
    (403, "AccessDeniedException", "You don't have access to the model", errors.PermissionDeniedError),
    (404, "ResourceNotFoundException", "Model not found", errors.NotFoundError),
    (429, "ThrottlingException", "Too many requests", errors.RateLimitError),
    (408, "ModelTimeoutException", "Model timed out", errors.TimeoutError),
    (503, "ServiceUnavailableException", "Service unavailable", errors.ServiceUnavailableError),
    (500, "InternalServerException", "Internal failure", errors.InternalServerError),
    (429, "ModelNotReadyException", "Model is not ready", errors.ServiceUnavailableError),
    (502, None, "Bad gateway", errors.APIConnectionError),
])
async def test_bedrock_errors_map_by_error_type(fake, status, error_type, message, expected):
    headers = {"x-amzn-ErrorType": f"{error_type}:http://internal.amazon.com/coral/com.amazon.bedrock/"} if error_type else {}
    fake.reply = lambda received: Reply(status=status, json={"message": message}, headers=headers)
    with pytest.raises(errors.GatewayError) as caught:
        await BedrockProvider().chat(deployment(fake), {"model": MODEL_ID,
                                                        "messages": [{"role": "user", "content": "hi"}]})
    assert type(caught.value) is expected
    assert message in caught.value.message
    assert caught.value.provider == "bedrock"
    assert SECRET_KEY not in str(caught.value) and ACCESS_KEY not in str(caught.value)


@pytest.mark.parametrize("body, param", [
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]},
     "messages"),
    ({"messages": [{"role": "user", "content": "hi"}], "tools": [WEATHER_TOOL], "tool_choice": "none"}, "tool_choice"),
    ({"messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "json_object"}}, "response_format"),
    ({"messages": [{"role": "user", "content": "hi"}], "n": 2}, "n"),
])
async def test_requests_bedrock_cannot_serve_are_refused_before_sending(fake, body, param):
    with pytest.raises(errors.UnsupportedParamsError) as caught:
        await BedrockProvider().chat(deployment(fake), {"model": MODEL_ID, **body})
    assert caught.value.param == param
    assert fake.received == []


@pytest.mark.parametrize("stop_reason, finish", [
    ("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"), ("tool_use", "tool_calls"),
    ("guardrail_intervened", "content_filter"), ("content_filtered", "content_filter"),
])
async def test_stop_reasons(fake, stop_reason, finish):
    fake.reply = lambda received: Reply(json={"output": {"message": {"content": [{"text": "x"}]}},
                                              "stopReason": stop_reason, "usage": {}})
    result = await BedrockProvider().chat(deployment(fake), {"model": MODEL_ID,
                                                             "messages": [{"role": "user", "content": "hi"}]})
    assert result["choices"][0]["finish_reason"] == finish


async def test_titan_embeddings_make_one_call_per_input(fake):
    model = "amazon.titan-embed-text-v2:0"

    def reply(received):
        text = received.json["inputText"]
        return Reply(json={"embedding": [float(len(text)), 0.5], "inputTextTokenCount": len(text.split())})

    fake.reply = reply
    result = await BedrockProvider().embedding(deployment(fake, model), {
        "model": model, "input": ["one two", "three"], "dimensions": 256, "normalize": True})

    assert sorted(r.raw_path for r in fake.received) == ["/model/amazon.titan-embed-text-v2%3A0/invoke"] * 2
    assert all(r.signature_problem is None for r in fake.received)
    assert sorted((r.json["inputText"], r.json["dimensions"], r.json["normalize"]) for r in fake.received) == [
        ("one two", 256, True), ("three", 256, True)]
    assert result["object"] == "list"
    assert result["data"] == [{"object": "embedding", "index": 0, "embedding": [7.0, 0.5]},
                              {"object": "embedding", "index": 1, "embedding": [5.0, 0.5]}]
    assert result["usage"] == {"prompt_tokens": 3, "total_tokens": 3}


async def test_cohere_embeddings_on_bedrock_batch_texts_and_estimate_usage(fake):
    model = "cohere.embed-english-v3"
    fake.reply = lambda received: Reply(json={"id": "e1", "response_type": "embeddings_floats",
                                              "texts": received.json["texts"],
                                              "embeddings": [[0.1, 0.2] for _ in received.json["texts"]]})
    result = await BedrockProvider().embedding(deployment(fake, model), {"model": model, "input": ["abcdefgh", "xyz"]})

    (received,) = fake.received
    assert received.raw_path == "/model/cohere.embed-english-v3/invoke"
    assert received.json == {"texts": ["abcdefgh", "xyz"], "input_type": "search_document"}
    assert [d["embedding"] for d in result["data"]] == [[0.1, 0.2], [0.1, 0.2]]
    assert result["usage"] == {"prompt_tokens": 3, "total_tokens": 3}  # ceil(8/4) + ceil(3/4)


def test_decoder_handles_frames_fed_one_byte_at_a_time():
    data = event("messageStart", {"role": "assistant"}) + frame(
        {"flag": True, "off": False, "n": 7, "raw": b"\x00\x01", ":event-type": "x"}, b"payload")
    decoder = EventStreamDecoder()
    messages = [m for i in range(len(data)) for m in decoder.feed(data[i:i + 1])]
    decoder.finish()
    assert [m.headers[":event-type"] for m in messages] == ["messageStart", "x"]
    assert messages[1].headers == {"flag": True, "off": False, "n": 7, "raw": b"\x00\x01", ":event-type": "x"}
    assert messages[1].payload == b"payload"


def test_decoder_rejects_a_bad_prelude_checksum():
    data = bytearray(event("messageStart", {}))
    struct.pack_into(">I", data, 8, zlib.crc32(bytes(data[:8])) ^ 1)
    with pytest.raises(EventStreamError, match="prelude"):
        EventStreamDecoder().feed(bytes(data))


def test_decoder_rejects_a_truncated_stream():
    decoder = EventStreamDecoder()
    assert decoder.feed(event("messageStart", {})[:-3]) == []
    with pytest.raises(EventStreamError, match="ended inside"):
        decoder.finish()
