"""Legacy text completions on chat-only providers: each adapter translates them to its own chat
request, checked on the wire against the fakes, and answers with a `text_completion` object."""
from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from moneta.application.config import Deployment
from moneta.domain import errors
from moneta.infrastructure.http_session import close_session
from moneta.infrastructure.providers.anthropic import AnthropicProvider
from moneta.infrastructure.providers.bedrock import BedrockProvider
from moneta.infrastructure.providers.cohere import CohereProvider
from moneta.infrastructure.providers.gemini import GeminiProvider
from moneta.infrastructure.providers.ollama import OllamaProvider
from tests.providers import bedrock_fake, cohere_fake
from tests.providers.bedrock_fake import FakeBedrock
from tests.providers.cohere_fake import FakeCohere
from tests.providers.fakes import anthropic_api, google_api
from tests.providers.fakes.anthropic_api import FakeAnthropic
from tests.providers.fakes.google_api import FakeGoogle
from tests.providers.fakes.ollama_api import FakeOllama

REFUSED = [("echo", True), ("logprobs", 2), ("best_of", 3), ("suffix", "\n}")]


def _without_created(response: dict) -> dict:
    assert isinstance(response.pop("created"), int)
    return response


# -- Anthropic ---------------------------------------------------------------------------------

@pytest.fixture
async def anthropic() -> AsyncIterator[FakeAnthropic]:
    server = await FakeAnthropic().start()
    yield server
    await server.stop()


def anthropic_deployment(fake: FakeAnthropic, **extra) -> Deployment:
    return Deployment(id="a", model_name="claude", provider="anthropic", provider_model="claude-sonnet-4-5",
                      api_base=fake.url, api_key=anthropic_api.API_KEY, extra_params=extra)


async def test_anthropic_string_prompt_becomes_one_user_message(anthropic):
    request = {"model": "claude-sonnet-4-5", "prompt": "Say hi", "max_tokens": 20, "temperature": 0.2,
               "top_p": 0.9, "stop": "\n", "user": "user-7", "stream": False}

    response = await AnthropicProvider({}).text_completion(anthropic_deployment(anthropic), request)

    assert anthropic.last.path == "/v1/messages"
    assert anthropic.last.body == {
        "model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": [{"type": "text", "text": "Say hi"}]}],
        "max_tokens": 20, "temperature": 0.2, "top_p": 0.9, "stop_sequences": ["\n"],
        "metadata": {"user_id": "user-7"}}
    assert _without_created(response) == {
        "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF", "object": "text_completion", "model": "claude-sonnet-4-5-20250929",
        "choices": [{"text": "Hi! My name is Claude.", "index": 0, "logprobs": None, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 2095, "completion_tokens": 503, "total_tokens": 2598}}


async def test_anthropic_list_of_prompts_sends_one_request_each_and_sums_usage(anthropic):
    anthropic.message = {**anthropic.message, "stop_reason": "max_tokens"}
    request = {"model": "claude-sonnet-4-5", "prompt": ["Say hi", "Say bye"], "max_tokens": 5}

    response = await AnthropicProvider({}).text_completion(anthropic_deployment(anthropic), request)

    assert sorted(seen.body["messages"][0]["content"][0]["text"] for seen in anthropic.seen) == ["Say bye", "Say hi"]
    assert {seen.body["max_tokens"] for seen in anthropic.seen} == {5}
    assert [(c["index"], c["finish_reason"]) for c in response["choices"]] == [(0, "length"), (1, "length")]
    assert response["usage"] == {"prompt_tokens": 4190, "completion_tokens": 1006, "total_tokens": 5196}


@pytest.mark.parametrize("name, value", REFUSED)
async def test_anthropic_refuses_text_only_parameters_before_calling(anthropic, name, value):
    request = {"model": "claude-sonnet-4-5", "prompt": "Say hi", name: value}
    with pytest.raises(errors.UnsupportedParamsError) as caught:
        await AnthropicProvider({}).text_completion(anthropic_deployment(anthropic), request)
    assert caught.value.param == name and caught.value.status_code == 400
    assert "anthropic" in caught.value.message
    assert anthropic.seen == []


async def test_drop_params_drops_text_only_parameters(anthropic):
    request = {"model": "claude-sonnet-4-5", "prompt": "Say hi", "echo": True, "logprobs": 1, "best_of": 2}
    response = await AnthropicProvider({}).text_completion(anthropic_deployment(anthropic, drop_params=True), request)
    assert response["choices"][0]["text"] == "Hi! My name is Claude."
    assert {"echo", "logprobs", "best_of", "drop_params", "prompt"}.isdisjoint(anthropic.last.body)


async def test_text_only_parameters_at_their_defaults_pass(anthropic):
    request = {"model": "claude-sonnet-4-5", "prompt": "Say hi", "echo": False, "best_of": 1, "logprobs": None}
    await AnthropicProvider({}).text_completion(anthropic_deployment(anthropic), request)
    assert anthropic.last.body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Say hi"}]}]


@pytest.mark.parametrize("prompt", [[1734, 374, 264], [[1734, 374], [264]], ["Say hi", [1734]]])
async def test_token_id_prompts_are_refused(anthropic, prompt):
    with pytest.raises(errors.BadRequestError) as caught:
        await AnthropicProvider({}).text_completion(anthropic_deployment(anthropic),
                                                    {"model": "claude-sonnet-4-5", "prompt": prompt})
    assert caught.value.param == "prompt" and caught.value.status_code == 400
    assert anthropic.seen == []


# -- Gemini ------------------------------------------------------------------------------------

@pytest.fixture
async def google() -> AsyncIterator[FakeGoogle]:
    server = await FakeGoogle().start()
    yield server
    await server.stop()


def gemini_deployment(fake: FakeGoogle) -> Deployment:
    return Deployment(id="g", model_name="flash", provider="gemini", provider_model="gemini-2.5-flash",
                      api_base=f"{fake.url}/v1beta", api_key=google_api.API_KEY)


async def test_gemini_string_prompt_carries_n_seed_and_stop(google):
    request = {"model": "gemini-2.5-flash", "prompt": "Say hi", "max_tokens": 20, "n": 2, "seed": 3, "stop": ["\n"]}

    response = await GeminiProvider({}).text_completion(gemini_deployment(google), request)

    assert google.last.path == "/v1beta/models/gemini-2.5-flash:generateContent"
    assert google.last.body == {
        "contents": [{"role": "user", "parts": [{"text": "Say hi"}]}],
        "generationConfig": {"seed": 3, "candidateCount": 2, "maxOutputTokens": 20, "stopSequences": ["\n"]}}
    assert _without_created(response) == {
        "id": "resp-1", "object": "text_completion", "model": "gemini-2.5-flash",
        "choices": [{"text": "Hello there.", "index": 0, "logprobs": None, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 8, "completion_tokens": 12, "total_tokens": 20}}


async def test_gemini_numbers_choices_prompt_by_prompt(google):
    candidate = google.response["candidates"][0]
    google.response = {**google.response, "candidates": [
        candidate, {**candidate, "index": 1, "finishReason": "MAX_TOKENS",
                    "content": {"role": "model", "parts": [{"text": "Hi."}]}}]}
    request = {"model": "gemini-2.5-flash", "prompt": ["Say hi", "Say bye"], "n": 2}

    response = await GeminiProvider({}).text_completion(gemini_deployment(google), request)

    assert len(google.seen) == 2
    assert [(c["index"], c["text"], c["finish_reason"]) for c in response["choices"]] == [
        (0, "Hello there.", "stop"), (1, "Hi.", "length"), (2, "Hello there.", "stop"), (3, "Hi.", "length")]
    assert response["usage"] == {"prompt_tokens": 16, "completion_tokens": 24, "total_tokens": 40}


async def test_gemini_refuses_logprobs(google):
    with pytest.raises(errors.UnsupportedParamsError) as caught:
        await GeminiProvider({}).text_completion(gemini_deployment(google),
                                                 {"model": "gemini-2.5-flash", "prompt": "Say hi", "logprobs": 1})
    assert caught.value.param == "logprobs"
    assert google.seen == []


# -- Bedrock -----------------------------------------------------------------------------------

MODEL_ID = "anthropic.claude-3-5-sonnet-20240620-v1:0"


@pytest.fixture
async def bedrock() -> AsyncIterator[FakeBedrock]:
    server = await FakeBedrock().start()
    server.reply = lambda received: bedrock_fake.Reply(json={
        "output": {"message": {"role": "assistant", "content": [
            {"text": "re: " + received.json["messages"][0]["content"][0]["text"]}]}},
        "stopReason": "end_turn", "usage": {"inputTokens": 10, "outputTokens": 3, "totalTokens": 13}})
    yield server
    await server.stop()
    await close_session()


def bedrock_deployment(fake: FakeBedrock) -> Deployment:
    return Deployment(id="b", model_name="claude", provider="bedrock", provider_model=MODEL_ID, api_base=fake.url,
                      extra_params={"aws_access_key_id": bedrock_fake.ACCESS_KEY,
                                    "aws_secret_access_key": bedrock_fake.SECRET_KEY,
                                    "aws_session_token": bedrock_fake.SESSION_TOKEN,
                                    "aws_region_name": bedrock_fake.REGION})


async def test_bedrock_string_prompt_goes_through_converse(bedrock):
    request = {"model": MODEL_ID, "prompt": "Say hi", "max_tokens": 20, "temperature": 0.5, "stop": "\n"}

    response = await BedrockProvider().text_completion(bedrock_deployment(bedrock), request)

    (received,) = bedrock.received
    assert received.signature_problem is None
    assert received.raw_path == "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse"
    assert received.json == {"messages": [{"role": "user", "content": [{"text": "Say hi"}]}],
                             "inferenceConfig": {"maxTokens": 20, "temperature": 0.5, "stopSequences": ["\n"]}}
    assert response["object"] == "text_completion"
    assert response["choices"] == [{"text": "re: Say hi", "index": 0, "logprobs": None, "finish_reason": "stop"}]
    assert response["usage"] == {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13,
                                 "prompt_tokens_details": {"cached_tokens": 0}}


async def test_bedrock_list_of_prompts_keeps_each_answer_at_its_prompt(bedrock):
    prompts = ["one", "two", "three"]
    response = await BedrockProvider().text_completion(bedrock_deployment(bedrock),
                                                       {"model": MODEL_ID, "prompt": prompts})
    assert len(bedrock.received) == 3
    assert [(c["index"], c["text"]) for c in response["choices"]] == [(0, "re: one"), (1, "re: two"),
                                                                      (2, "re: three")]
    assert response["usage"]["prompt_tokens"] == 30 and response["usage"]["total_tokens"] == 39


async def test_bedrock_refuses_suffix(bedrock):
    with pytest.raises(errors.UnsupportedParamsError) as caught:
        await BedrockProvider().text_completion(bedrock_deployment(bedrock),
                                                {"model": MODEL_ID, "prompt": "def f(", "suffix": "\n    return"})
    assert caught.value.param == "suffix"
    assert bedrock.received == []


# -- Cohere ------------------------------------------------------------------------------------

COMMAND = "command-r-plus-08-2024"


@pytest.fixture
async def cohere() -> AsyncIterator[FakeCohere]:
    server = await FakeCohere().start()
    server.reply = lambda received: cohere_fake.Reply(json={
        "id": "c0ffee", "finish_reason": "MAX_TOKENS",
        "message": {"role": "assistant", "content": [
            {"type": "text", "text": "re: " + received.json["messages"][0]["content"]}]},
        "usage": {"billed_units": {"input_tokens": 4, "output_tokens": 2}}})
    yield server
    await server.stop()
    await close_session()


def cohere_deployment(fake: FakeCohere) -> Deployment:
    return Deployment(id="c", model_name="command", provider="cohere", provider_model=COMMAND, api_base=fake.url,
                      api_key=cohere_fake.API_KEY)


async def test_cohere_string_prompt_goes_through_v2_chat(cohere):
    request = {"model": COMMAND, "prompt": "Say hi", "max_tokens": 20, "top_p": 0.7, "seed": 9}

    response = await CohereProvider().text_completion(cohere_deployment(cohere), request)

    (received,) = cohere.received
    assert received.path == "/v2/chat"
    assert received.json == {"model": COMMAND, "stream": False, "messages": [{"role": "user", "content": "Say hi"}],
                             "p": 0.7, "seed": 9, "max_tokens": 20}
    assert _without_created(response) == {
        "id": "c0ffee", "object": "text_completion", "model": COMMAND,
        "choices": [{"text": "re: Say hi", "index": 0, "logprobs": None, "finish_reason": "length"}],
        "usage": {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}}


async def test_cohere_list_of_prompts(cohere):
    response = await CohereProvider().text_completion(cohere_deployment(cohere),
                                                      {"model": COMMAND, "prompt": ["a", "b"]})
    assert [c["text"] for c in response["choices"]] == ["re: a", "re: b"]
    assert response["usage"] == {"prompt_tokens": 8, "completion_tokens": 4, "total_tokens": 12}


async def test_cohere_refuses_best_of(cohere):
    with pytest.raises(errors.UnsupportedParamsError) as caught:
        await CohereProvider().text_completion(cohere_deployment(cohere),
                                               {"model": COMMAND, "prompt": "Say hi", "best_of": 2})
    assert caught.value.param == "best_of"
    assert cohere.received == []


# -- Ollama ------------------------------------------------------------------------------------

@pytest.fixture
async def ollama() -> AsyncIterator[FakeOllama]:
    server = await FakeOllama().start()
    yield server
    await server.stop()


def ollama_deployment(fake: FakeOllama) -> Deployment:
    return Deployment(id="o", model_name="llama", provider="ollama", provider_model="llama3.2", api_base=fake.url)


async def test_ollama_string_prompt_goes_through_api_chat(ollama):
    request = {"model": "llama3.2", "prompt": "Why is the sky blue?", "max_tokens": 64, "temperature": 0.1,
               "user": "user-7"}

    response = await OllamaProvider("ollama", {}).text_completion(ollama_deployment(ollama), request)

    assert ollama.last.path == "/api/chat"
    assert ollama.last.body == {"model": "llama3.2", "stream": False,
                                "messages": [{"role": "user", "content": "Why is the sky blue?"}],
                                "options": {"temperature": 0.1, "num_predict": 64}}
    assert response["object"] == "text_completion" and response["model"] == "llama3.2"
    assert response["choices"] == [{"text": "The sky is blue because of Rayleigh scattering.", "index": 0,
                                    "logprobs": None, "finish_reason": "stop"}]
    assert response["usage"] == {"prompt_tokens": 26, "completion_tokens": 282, "total_tokens": 308}


async def test_ollama_list_of_prompts(ollama):
    response = await OllamaProvider("ollama", {}).text_completion(ollama_deployment(ollama),
                                                                  {"model": "llama3.2", "prompt": ["a", "b"]})
    assert sorted(seen.body["messages"][0]["content"] for seen in ollama.seen) == ["a", "b"]
    assert [c["index"] for c in response["choices"]] == [0, 1]
    assert response["usage"] == {"prompt_tokens": 52, "completion_tokens": 564, "total_tokens": 616}


async def test_ollama_refuses_echo(ollama):
    with pytest.raises(errors.UnsupportedParamsError) as caught:
        await OllamaProvider("ollama", {}).text_completion(ollama_deployment(ollama),
                                                           {"model": "llama3.2", "prompt": "hi", "echo": True})
    assert caught.value.param == "echo"
    assert ollama.seen == []
