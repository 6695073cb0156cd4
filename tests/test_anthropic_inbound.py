"""Anthropic's Messages API inbound: the official `anthropic` SDK against the gateway,
routed to the mock provider and to a wire-level fake OpenAI upstream, with the ledger checked."""
from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import anthropic
import httpx
import orjson
import pytest
from aiohttp import web

from moneta import token_counter
from moneta.api.routes import anthropic as anthropic_routes
from moneta.application.anthropic_messages import to_anthropic_message, to_openai_chat
from moneta.application.anthropic_stream import AnthropicStream
from tests.fake_openai import FakeOpenAI, _send
from tests.inprocess_gateway import InProcessGateway

MASTER_KEY = "sk-master-test"
WEATHER_TOOL = {"name": "get_weather", "description": "The weather in a city.",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


class ToolCallingUpstream(FakeOpenAI):
    """Asks for `get_weather` when given tools and no tool result yet; otherwise answers text."""

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())  # aiohttp keeps the body: the text path reads it again
        if not body.get("tools") or body["messages"][-1]["role"] == "tool":
            return await super()._chat(request)
        refusal = await self._record(request, body)
        if refusal is not None:
            return refusal
        if body.get("stream"):
            return await self._tool_call_stream(request, body)
        call = {"id": "call_weather_1", "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
        return web.json_response({
            "id": "chatcmpl-tool", "object": "chat.completion", "created": int(time.time()), "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": None, "tool_calls": [call]},
                         "finish_reason": "tool_calls"}],
            "usage": self.usage,
        })

    async def _tool_call_stream(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        base = {"id": "chatcmpl-tool", "object": "chat.completion.chunk", "created": int(time.time()),
                "model": body["model"]}
        deltas = [
            {"role": "assistant", "content": "Let me check."},
            {"tool_calls": [{"index": 0, "id": "call_weather_1", "type": "function",
                             "function": {"name": "get_weather", "arguments": ""}}]},
            {"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]},
            {"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]},
        ]
        for delta in deltas:
            await _send(response, {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
        await _send(response, {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
        await _send(response, {**base, "choices": [], "usage": self.usage})
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


@pytest.fixture
def upstream():
    fake = ToolCallingUpstream().start()
    yield fake
    fake.stop()


@pytest.fixture
def server(tmp_path, upstream):
    config = {
        "model_list": [
            {"model_name": "claude-mock", "litellm_params": {"model": "mock/claude-mock"}},
            {"model_name": "gpt-upstream", "litellm_params": {"model": "openai/gpt-4o-mini",
                                                              "api_base": upstream.base_url,
                                                              "api_key": upstream.api_key}},
        ],
        "general_settings": {"master_key": MASTER_KEY},
    }
    with InProcessGateway(config, tmp_path, [anthropic_routes.router]) as running:
        yield running


@pytest.fixture
def client(server):
    return anthropic.Anthropic(base_url=server.base_url, api_key=MASTER_KEY, max_retries=0)


def _event_names(server: InProcessGateway, request_id: str) -> list[str]:
    return [type(event).__name__ for event in server.events(request_id)]


# -- through the SDK -------------------------------------------------------------------------

def test_text_message_from_the_mock_provider_is_recorded(server, client):
    message = client.messages.create(model="claude-mock", max_tokens=64, system="Be terse.",
                                     messages=[{"role": "user", "content": "two words"}])

    assert message.type == "message" and message.role == "assistant" and message.model == "claude-mock"
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == "This is a mock response to: two words"
    assert message.stop_reason == "end_turn"
    # The mock counts with the tokenizer: the system and user messages in, its reply out.
    prompt = token_counter(model="claude-mock", messages=[{"role": "system", "content": "Be terse."},
                                                          {"role": "user", "content": "two words"}])
    reply = token_counter(model="claude-mock", text=message.content[0].text)
    assert (message.usage.input_tokens, message.usage.output_tokens) == (prompt, reply)
    assert message.id == f"msg_{message._request_id.replace('-', '')}"
    record = server.record(message._request_id)
    assert (record.call_type, record.outcome) == ("anthropic_messages", "completed")
    assert record.cost == Decimal("0.000001") * prompt + Decimal("0.000002") * reply
    assert _event_names(server, message._request_id) == ["Admitted", "Completed"]


def test_text_message_from_an_openai_upstream(server, client, upstream):
    message = client.messages.create(model="gpt-upstream", max_tokens=100, stop_sequences=["END"],
                                     metadata={"user_id": "user-7"}, messages=[{"role": "user", "content": "hi"}],
                                     extra_body={"temperature": 0.5, "top_k": 5})

    assert message.content[0].text == upstream.reply
    assert (message.usage.input_tokens, message.usage.output_tokens) == (11, 7)
    sent = upstream.requests[-1].body
    assert {k: v for k, v in sent.items() if k != "stream"} == {
        "model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100,
        "temperature": 0.5, "stop": ["END"], "user": "user-7"}
    completed = server.events(message._request_id)[-1]
    assert completed.provider_model == "gpt-4o-mini"
    assert completed.cost == (11 * Decimal("0.15") + 7 * Decimal("0.6")) / 1_000_000
    assert completed.price_source.startswith("genai-prices ")
    assert server.record(message._request_id).model_group == "gpt-upstream"


@pytest.mark.parametrize("model", ["claude-mock", "gpt-upstream"])
def test_streamed_text_through_the_sdk(server, client, upstream, model):
    with client.messages.stream(model=model, max_tokens=64, messages=[{"role": "user", "content": "hello there"}]) \
            as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
        request_id = stream.response.headers["request-id"]

    expected = upstream.reply if model == "gpt-upstream" else "This is a mock response to: hello there"
    assert text == expected
    assert [block.type for block in final.content] == ["text"] and final.content[0].text == expected
    assert final.stop_reason == "end_turn"
    mock_prompt = token_counter(model=model, messages=[{"role": "user", "content": "hello there"}])
    assert final.usage.output_tokens == (7 if model == "gpt-upstream" else token_counter(model=model, text=expected))
    assert final.usage.input_tokens == (11 if model == "gpt-upstream" else mock_prompt)
    record = server.record(request_id)
    assert (record.call_type, record.outcome) == ("anthropic_messages", "completed")
    assert _event_names(server, request_id) == ["Admitted", "Completed"]


def test_tool_use_round_trip(server, client, upstream):
    messages: list[dict[str, Any]] = [{"role": "user", "content": "Weather in Paris?"}]
    first = client.messages.create(model="gpt-upstream", max_tokens=200, tools=[WEATHER_TOOL],
                                   tool_choice={"type": "any"}, messages=messages)

    assert first.stop_reason == "tool_use"
    [call] = first.content
    assert (call.type, call.id, call.name, call.input) == ("tool_use", "call_weather_1", "get_weather",
                                                           {"city": "Paris"})
    assert upstream.requests[-1].body["tools"] == [{"type": "function", "function": {
        "name": "get_weather", "description": "The weather in a city.", "parameters": WEATHER_TOOL["input_schema"]}}]
    assert upstream.requests[-1].body["tool_choice"] == "required"

    messages += [{"role": "assistant", "content": first.content},
                 {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "18°C"}]}]
    second = client.messages.create(model="gpt-upstream", max_tokens=200, tools=[WEATHER_TOOL], messages=messages)

    assert second.content[0].text == upstream.reply and second.stop_reason == "end_turn"
    assert upstream.requests[-1].body["messages"][1:] == [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_weather_1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_weather_1", "content": "18°C"},
    ]
    for message in (first, second):
        assert server.record(message._request_id).outcome == "completed"


def test_streamed_tool_use_keeps_block_order(server, client):
    with client.messages.stream(model="gpt-upstream", max_tokens=200, tools=[WEATHER_TOOL],
                                messages=[{"role": "user", "content": "Weather in Paris?"}]) as stream:
        final = stream.get_final_message()

    assert [block.type for block in final.content] == ["text", "tool_use"]
    assert final.content[0].text == "Let me check."
    assert (final.content[1].id, final.content[1].input) == ("call_weather_1", {"city": "Paris"})
    assert final.stop_reason == "tool_use"


def test_raw_sse_events_follow_anthropics_format(server):
    body = {"model": "claude-mock", "max_tokens": 20, "stream": True,
            "messages": [{"role": "user", "content": "one two three"}]}
    with httpx.stream("POST", server.base_url + "/v1/messages", json=body,
                      headers={"x-api-key": MASTER_KEY}) as response:
        raw = response.read().decode()

    frames = [frame.split("\n") for frame in raw.strip().split("\n\n")]
    names = [lines[0].removeprefix("event: ") for lines in frames]
    payloads = [orjson.loads(lines[1].removeprefix("data: ")) for lines in frames]
    assert names[:2] == ["message_start", "content_block_start"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(names[2:-3]) == {"content_block_delta"}
    assert all(p["type"] == name for p, name in zip(payloads, names))
    assert "".join(p["delta"]["text"] for p in payloads[2:-3]) == "This is a mock response to: one two three"
    assert payloads[-2]["usage"]["output_tokens"] == token_counter(
        model="claude-mock", text="This is a mock response to: one two three")


def test_count_tokens_uses_the_deployments_encoding(client):
    from moneta.infrastructure.tokenizer import encoding

    o200k = encoding("o200k_base")
    counted = client.messages.count_tokens(model="gpt-upstream", system="Be terse.",
                                           messages=[{"role": "user", "content": "How many tokens is this?"}])

    framing = 3 + 3 + 3  # the reply, then each of the two messages
    expected = framing + sum(len(o200k.encode(t)) for t in ("system", "Be terse.", "user", "How many tokens is this?"))
    assert counted.input_tokens == expected
    with_tools = client.messages.count_tokens(model="gpt-upstream", tools=[WEATHER_TOOL],
                                              messages=[{"role": "user", "content": "How many tokens is this?"}])
    assert with_tools.input_tokens > expected - len(o200k.encode("Be terse.")) - 3 - 1


# -- errors in Anthropic's shape ---------------------------------------------------------------

def test_unknown_model_is_not_found_and_recorded(server, client):
    with pytest.raises(anthropic.NotFoundError) as raised:
        client.messages.create(model="no-such-model", max_tokens=10, messages=[{"role": "user", "content": "hi"}])

    assert raised.value.status_code == 404
    assert raised.value.body["type"] == "error"
    assert raised.value.body["error"]["type"] == "not_found_error"
    assert "no-such-model" in raised.value.body["error"]["message"]
    request_id = raised.value.response.headers["request-id"]
    assert raised.value.body["request_id"] == request_id
    record = server.record(request_id)
    assert (record.call_type, record.outcome) == ("anthropic_messages", "denied")


def test_bad_key_is_an_authentication_error(server):
    client = anthropic.Anthropic(base_url=server.base_url, api_key="sk-wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as raised:
        client.messages.create(model="claude-mock", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    assert raised.value.body["error"]["type"] == "authentication_error"
    with pytest.raises(anthropic.AuthenticationError):
        client.messages.count_tokens(model="claude-mock", messages=[{"role": "user", "content": "hi"}])


def test_upstream_rate_limit_is_a_rate_limit_error(client, upstream):
    upstream.fail_with = (429, {"message": "slow down", "type": "rate_limit_error", "code": "rate_limit_exceeded"})
    with pytest.raises(anthropic.RateLimitError) as raised:
        client.messages.create(model="gpt-upstream", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    assert raised.value.body["error"]["type"] == "rate_limit_error"
    with pytest.raises(anthropic.RateLimitError):
        with client.messages.stream(model="gpt-upstream", max_tokens=10,
                                    messages=[{"role": "user", "content": "hi"}]) as stream:
            stream.get_final_message()


def test_invalid_requests_are_invalid_request_errors(server, client):
    missing_max_tokens = httpx.post(server.base_url + "/v1/messages", headers={"x-api-key": MASTER_KEY},
                                    json={"model": "claude-mock", "messages": [{"role": "user", "content": "hi"}]})
    assert missing_max_tokens.status_code == 400
    assert missing_max_tokens.json()["error"] == {"type": "invalid_request_error",
                                                  "message": "max_tokens: must be an integer of at least 1"}
    assert server.record(missing_max_tokens.headers["request-id"]).outcome == "denied"
    with pytest.raises(anthropic.BadRequestError, match="document"):
        client.messages.create(model="claude-mock", max_tokens=10, messages=[{"role": "user", "content": [
            {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "x"}}]}])


# -- the translation itself --------------------------------------------------------------------

def test_request_translation_of_blocks_images_thinking_and_choices():
    chat = to_openai_chat({
        "model": "m", "max_tokens": 10, "system": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
        "thinking": {"type": "enabled", "budget_tokens": 5000}, "top_k": 3,
        "tool_choice": {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
        "tools": [WEATHER_TOOL],
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "look"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "unsigned", "signature": ""},
                {"type": "thinking", "thinking": "signed", "signature": "sig"},
                {"type": "text", "text": "ok"}]},
        ],
    })

    assert chat["messages"] == [
        {"role": "system", "content": "a\nb"},
        {"role": "user", "content": [
            {"type": "text", "text": "look"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]},
        {"role": "assistant", "content": "ok",
         "thinking_blocks": [{"type": "thinking", "thinking": "signed", "signature": "sig"}]},
    ]
    assert chat["reasoning_effort"] == "high"
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert chat["parallel_tool_calls"] is False
    assert "top_k" not in chat


@pytest.mark.parametrize("finish, stop", [("stop", "end_turn"), ("length", "max_tokens"),
                                          ("tool_calls", "tool_use"), ("content_filter", "refusal")])
def test_response_translation(finish, stop):
    response = {"choices": [{"index": 0, "finish_reason": finish, "message": {
        "role": "assistant", "content": "hi", "reasoning_content": "thought",
        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}}]}}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 20, "prompt_tokens_details": {"cached_tokens": 60}}}

    message = to_anthropic_message(response, "msg_1", "my-model")

    assert message["stop_reason"] == stop
    assert message["content"] == [{"type": "thinking", "thinking": "thought", "signature": ""},
                                  {"type": "text", "text": "hi"},
                                  {"type": "tool_use", "id": "c1", "name": "f", "input": {"x": 1}}]
    assert message["usage"] == {"input_tokens": 40, "output_tokens": 20, "cache_read_input_tokens": 60,
                                "cache_creation_input_tokens": 0}


def _chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def test_stream_translation_numbers_interleaved_blocks():
    stream = AnthropicStream("msg_1", "m")
    chunks = [
        _chunk({"reasoning_content": "hmm"}),
        _chunk({"thinking_blocks": [{"type": "thinking", "thinking": "", "signature": "sig"}]}),
        _chunk({"content": "Checking."}),
        _chunk({"tool_calls": [{"index": 0, "id": "a", "function": {"name": "f", "arguments": '{"x"'}}]}),
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]}),
        _chunk({"tool_calls": [{"index": 1, "id": "b", "function": {"name": "g", "arguments": "{}"}}]}),
        _chunk({"content": "Done."}, "tool_calls"),
        {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 9}},
    ]
    events = stream.start() + [e for c in chunks for e in stream.on_chunk(c)] + stream.finish()

    starts = [(e["index"], e["content_block"]["type"]) for e in events if e["type"] == "content_block_start"]
    assert starts == [(0, "thinking"), (1, "text"), (2, "tool_use"), (3, "tool_use"), (4, "text")]
    stops = [e["index"] for e in events if e["type"] == "content_block_stop"]
    assert stops == [0, 1, 2, 3, 4]
    deltas = [(e["index"], e["delta"]["type"]) for e in events if e["type"] == "content_block_delta"]
    assert deltas == [(0, "thinking_delta"), (0, "signature_delta"), (1, "text_delta"), (2, "input_json_delta"),
                      (2, "input_json_delta"), (3, "input_json_delta"), (4, "text_delta")]
    assert events[-2] == {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                          "usage": {"input_tokens": 5, "output_tokens": 9, "cache_read_input_tokens": 0,
                                    "cache_creation_input_tokens": 0}}
    assert events[-1] == {"type": "message_stop"}
