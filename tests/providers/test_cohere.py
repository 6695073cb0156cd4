"""The Cohere v2 adapter against a wire-level fake: chat, tools, streaming, embeddings, errors."""
from __future__ import annotations

import pytest

from moneta.application.config import Deployment
from moneta.domain import errors
from moneta.infrastructure.http_session import close_session
from moneta.infrastructure.providers.cohere import CohereProvider
from tests.providers.cohere_fake import API_KEY, FakeCohere, Reply

MODEL = "command-r-plus-08-2024"


@pytest.fixture
async def fake():
    server = await FakeCohere().start()
    yield server
    await server.stop()
    await close_session()


def deployment(fake: FakeCohere, model: str = MODEL, api_key: str = API_KEY) -> Deployment:
    return Deployment(id="c1", model_name="command", provider="cohere", provider_model=model,
                      api_base=fake.url, api_key=api_key)


WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}

USAGE = {"billed_units": {"input_tokens": 9, "output_tokens": 4}, "tokens": {"input_tokens": 70, "output_tokens": 4}}


async def test_chat_translates_the_request_and_the_answer(fake):
    fake.reply = lambda received: Reply(json={
        "id": "c0ffee", "finish_reason": "COMPLETE",
        "message": {"role": "assistant", "content": [{"type": "text", "text": "Hello"}, {"type": "text", "text": "!"}]},
        "usage": USAGE})
    body = {
        "model": MODEL,
        "messages": [{"role": "system", "content": "Be brief."},
                     {"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
        "temperature": 0.3, "top_p": 0.8, "max_tokens": 50, "stop": ["\n\n"], "seed": 7,
        "response_format": {"type": "json_schema", "json_schema": {"name": "greeting", "schema": {
            "type": "object", "properties": {"text": {"type": "string"}}}}},
    }

    result = await CohereProvider().chat(deployment(fake), body)

    (received,) = fake.received
    assert received.path == "/v2/chat"
    assert received.headers["Authorization"] == f"Bearer {API_KEY}"
    assert received.headers["Content-Type"] == "application/json"
    assert received.json == {
        "model": MODEL, "stream": False,
        "messages": [{"role": "system", "content": "Be brief."},
                     {"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
        "temperature": 0.3, "p": 0.8, "seed": 7, "max_tokens": 50, "stop_sequences": ["\n\n"],
        "response_format": {"type": "json_object", "json_schema": {
            "type": "object", "properties": {"text": {"type": "string"}}}},
    }
    assert result["id"] == "c0ffee"
    assert result["object"] == "chat.completion"
    assert result["choices"] == [{"index": 0, "message": {"role": "assistant", "content": "Hello!"},
                                  "finish_reason": "stop", "logprobs": None}]
    assert result["usage"] == {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}


async def test_tool_calls_go_out_and_come_back_in_openai_shape(fake):
    fake.reply = lambda received: Reply(json={
        "id": "t1", "finish_reason": "TOOL_CALL",
        "message": {"role": "assistant", "tool_plan": "I will look up the weather.",
                    "tool_calls": [{"id": "get_weather_abc", "type": "function",
                                    "function": {"name": "get_weather", "arguments": '{"city":"Lyon"}'}}]},
        "usage": {"tokens": {"input_tokens": 30, "output_tokens": 12}}})
    body = {
        "model": MODEL,
        "messages": [
            {"role": "user", "content": "Weather in Paris, then Lyon?"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
        ],
        "tools": [WEATHER_TOOL], "tool_choice": "required",
    }

    result = await CohereProvider("cohere_chat").chat(deployment(fake), body)

    sent = fake.received[0].json
    assert sent["messages"][1:] == [
        {"role": "assistant", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
    ]
    assert sent["tools"] == [WEATHER_TOOL]
    assert sent["tool_choice"] == "REQUIRED"
    choice = result["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"] == {"role": "assistant", "content": None, "tool_calls": [
        {"id": "get_weather_abc", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Lyon"}'}}]}
    assert result["usage"] == {"prompt_tokens": 30, "completion_tokens": 12, "total_tokens": 42}


STREAM = [
    {"type": "message-start", "id": "s-42", "delta": {"message": {"role": "assistant", "content": [],
                                                                  "tool_plan": "", "tool_calls": []}}},
    {"type": "content-start", "index": 0, "delta": {"message": {"content": {"type": "text", "text": ""}}}},
    {"type": "content-delta", "index": 0, "delta": {"message": {"content": {"text": "Let me "}}}},
    {"type": "content-delta", "index": 0, "delta": {"message": {"content": {"text": "check."}}}},
    {"type": "content-end", "index": 0},
    {"type": "tool-plan-delta", "delta": {"message": {"tool_plan": "Look it up."}}},
    {"type": "tool-call-start", "index": 0, "delta": {"message": {"tool_calls": {
        "id": "get_weather_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}}}},
    {"type": "tool-call-delta", "index": 0, "delta": {"message": {"tool_calls": {"function": {"arguments": '{"city"'}}}}},
    {"type": "tool-call-delta", "index": 0, "delta": {"message": {"tool_calls": {"function": {"arguments": ':"Rome"}'}}}}},
    {"type": "tool-call-end", "index": 0},
    {"type": "message-end", "delta": {"finish_reason": "TOOL_CALL", "usage": USAGE}},
]


async def test_stream_events_become_chunks_with_tool_call_deltas_and_usage(fake):
    fake.reply = lambda received: Reply(events=STREAM)

    chunks = [c async for c in CohereProvider().chat_stream(deployment(fake), {
        "model": MODEL, "messages": [{"role": "user", "content": "Weather in Rome?"}], "tools": [WEATHER_TOOL]})]

    assert fake.received[0].json["stream"] is True
    assert {c["id"] for c in chunks} == {"s-42"}
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert [c["choices"][0]["delta"] for c in chunks if c["choices"]] == [
        {"role": "assistant", "content": ""},
        {"content": "Let me "},
        {"content": "check."},
        {"tool_calls": [{"index": 0, "id": "get_weather_1", "type": "function",
                         "function": {"name": "get_weather", "arguments": ""}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": '{"city"'}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": ':"Rome"}'}}]},
        {},
    ]
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}


async def test_a_generation_that_ends_in_error_raises(fake):
    fake.reply = lambda received: Reply(events=[STREAM[0], STREAM[2], {
        "type": "message-end", "delta": {"finish_reason": "ERROR", "usage": USAGE}}])
    with pytest.raises(errors.InternalServerError, match="ERROR"):
        async for _ in CohereProvider().chat_stream(deployment(fake), {
                "model": MODEL, "messages": [{"role": "user", "content": "hi"}]}):
            pass


async def test_embeddings(fake):
    fake.reply = lambda received: Reply(json={
        "id": "e1", "texts": received.json["texts"],
        "embeddings": {"float": [[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]]},
        "meta": {"api_version": {"version": "2"}, "billed_units": {"input_tokens": 6}}})

    result = await CohereProvider().embedding(deployment(fake, "embed-english-v3.0"), {
        "model": "embed-english-v3.0", "input": ["hello world", "good bye"], "input_type": "search_query"})

    (received,) = fake.received
    assert received.path == "/v2/embed"
    assert received.headers["Authorization"] == f"Bearer {API_KEY}"
    assert received.json == {"model": "embed-english-v3.0", "texts": ["hello world", "good bye"],
                             "input_type": "search_query", "embedding_types": ["float"]}
    assert result == {"object": "list", "model": "embed-english-v3.0",
                      "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2, 0.3]},
                               {"object": "embedding", "index": 1, "embedding": [0.4, 0.5, 0.6]}],
                      "usage": {"prompt_tokens": 6, "total_tokens": 6}}


async def test_a_wrong_key_is_an_authentication_error_that_does_not_echo_the_key(fake):
    with pytest.raises(errors.AuthenticationError) as caught:
        await CohereProvider().chat(deployment(fake, api_key="co-wrong-secret"), {
            "model": MODEL, "messages": [{"role": "user", "content": "hi"}]})
    assert "invalid api token" in caught.value.message
    assert "co-wrong-secret" not in str(caught.value)


@pytest.mark.parametrize("status, message, expected", [
    (400, "too many tokens: total number of tokens in the prompt cannot exceed 4081 - received 4292.",
     errors.ContextWindowExceededError),
    (400, "invalid request: message must not be empty in a turn", errors.BadRequestError),
    (403, "forbidden", errors.PermissionDeniedError),
    (404, "model 'nope' not found", errors.NotFoundError),
    (422, "unprocessable", errors.UnprocessableEntityError),
    (429, "You are using a Trial key, which is limited", errors.RateLimitError),
    (499, "request cancelled", errors.APIConnectionError),
    (500, "internal server error", errors.InternalServerError),
    (503, "service unavailable", errors.ServiceUnavailableError),
])
async def test_errors_map_by_status_with_cohere_message(fake, status, message, expected):
    fake.reply = lambda received: Reply(status=status, json={"message": message}, headers={"Retry-After": "3"})
    with pytest.raises(errors.GatewayError) as caught:
        await CohereProvider().chat(deployment(fake), {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]})
    assert type(caught.value) is expected
    assert message in caught.value.message
    assert caught.value.retry_after == 3.0
    assert caught.value.body == {"message": message}


@pytest.mark.parametrize("reason, finish", [
    ("COMPLETE", "stop"), ("STOP_SEQUENCE", "stop"), ("MAX_TOKENS", "length"), ("TOOL_CALL", "tool_calls"),
])
async def test_finish_reasons(fake, reason, finish):
    fake.reply = lambda received: Reply(json={"id": "f", "finish_reason": reason, "usage": USAGE,
                                              "message": {"role": "assistant", "content": [{"type": "text", "text": "x"}]}})
    result = await CohereProvider().chat(deployment(fake), {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]})
    assert result["choices"][0]["finish_reason"] == finish
