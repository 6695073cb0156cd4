"""LiteLLM's config.yaml format: a LiteLLM user's file loads unchanged."""
from __future__ import annotations

import logging
import subprocess
import sys
from decimal import Decimal

import pytest
import yaml

from moneta.infrastructure.config_loader import ConfigError, load_config, parse_config

LITELLM_FILE = """
model_list:
  - model_name: gpt-4o
    litellm_params:
      model: openai/gpt-4o
      api_key: os.environ/OPENAI_API_KEY
      rpm: 600
      tpm: 100000
      timeout: 30
      stream_timeout: 10
      weight: 2
  - model_name: gpt-4o
    litellm_params:
      model: azure/gpt-4o-eu
      api_base: https://example-eu.openai.azure.com
      api_key: os.environ/AZURE_API_KEY
      api_version: "2024-10-21"
      input_cost_per_token: 0.0000025
      output_cost_per_token: 0.00001
    model_info:
      id: azure-eu
      base_model: azure/gpt-4o
  - model_name: local
    litellm_params:
      model: hosted_vllm/meta-llama/Llama-3-8B
      api_base: http://127.0.0.1:8000/v1
    model_info:
      allow_zero_cost: true
litellm_settings:
  drop_params: true
  num_retries: 2
  request_timeout: 120
  success_callback: ["langfuse"]
  cache: true
router_settings:
  routing_strategy: simple-shuffle
  redis_host: 127.0.0.1
  redis_port: 6379
  allowed_fails: 3
  cooldown_time: 30
general_settings:
  master_key: os.environ/LITELLM_MASTER_KEY
  database_url: postgresql://llm:pw@db:5432/litellm
  alerting: ["slack"]
environment_variables:
  AZURE_API_KEY: az-from-config-file
"""
ENV = {"OPENAI_API_KEY": "sk-openai-test", "LITELLM_MASTER_KEY": "sk-1234"}


def _write(tmp_path, text: str):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_a_litellm_file_loads_unchanged(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, "moneta.config"):
        config = load_config(_write(tmp_path, LITELLM_FILE), ENV)
    assert caplog.text == ""  # loading logs nothing: the process that starts the gateway tells config.notices
    # every key above is one LiteLLM documents; those Moneta does not act on are named, no key is unknown
    assert config.notices == ("config keys accepted, not supported (they have no effect): "
                              "general_settings.alerting[slack], litellm_settings.success_callback",)
    first, second, third = config.deployments
    assert (first.model_name, first.provider, first.provider_model) == ("gpt-4o", "openai", "gpt-4o")
    assert first.api_key == "sk-openai-test" and first.rpm == 600 and first.tpm == 100000
    assert first.timeout == 30 and first.stream_timeout == 10 and first.weight == 2
    assert second.id == "azure-eu" and second.api_key == "az-from-config-file" and second.api_version == "2024-10-21"
    assert second.price.input_per_token == Decimal("0.0000025")  # exact, via the YAML text
    assert second.price.output_per_token == Decimal("0.00001")
    assert third.provider == "hosted_vllm" and third.provider_model == "meta-llama/Llama-3-8B"
    assert third.allow_zero_cost
    assert config.master_key == "sk-1234"
    assert config.database_url == "postgresql://llm:pw@db:5432/litellm"
    assert config.redis_url == "redis://127.0.0.1:6379/0"
    assert config.num_retries == 2 and config.request_timeout == 120 and config.drop_params
    assert config.model_names() == ["gpt-4o", "local"]
    assert config.cache is not None and config.cache.kind == "local" and config.cache.ttl_s == 600
    assert all(d.extra_params["drop_params"] for d in config.deployments)  # litellm_settings.drop_params


def test_database_url_from_the_environment_wins(tmp_path):
    config = load_config(_write(tmp_path, LITELLM_FILE), {**ENV, "DATABASE_URL": "postgresql://other/db"})
    assert config.database_url == "postgresql://other/db"


def test_unknown_keys_are_named_in_one_notice():
    raw = {"model_list": [{"model_name": "m", "litellm_params": {"model": "mock/m", "frobnicate": 1}}],
           "general_settings": {"master_ky": "typo"}, "extra_section": {}}
    assert parse_config(raw, {}).notices == (
        "config keys Moneta does not know (ignored; a typo?): extra_section, general_settings.master_ky, "
        "model_list[0].litellm_params.frobnicate",)


@pytest.mark.parametrize("raw, named", [
    ({"model_list": [{"litellm_params": {"model": "openai/x"}}]}, "model_list[0].model_name"),
    ({"model_list": [{"model_name": "x", "litellm_params": {}}]}, "model_list[0].litellm_params.model"),
    ({"model_list": [{"model_name": "x", "litellm_params": {"model": "openai/x", "rpm": "many"}}]},
     "model_list[0].litellm_params.rpm"),
    ({"model_list": [{"model_name": "x", "litellm_params": {"model": "openai/x", "input_cost_per_token": "free"}}]},
     "model_list[0].litellm_params.input_cost_per_token"),
    ({"model_list": [{"model_name": "x", "litellm_params": {"model": "openai/x", "api_key": "os.environ/NOPE"}}]},
     "NOPE"),
    ({"model_list": "gpt-4o"}, "model_list"),
    ({"router_settings": {"num_retries": -1}}, "router_settings.num_retries"),
    ({"general_settings": {"graceful_shutdown_timeout_s": -1}}, "general_settings.graceful_shutdown_timeout_s"),
    ({"router_settings": {"routing_strategy": "fastest"}}, "router_settings.routing_strategy"),
    ({"router_settings": {"allowed_fails": "a few"}}, "router_settings.allowed_fails"),
    ({"router_settings": {"cooldown_time": -5}}, "router_settings.cooldown_time"),
    ({"router_settings": {"max_fallbacks": 1.5}}, "router_settings.max_fallbacks"),
    ({"router_settings": {"routing_strategy_args": {"lowest_latency_buffer": "x"}}},
     "router_settings.routing_strategy_args.lowest_latency_buffer"),
    ({"router_settings": {"fallbacks": ["gpt-4o"]}}, "fallbacks"),
    ({"general_settings": {"health_check_interval": "hourly"}}, "general_settings.health_check_interval"),
    ({"general_settings": {"database_url": "mysql://db/x"}}, "general_settings.database_url"),
])
def test_an_invalid_file_names_the_key(raw, named):
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, {})
    assert named in str(caught.value)


def test_invalid_yaml_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(_write(tmp_path, "model_list: [unclosed"), {})


def test_serve_stops_on_an_invalid_file_with_the_key_in_the_message(tmp_path):
    path = _write(tmp_path, yaml.safe_dump({"model_list": [{"model_name": "x", "litellm_params": {"rpm": 1}}]}))
    result = subprocess.run([sys.executable, "-m", "moneta.api.cli", "serve", "--config", str(path)],
                            capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode != 0
    assert "model_list[0].litellm_params.model" in result.stderr


def test_the_shutdown_grace_period_is_read_from_general_settings(caplog):
    assert parse_config({}, {}).graceful_shutdown_timeout_s == 30
    with caplog.at_level(logging.WARNING, "moneta.config"):
        config = parse_config({"general_settings": {"graceful_shutdown_timeout_s": 5}}, {})
    assert config.graceful_shutdown_timeout_s == 5 and caplog.text == ""


def test_secrets_do_not_show_in_the_config_repr(tmp_path):
    config = load_config(_write(tmp_path, LITELLM_FILE), ENV)
    assert "sk-1234" not in repr(config) and "sk-openai-test" not in repr(config)


def test_the_ledger_timeout_is_read_from_general_settings_and_must_be_positive():
    assert parse_config({}, {}).ledger_timeout_s == 5
    assert parse_config({"general_settings": {"ledger_timeout_s": 2}}, {}).ledger_timeout_s == 2
    with pytest.raises(ConfigError, match="general_settings.ledger_timeout_s"):
        parse_config({"general_settings": {"ledger_timeout_s": 0}}, {})
