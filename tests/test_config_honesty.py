"""A LiteLLM user's config starts unchanged, or is told plainly why not: the keys Moneta accepts
but does not act on are named once at start-up, booleans are booleans, an invalid value stops
start-up before anything is migrated, and an unreachable database is one line."""
from __future__ import annotations

import subprocess
import sys

import httpx
import pytest
import yaml

from moneta.infrastructure.config_loader import ConfigError, parse_config
from tests.live_server import LiveServer, free_port

MODELS = [{"model_name": "demo", "litellm_params": {"model": "mock/demo"}}]


def _serve(tmp_path, raw: dict) -> subprocess.CompletedProcess:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return subprocess.run([sys.executable, "-m", "moneta.api.cli", "serve", "--config", str(path),
                           "--port", str(free_port())], capture_output=True, text=True, timeout=60, cwd=tmp_path)


@pytest.mark.parametrize("value, expected", [(True, True), (False, False), ("true", True), ("False", False)])
def test_booleans_are_yaml_booleans_or_true_false_strings(value, expected):
    config = parse_config({"model_list": MODELS, "litellm_settings": {"drop_params": value}}, {})
    assert config.drop_params is expected
    assert config.deployments[0].extra_params["drop_params"] is expected


@pytest.mark.parametrize("section, key", [
    ("litellm_settings", "drop_params"), ("router_settings", "disable_cooldowns"),
    ("router_settings", "enable_pre_call_checks"), ("general_settings", "background_health_checks"),
    ("general_settings", "require_auth_for_metrics_endpoint"),
])
@pytest.mark.parametrize("value", ["no", "yes", 1, "0"])
def test_anything_else_for_a_boolean_names_the_key(section, key, value):
    with pytest.raises(ConfigError, match=f"{section}.{key} must be true or false"):
        parse_config({"model_list": MODELS, section: {key: value}}, {})


def test_a_deployments_booleans_name_their_key():
    models = [{"model_name": "x", "litellm_params": {"model": "openai/x", "drop_params": "no"}}]
    with pytest.raises(ConfigError, match=r"model_list\[0\].litellm_params.drop_params"):
        parse_config({"model_list": models}, {})
    models = [{"model_name": "x", "litellm_params": {"model": "openai/x"}, "model_info": {"allow_zero_cost": "sure"}}]
    with pytest.raises(ConfigError, match=r"model_list\[0\].model_info.allow_zero_cost"):
        parse_config({"model_list": models}, {})


def test_accepted_keys_that_do_nothing_are_named_in_one_notice():
    models = [{"model_name": "x", "litellm_params": {"model": "mock/x", "max_retries": 3, "organization": "org-1"}}]
    config = parse_config({
        "model_list": models, "guardrails": [{"guardrail_name": "g"}],
        "litellm_settings": {"success_callback": ["langfuse"], "callbacks": ["otel"], "cache": True,
                             "set_verbose": False},  # switched off: asks for nothing, not named
        "general_settings": {"alerting": ["slack"], "store_model_in_db": True,
                             "pass_through_endpoints": [{"path": "/x", "target": "http://y"}]},
        "router_settings": {"model_group_alias": {"a": "x"}},
    }, {})
    assert config.notices == ("config keys accepted, not supported (they have no effect): guardrails, "
                              "general_settings.alerting[slack], general_settings.store_model_in_db, "
                              "general_settings.pass_through_endpoints, litellm_settings.success_callback, "
                              "litellm_settings.callbacks, router_settings.model_group_alias, "
                              "model_list[0].litellm_params.max_retries",)
    assert config.deployments[0].extra_params["organization"] == "org-1"  # acted on: sent as OpenAI-Organization


def test_routing_strategy_args_moneta_does_not_act_on_are_named():
    config = parse_config({"model_list": MODELS, "router_settings": {
        "routing_strategy": "latency-based-routing",
        "routing_strategy_args": {"lowest_latency_buffer": 0.5, "ttl": 60, "max_latency_list_size": 10,
                                  "allowed_fails": None}}}, {})
    assert config.notices == ("config keys accepted, not supported (they have no effect): "
                              "router_settings.routing_strategy_args.ttl, "
                              "router_settings.routing_strategy_args.max_latency_list_size",)


def test_a_missing_model_list_is_a_notice_naming_what_is_served():
    assert parse_config({"litellm_settings": {"drop_params": True}}, {}).notices == (
        "model_list is missing or empty: the proxy serves no model (every call is answered 404 model_not_found);"
        " the library still calls any provider/model directly",)


def test_serve_warns_once_per_process_tree(tmp_path):
    models = [{"model_name": "demo", "litellm_params": {"model": "mock/demo", "api_key": "sk-padded\n"}}]
    raw = {"model_list": models, "litellm_settings": {"success_callback": ["langfuse"]},
           "general_settings": {"master_ky": "typo", "database_url": f"sqlite:///{tmp_path / 'ledger.db'}"}}
    with LiveServer(raw, tmp_path, workers=2) as server:
        reply = httpx.post(server.base_url + "/v1/chat/completions",
                           json={"model": "demo", "messages": [{"role": "user", "content": "hi"}]}, timeout=10)
        assert reply.status_code == 200
    log = server.log()
    assert log.count("litellm_settings.success_callback") == 1, log
    assert log.count("general_settings.master_ky") == 1, log
    assert log.count("had surrounding whitespace") == 1, log
    assert log.count("model_list[0].litellm_params.api_key") == 1, log
    assert "sk-padded" not in log


def test_an_invalid_value_stops_serve_before_anything_is_migrated(tmp_path):
    ledger = tmp_path / "ledger.db"
    result = _serve(tmp_path, {"model_list": MODELS, "router_settings": {"routing_strategy": "fastest"},
                               "general_settings": {"database_url": f"sqlite:///{ledger}"}})
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "moneta: invalid configuration: router_settings.routing_strategy: 'fastest' is not one of simple-shuffle, "
        "least-busy, latency-based-routing, usage-based-routing-v2, cost-based-routing"]
    assert not ledger.exists()


def test_an_unreachable_database_is_one_line_naming_host_and_port(tmp_path):
    port = free_port()  # nothing listens there
    result = _serve(tmp_path, {"model_list": MODELS,
                               "general_settings": {"database_url": f"postgresql://postgres@127.0.0.1:{port}/x"}})
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"moneta: cannot use the database at 127.0.0.1:{port}: "), lines
