from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from moneta.application.config import Deployment
from moneta.application.ports import AudioFile
from moneta.domain import errors
from moneta.infrastructure.providers.azure import AzureOpenAIProvider, EntraTokens
from moneta.infrastructure.providers.ollama import OllamaProvider
from moneta.infrastructure.providers.openai_family import (
    FAMILY,
    OpenAIFamilyProvider,
    family_providers,
)
from moneta.infrastructure.providers.registry import default_providers
from moneta.infrastructure.tokenizer import TiktokenCounter
from tests.providers.fakes.ollama_api import FakeOllama
from tests.providers.fakes.openai_api import ENTRA_TOKEN, FakeOpenAICompatible

KEY = "sk-family-test-key"
AUDIO = AudioFile("clip.wav", b"RIFF....WAVE", "audio/wav")


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAICompatible]:
    server = await FakeOpenAICompatible(KEY).start()
    yield server
    await server.stop()


@pytest.fixture
async def ollama() -> AsyncIterator[FakeOllama]:
    server = await FakeOllama().start()
    yield server
    await server.stop()


def family_member(name: str) -> OpenAIFamilyProvider:
    defaults = next(d for d in FAMILY if d.name == name)
    return OpenAIFamilyProvider(defaults, {k: KEY for k in defaults.key_envs[:1]})


def deployment(provider: str, api_base: str | None, model: str = "some-model", **extra) -> Deployment:
    return Deployment(id="d", model_name="m", provider=provider, provider_model=model, api_base=api_base,
                      extra_params=extra)


def body(**params) -> dict:
    return {"model": "some-model", "messages": [{"role": "user", "content": "Hi"}], **params}


@pytest.mark.parametrize("name, url", [
    ("openai", "https://api.openai.com/v1/chat/completions"),
    ("groq", "https://api.groq.com/openai/v1/chat/completions"),
    ("mistral", "https://api.mistral.ai/v1/chat/completions"),
    ("deepseek", "https://api.deepseek.com/v1/chat/completions"),
    ("together_ai", "https://api.together.xyz/v1/chat/completions"),
    ("fireworks_ai", "https://api.fireworks.ai/inference/v1/chat/completions"),
    ("openrouter", "https://openrouter.ai/api/v1/chat/completions"),
    ("xai", "https://api.x.ai/v1/chat/completions"),
    ("perplexity", "https://api.perplexity.ai/chat/completions"),
])
async def test_default_base_url_and_key_from_litellm_env_var(name, url):
    provider = family_member(name)
    assert provider._url(deployment(name, None), "/chat/completions") == url
    assert (await provider._headers(deployment(name, None)))["Authorization"] == f"Bearer {KEY}"


async def test_hosted_vllm_needs_an_api_base():
    with pytest.raises(errors.BadRequestError) as caught:
        await family_member("hosted_vllm").chat(deployment("hosted_vllm", None), body())
    assert caught.value.param == "api_base"


@pytest.mark.parametrize("name", [d.name for d in FAMILY])
async def test_chat_and_stream_reach_the_api_base_with_the_key(fake, name):
    provider, dep = family_member(name), deployment(name, f"{fake.url}/v1")
    response = await provider.chat(dep, body())
    assert response["choices"][0]["message"]["content"] == "Hello!"
    assert fake.last.path == "/v1/chat/completions"
    chunks = [c async for c in provider.chat_stream(dep, body())]
    assert fake.last.body["stream_options"] == {"include_usage": True}
    assert chunks[-1]["usage"]["total_tokens"] == 10


async def test_provider_renames_extra_headers_and_quietly_dropped_user(fake):
    dep = deployment("mistral", f"{fake.url}/v1", extra_headers={"X-Trace": "t-1"})
    await family_member("mistral").chat(dep, body(seed=3, max_completion_tokens=50, user="u-1", drop_params=False))
    assert fake.last.body == {"model": "some-model", "messages": [{"role": "user", "content": "Hi"}],
                              "random_seed": 3, "max_tokens": 50, "stream": False}
    assert fake.last.headers["x-trace"] == "t-1"


async def test_unsupported_parameter_refused_or_dropped(fake):
    groq = family_member("groq")
    with pytest.raises(errors.UnsupportedParamsError) as caught:
        await groq.chat(deployment("groq", f"{fake.url}/v1"), body(logit_bias={"50256": -100}))
    assert caught.value.param == "logit_bias" and caught.value.status_code == 400
    assert fake.seen == []
    await groq.chat(deployment("groq", f"{fake.url}/v1", drop_params=True), body(logit_bias={"50256": -100}))
    assert "logit_bias" not in fake.last.body


async def test_embeddings_and_transcription_where_offered(fake):
    openai, groq = family_member("openai"), family_member("groq")
    result = await openai.embedding(deployment("openai", f"{fake.url}/v1"), {"model": "e", "input": ["a", "b"]})
    assert len(result["data"]) == 2 and result["usage"]["prompt_tokens"] == 8
    with pytest.raises(errors.BadRequestError):
        await groq.embedding(deployment("groq", f"{fake.url}/v1"), {"model": "e", "input": "a"})
    text = await groq.transcription(deployment("groq", f"{fake.url}/v1", model="whisper-large-v3"), AUDIO, {})
    assert text == {"text": "The quick brown fox.", "usage": None, "duration": 8.47}
    assert fake.last.body["model"] == "whisper-large-v3" and fake.last.body["file"] == AUDIO.content
    with pytest.raises(errors.BadRequestError):
        await family_member("xai").transcription(deployment("xai", f"{fake.url}/v1"), AUDIO, {})


# -- Azure OpenAI ------------------------------------------------------------------------------

def azure(fake: FakeOpenAICompatible, api_key: str | None = KEY, **extra) -> Deployment:
    return Deployment(id="a", model_name="gpt", provider="azure", provider_model="my-gpt4o", api_base=fake.url,
                      api_key=api_key, api_version="2024-10-21", extra_params=extra)


async def test_azure_uses_deployment_urls_and_the_api_key_header(fake):
    provider = AzureOpenAIProvider({})
    await provider.chat(azure(fake), body())
    assert fake.last.path == "/openai/deployments/my-gpt4o/chat/completions"
    assert fake.last.query == {"api-version": "2024-10-21"}
    assert fake.last.headers["api-key"] == KEY and "authorization" not in fake.last.headers
    chunks = [c async for c in provider.chat_stream(azure(fake), body())]
    assert chunks[-1]["usage"]["prompt_tokens"] == 9
    await provider.embedding(azure(fake), {"model": "x", "input": "a"})
    assert fake.last.path == "/openai/deployments/my-gpt4o/embeddings"
    await provider.transcription(azure(fake), AUDIO, {})
    assert fake.last.path == "/openai/deployments/my-gpt4o/audio/transcriptions"


async def test_azure_ad_token_is_sent_as_bearer(fake):
    await AzureOpenAIProvider({}).chat(azure(fake, api_key=None, azure_ad_token=ENTRA_TOKEN), body())
    assert fake.last.headers["authorization"] == f"Bearer {ENTRA_TOKEN}"
    assert "api-key" not in fake.last.headers


async def test_azure_client_credentials_token_is_fetched_once_and_cached(fake):
    provider = AzureOpenAIProvider({}, tokens=EntraTokens(authority=fake.url))
    dep = azure(fake, api_key=None, tenant_id="tenant-1", client_id="client-1", client_secret="s3cret")
    await provider.chat(dep, body())
    await provider.chat(dep, body())
    token_request = next(s for s in fake.seen if s.path == "/tenant-1/oauth2/v2.0/token")
    assert token_request.body["client_id"] == "client-1"
    assert fake.token_requests == 1
    assert fake.last.headers["authorization"] == f"Bearer {ENTRA_TOKEN}"


async def test_azure_refused_client_secret_is_an_authentication_error_without_the_secret(fake):
    provider = AzureOpenAIProvider({}, tokens=EntraTokens(authority=fake.url))
    dep = azure(fake, api_key=None, tenant_id="t", client_id="c", client_secret="wrong-secret")
    with pytest.raises(errors.AuthenticationError) as caught:
        await provider.chat(dep, body())
    assert "invalid_client" in caught.value.message and "wrong-secret" not in caught.value.message


# -- Ollama (native /api/chat) -------------------------------------------------------------------

def ollama_deployment(fake: FakeOllama) -> Deployment:
    return Deployment(id="o", model_name="llama", provider="ollama_chat", provider_model="llama3.2",
                      api_base=fake.url)


async def test_ollama_chat_translates_to_api_chat(ollama):
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                     {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "4C"},
    ]
    request = {"model": "llama3.2", "messages": messages, "temperature": 0.1, "max_tokens": 64, "seed": 1,
               "stop": "END", "response_format": {"type": "json_object"}}
    response = await OllamaProvider("ollama_chat", {}).chat(ollama_deployment(ollama), request)
    assert ollama.last.path == "/api/chat"
    assert ollama.last.body == {
        "model": "llama3.2", "stream": False, "format": "json",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "What is this?", "images": ["iVBOR"]},
            {"role": "assistant", "content": "", "tool_calls": [
                {"function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}]},
            {"role": "tool", "content": "4C", "tool_name": "get_weather"}],
        "options": {"temperature": 0.1, "seed": 1, "num_predict": 64, "stop": ["END"]},
    }
    assert response["choices"][0]["message"]["content"].startswith("The sky is blue")
    assert response["usage"] == {"prompt_tokens": 26, "completion_tokens": 282, "total_tokens": 308}


async def test_ollama_stream_reads_ndjson_with_tool_calls(ollama):
    chunks = [c async for c in OllamaProvider("ollama", {}).chat_stream(ollama_deployment(ollama), body())]
    deltas = [c["choices"][0] for c in chunks if c["choices"]]
    assert deltas[0]["delta"] == {"role": "assistant", "content": "The"}
    assert deltas[1]["delta"]["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": '{"city":"Toronto"}'}
    assert deltas[-1]["finish_reason"] == "tool_calls"
    assert chunks[-1]["usage"] == {"prompt_tokens": 26, "completion_tokens": 282, "total_tokens": 308}


async def test_ollama_refuses_image_links_and_embeds(ollama):
    provider = OllamaProvider("ollama", {})
    linked = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]
    with pytest.raises(errors.BadRequestError):
        await provider.chat(ollama_deployment(ollama), {"model": "llama3.2", "messages": linked})
    result = await provider.embedding(ollama_deployment(ollama), {"model": "e", "input": ["a", "b"]})
    assert ollama.last.body == {"model": "llama3.2", "input": ["a", "b"]}
    assert len(result["data"]) == 2 and result["usage"]["prompt_tokens"] == 8


def test_registry_serves_every_prefix():
    names = default_providers({}, TiktokenCounter()).names()
    assert set(family_providers({})) | {"azure", "anthropic", "gemini", "vertex_ai", "ollama", "ollama_chat"} <= set(names)
