from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from moneta.application.config import Deployment
from moneta.domain import errors
from moneta.infrastructure.providers.anthropic import AnthropicProvider
from tests.providers.fakes.anthropic_api import API_KEY, FakeAnthropic, error_body

ADAPTER = AnthropicProvider({})
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather at a place",
    "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}}


@pytest.fixture
async def fake() -> AsyncIterator[FakeAnthropic]:
    server = await FakeAnthropic().start()
    yield server
    await server.stop()


def deployment(fake: FakeAnthropic, **extra) -> Deployment:
    return Deployment(id="d1", model_name="claude", provider="anthropic", provider_model="claude-sonnet-4-5",
                      api_base=fake.url, api_key=API_KEY, extra_params=extra)


def body(**params) -> dict:
    return {"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "Hello"}], **params}


async def test_conversation_with_tools_and_images_is_translated_to_messages(fake):
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [
            {"type": "text", "text": "Compare these."},
            {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"location": "Paris"}'}},
            {"id": "toolu_2", "type": "function", "function": {"name": "get_weather", "arguments": '{"location": "Rome"}'}}]},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "18C"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": "24C"},
        {"role": "user", "content": "Which is warmer?"},
    ]
    request = {"model": "claude-sonnet-4-5", "messages": messages, "temperature": 0.2, "top_p": 0.9,
               "max_completion_tokens": 300, "stop": "END", "user": "user-7", "tools": [WEATHER_TOOL],
               "tool_choice": "required", "parallel_tool_calls": False}

    response = await ADAPTER.chat(deployment(fake), request)

    assert fake.last.path == "/v1/messages"
    assert fake.last.body == {
        "model": "claude-sonnet-4-5",
        "system": [{"type": "text", "text": "Be brief."}],
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "Compare these."},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}]},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"location": "Paris"}},
                {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"location": "Rome"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": "24C"},
                {"type": "text", "text": "Which is warmer?"}]},
        ],
        "max_tokens": 300, "temperature": 0.2, "top_p": 0.9, "stop_sequences": ["END"],
        "metadata": {"user_id": "user-7"},
        "tools": [{"name": "get_weather", "description": "Weather at a place",
                   "input_schema": WEATHER_TOOL["function"]["parameters"]}],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
    }
    assert response["object"] == "chat.completion"
    assert response["choices"][0] == {"index": 0, "finish_reason": "stop",
                                      "message": {"role": "assistant", "content": "Hi! My name is Claude."}}
    assert response["usage"] == {"prompt_tokens": 2095, "completion_tokens": 503, "total_tokens": 2598}


@pytest.mark.parametrize("choice, expected", [
    ("auto", {"type": "auto"}), ("none", {"type": "none"}),
    ({"type": "function", "function": {"name": "get_weather"}}, {"type": "tool", "name": "get_weather"}),
])
async def test_tool_choice(fake, choice, expected):
    await ADAPTER.chat(deployment(fake), body(tools=[WEATHER_TOOL], tool_choice=choice))
    assert fake.last.body["tool_choice"] == expected


async def test_max_tokens_defaults_to_4096(fake):
    await ADAPTER.chat(deployment(fake), body())
    assert fake.last.body["max_tokens"] == 4096


async def test_tool_use_answer_becomes_tool_calls_and_cache_counts_as_prompt(fake):
    fake.message = {**fake.message, "stop_reason": "tool_use",
                    "content": [{"type": "text", "text": "Checking."},
                                {"type": "tool_use", "id": "toolu_9", "name": "get_weather",
                                 "input": {"location": "Oslo"}}],
                    "usage": {"input_tokens": 10, "output_tokens": 20, "cache_read_input_tokens": 1000,
                              "cache_creation_input_tokens": 50}}
    response = await ADAPTER.chat(deployment(fake), body(tools=[WEATHER_TOOL]))
    choice = response["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Checking."
    assert choice["message"]["tool_calls"] == [{"id": "toolu_9", "type": "function", "function": {
        "name": "get_weather", "arguments": '{"location":"Oslo"}'}}]
    assert response["usage"] == {"prompt_tokens": 1060, "completion_tokens": 20, "total_tokens": 1080,
                                 "prompt_tokens_details": {"cached_tokens": 1000},
                                 "cache_creation_input_tokens": 50}


async def test_reasoning_effort_enables_thinking_and_returns_reasoning_content(fake):
    thinking = {"type": "thinking", "thinking": "Let me think.", "signature": "sig=="}
    fake.message = {**fake.message, "content": [thinking, {"type": "text", "text": "42"}]}
    response = await ADAPTER.chat(deployment(fake), body(reasoning_effort="medium"))
    assert fake.last.body["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert fake.last.body["max_tokens"] == 4096 + 2048
    message = response["choices"][0]["message"]
    assert message["content"] == "42"
    assert message["reasoning_content"] == "Let me think."
    assert message["thinking_blocks"] == [thinking]


async def test_json_schema_is_answered_through_a_forced_tool(fake):
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    fake.message = {**fake.message, "stop_reason": "tool_use", "content": [
        {"type": "tool_use", "id": "toolu_3", "name": "json_tool_call", "input": {"city": "Oslo"}}]}
    response = await ADAPTER.chat(deployment(fake), body(
        response_format={"type": "json_schema", "json_schema": {"name": "place", "schema": schema}}))
    assert fake.last.body["tools"] == [{"name": "json_tool_call", "description": "Respond with the place object.",
                                        "input_schema": schema}]
    assert fake.last.body["tool_choice"] == {"type": "tool", "name": "json_tool_call"}
    assert response["choices"][0]["message"] == {"role": "assistant", "content": '{"city":"Oslo"}'}
    assert response["choices"][0]["finish_reason"] == "stop"


async def test_stream_translates_text_and_tool_call_deltas_and_ends_with_usage(fake):
    chunks = [c async for c in ADAPTER.chat_stream(deployment(fake), body(tools=[WEATHER_TOOL]))]

    assert fake.last.body["stream"] is True
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert "".join(d.get("content") or "" for d in deltas) == "Okay, let's check"
    calls = [call for d in deltas for call in d.get("tool_calls", ())]
    assert calls[0] == {"index": 0, "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "type": "function",
                        "function": {"name": "get_weather", "arguments": ""}}
    assert "".join(c["function"]["arguments"] for c in calls) == '{"location": "San Francisco, CA"}'
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "tool_calls"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 572, "completion_tokens": 89, "total_tokens": 661,
                                   "prompt_tokens_details": {"cached_tokens": 100}}
    assert {c["id"] for c in chunks} == {"msg_014p7gG3wDgGV9EUtLvnow3U"}


async def test_stream_error_event_raises_the_mapped_error(fake):
    fake.events = fake.events[:4] + [("error", error_body("overloaded_error", "Overloaded"))]
    with pytest.raises(errors.ServiceUnavailableError) as caught:
        [c async for c in ADAPTER.chat_stream(deployment(fake), body())]
    assert caught.value.status_code == 503


async def test_stream_cut_before_message_stop_is_a_connection_error(fake):
    fake.events = fake.events[:4]
    with pytest.raises(errors.APIConnectionError):
        [c async for c in ADAPTER.chat_stream(deployment(fake), body())]


async def test_unsupported_parameter_is_refused_naming_it(fake):
    with pytest.raises(errors.UnsupportedParamsError) as caught:
        await ADAPTER.chat(deployment(fake), body(n=2))
    assert caught.value.param == "n" and "anthropic" in caught.value.message
    assert fake.seen == []


@pytest.mark.parametrize("where", ["deployment", "request"])
async def test_drop_params_drops_unsupported_parameters(fake, where):
    dep = deployment(fake, drop_params=True) if where == "deployment" else deployment(fake)
    request = body(n=2, logit_bias={"1": 2}, **({"drop_params": True} if where == "request" else {}))
    await ADAPTER.chat(dep, request)
    assert not {"n", "logit_bias", "drop_params"} & set(fake.last.body)


async def test_missing_key_fails_before_any_request(fake):
    dep = Deployment(id="d", model_name="c", provider="anthropic", provider_model="m", api_base=fake.url)
    with pytest.raises(errors.AuthenticationError):
        await ADAPTER.chat(dep, body())
    assert fake.seen == []
