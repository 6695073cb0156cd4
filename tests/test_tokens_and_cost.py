"""Token counts (tiktoken, shipped encodings, offline) and costs (genai-prices over time,
config overrides, never a silent $0), in the library, the proxy and the ledger."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from datetime import datetime, timezone
from decimal import Decimal

import httpx
import pytest
import yaml

from moneta.api.routes import utils as utils_routes
from moneta import completion_cost, cost_per_token, token_counter
from moneta.exceptions import BadRequestError
from tests.fake_openai import FakeOpenAI
from tests.inprocess_gateway import InProcessGateway

MASTER_KEY = "sk-master-test"
MTOK = Decimal(1_000_000)
# Counted by OpenAI's published encodings: 26 tokens in o200k_base, 29 in cl100k_base.
MIXED_TEXT = "Moneta counts tokens: naïve café, 東京の天気は晴れです。 def f(x): return x**2"


# -- tokens ----------------------------------------------------------------------------------

def test_shipped_encodings_match_openais_token_ids():
    from moneta.infrastructure.tokenizer import encoding

    assert encoding("o200k_base").encode("hello world") == [24912, 2375]
    assert encoding("cl100k_base").encode("hello world") == [15339, 1917]


@pytest.mark.parametrize("model, expected", [("gpt-4o", 26), ("openai/gpt-4o-mini", 26), ("o3", 26),
                                             ("gpt-4", 29), ("gpt-3.5-turbo", 29)])
def test_text_counts_use_the_models_encoding(model, expected):
    assert token_counter(model=model, text=MIXED_TEXT) == expected


def test_message_counts_include_openais_chat_framing():
    messages = [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "hello world", "name": "ann"}]
    # 3 for the reply, 3 per message; "system" 1, "Be terse." 3, "user" 1, "hello world" 2, "ann" 1, the name 1.
    assert token_counter(model="gpt-4o", messages=messages) == 3 + 3 + 1 + 3 + 3 + 1 + 2 + 1 + 1


def test_other_families_are_a_cl100k_estimate():
    assert token_counter(model="anthropic/claude-sonnet-4-5", text=MIXED_TEXT) == 29


def test_counting_needs_messages_or_text():
    with pytest.raises(BadRequestError):
        token_counter(model="gpt-4o")


def test_counting_works_offline_without_a_tiktoken_cache(tmp_path):
    script = textwrap.dedent("""
        import socket
        import tiktoken.load

        def no_network(*args, **kwargs):
            raise OSError("network disabled in this test")

        socket.socket.connect = no_network
        socket.create_connection = no_network
        real_read = tiktoken.load.read_file
        tiktoken.load.read_file = lambda path: real_read(path) if "://" not in path else no_network()

        from moneta import token_counter
        print(token_counter(model="gpt-4o", text="hello world"), token_counter(model="gpt-4", text="hello world"))
    """)
    env = {k: v for k, v in os.environ.items() if k not in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR")}
    env["TMPDIR"] = str(tmp_path)  # tiktoken's default cache lives under the temp dir: make it empty
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))), timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["2", "2"]


# -- costs -----------------------------------------------------------------------------------

def test_cached_input_is_charged_at_the_cache_price():
    prompt, completion = cost_per_token("openai/gpt-4o-mini", 1000, 500, cache_read_input_tokens=400)
    assert prompt == (600 * Decimal("0.15") + 400 * Decimal("0.075")) / MTOK
    assert completion == 500 * Decimal("0.6") / MTOK
    assert isinstance(prompt, Decimal) and isinstance(completion, Decimal)


def test_cache_writes_are_charged_at_the_cache_write_price():
    prompt, _ = cost_per_token("anthropic/claude-sonnet-4-5", 1000, 0, cache_creation_input_tokens=200)
    assert prompt == (800 * Decimal("3") + 200 * Decimal("3.75")) / MTOK


def test_reasoning_tokens_are_billed_as_output():
    response = {"model": "o3-mini", "usage": {"prompt_tokens": 1000, "completion_tokens": 2000,
                                              "completion_tokens_details": {"reasoning_tokens": 1500}}}
    assert completion_cost(completion_response=response) == (1000 * Decimal("1.1") + 2000 * Decimal("4.4")) / MTOK


def test_audio_tokens_are_charged_at_the_audio_price():
    response = {"model": "gpt-4o-realtime-preview", "usage": {
        "prompt_tokens": 1000, "completion_tokens": 100, "prompt_tokens_details": {"audio_tokens": 1000}}}
    assert completion_cost(completion_response=response) == (1000 * Decimal("40") + 100 * Decimal("20")) / MTOK


def test_the_price_in_force_at_the_calls_time_applies():
    # claude-opus-4-6 had a long-context tier (above 200k input tokens: $10) until 2026-03-13, then a flat $5.
    before = cost_per_token("anthropic/claude-opus-4-6", 300_000, 0, at=datetime(2026, 1, 10, tzinfo=timezone.utc))
    after = cost_per_token("anthropic/claude-opus-4-6", 300_000, 0, at=datetime(2026, 4, 1, tzinfo=timezone.utc))
    assert (before[0], after[0]) == (Decimal("3"), Decimal("1.5"))
    response = {"model": "claude-opus-4-6", "created": int(datetime(2026, 1, 10, tzinfo=timezone.utc).timestamp()),
                "usage": {"prompt_tokens": 300_000, "completion_tokens": 0}}
    assert completion_cost(completion_response=response, custom_llm_provider="anthropic") == Decimal("3")


def test_an_unknown_model_is_refused_not_priced_at_zero():
    with pytest.raises(BadRequestError, match="no price is known") as raised:
        cost_per_token("openai/house-model-x1", 10, 10)
    assert raised.value.code == "model_not_priced"
    assert cost_per_token("openai/house-model-x1", 10, 10, input_cost_per_token="0.001",
                          output_cost_per_token="0.002") == (Decimal("0.010"), Decimal("0.020"))


def test_config_models_use_their_deployments_prices(tmp_path, monkeypatch):
    config = {"model_list": [
        {"model_name": "house", "litellm_params": {"model": "openai/house-model-x1", "input_cost_per_token": 0.000002,
                                                   "output_cost_per_token": "0.000004"}},
        {"model_name": "free", "litellm_params": {"model": "openai/local-x1"}, "model_info": {"allow_zero_cost": True}},
    ]}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    monkeypatch.setenv("MONETA_CONFIG", str(path))

    assert cost_per_token("house", 100, 10) == (Decimal("0.0002"), Decimal("0.00004"))
    assert completion_cost({"usage": {"prompt_tokens": 100, "completion_tokens": 10}}, model="free") == 0


# -- through the proxy -------------------------------------------------------------------------

@pytest.fixture
def upstream():
    fake = FakeOpenAI(usage={"prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500,
                             "prompt_tokens_details": {"cached_tokens": 400}}).start()
    yield fake
    fake.stop()


@pytest.fixture
def server(tmp_path, upstream):
    upstream_params = {"api_base": upstream.base_url, "api_key": upstream.api_key}
    config = {
        "model_list": [
            {"model_name": "gpt-upstream", "litellm_params": {"model": "openai/gpt-4o-mini", **upstream_params}},
            {"model_name": "unpriced", "litellm_params": {"model": "openai/house-model-x1", **upstream_params}},
            {"model_name": "free", "litellm_params": {"model": "openai/house-model-x1", **upstream_params},
             "model_info": {"allow_zero_cost": True}},
            {"model_name": "claude", "litellm_params": {"model": "anthropic/claude-sonnet-4-5"}},
        ],
        "general_settings": {"master_key": MASTER_KEY},
    }
    with InProcessGateway(config, tmp_path, [utils_routes.router]) as running:
        yield running


def _chat(server: InProcessGateway, model: str) -> httpx.Response:
    return httpx.post(server.base_url + "/v1/chat/completions", headers={"Authorization": f"Bearer {MASTER_KEY}"},
                      json={"model": model, "messages": [{"role": "user", "content": "hi"}]})


def test_the_ledger_records_the_cost_and_its_source(server):
    response = _chat(server, "gpt-upstream")

    assert response.status_code == 200
    completed = server.events(response.headers["x-request-id"])[-1]
    assert type(completed).__name__ == "Completed"
    assert completed.cost == (600 * Decimal("0.15") + 400 * Decimal("0.075") + 500 * Decimal("0.6")) / MTOK
    assert completed.price_source == "genai-prices 0.2.3:openai/gpt-4o-mini"
    assert completed.usage["cached_tokens"] == 400
    assert completion_cost(completion_response=response.json()) == completed.cost


def test_the_proxy_refuses_an_unpriced_model_unless_zero_cost_is_allowed(server):
    refused = _chat(server, "unpriced")
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "model_not_priced"
    assert server.record(refused.headers["x-request-id"]).outcome == "denied"

    allowed = _chat(server, "free")
    completed = server.events(allowed.headers["x-request-id"])[-1]
    assert (completed.cost, completed.price_source) == (0, "allow_zero_cost")


def _count(server: InProcessGateway, body: dict, key: str = MASTER_KEY) -> httpx.Response:
    return httpx.post(server.base_url + "/utils/token_counter", json=body, headers={"Authorization": f"Bearer {key}"})


def test_token_counter_route(server):
    messages = [{"role": "user", "content": MIXED_TEXT}]
    by_messages = _count(server, {"model": "gpt-upstream", "messages": messages})
    assert by_messages.json() == {"total_tokens": token_counter(model="gpt-4o-mini", messages=messages),
                                  "request_model": "gpt-upstream", "model_used": "gpt-4o-mini",
                                  "tokenizer_type": "openai_tokenizer", "encoding": "o200k_base", "exact": True}
    by_prompt = _count(server, {"model": "claude", "prompt": MIXED_TEXT}).json()
    assert (by_prompt["total_tokens"], by_prompt["model_used"]) == (29, "claude-sonnet-4-5")
    assert (by_prompt["encoding"], by_prompt["exact"]) == ("cl100k_base", False)
    assert _count(server, {"model": "gpt-4"}).status_code == 400
    assert _count(server, {"model": "gpt-4", "prompt": "hi"}, key="sk-wrong").status_code == 401
