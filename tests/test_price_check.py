"""Prices at start-up: `model_info.base_model` prices a deployment; an unpriced deployment is
named and taken out of its group, so the group still serves (or, under strict_pricing, start-up
stops); a group with no priced deployment is not served."""
from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal

import httpx
import pytest
import yaml

from moneta.application.price_check import UnpricedDeploymentsError, priced_only
from moneta.domain.usage import Usage
from moneta.infrastructure.config_loader import parse_config
from moneta.infrastructure.pricing import PriceTable
from tests.live_server import LiveServer, free_port

UNPRICED = {"model": "hosted_vllm/private-llama", "api_base": "http://127.0.0.1:9/v1"}
MODELS = [
    {"model_name": "chat", "litellm_params": UNPRICED, "model_info": {"id": "unpriced"}},
    {"model_name": "chat", "litellm_params": {"model": "mock/chat"}, "model_info": {"id": "priced"}},
    {"model_name": "dark", "litellm_params": UNPRICED, "model_info": {"id": "dark-unpriced"}},
]


def test_base_model_prices_a_deployment():
    config = parse_config({"model_list": [{"model_name": "gpt-4o", "litellm_params": {
        "model": "azure/prod-4o-eastus", "api_base": "https://x.openai.azure.com", "api_key": "k"},
        "model_info": {"base_model": "azure/gpt-4o"}}]}, {})
    prices = PriceTable()
    assert priced_only(config, prices) == config
    quote = prices.quote(config.deployments[0], Usage(prompt_tokens=1_000_000), datetime.now(UTC))
    assert quote.cost == Decimal("2.5") and quote.source.endswith(":azure/gpt-4o")


def test_unpriced_deployments_are_named_and_taken_out_of_their_groups():
    config = priced_only(parse_config({"model_list": MODELS}, {}), PriceTable())
    assert [d.id for d in config.deployments] == ["priced"]
    assert config.notices[-1].startswith(
        "no price is known for chat (hosted_vllm/private-llama), dark (hosted_vllm/private-llama): not served (")
    assert config.notices[-1].endswith("; model groups left with no deployment, not served: dark")


def test_strict_pricing_stops_start_up_naming_the_unpriced():
    config = parse_config({"model_list": MODELS, "general_settings": {"strict_pricing": "true"}}, {})
    with pytest.raises(UnpricedDeploymentsError, match=r"strict_pricing: no price is known for chat \(hosted_vllm"):
        priced_only(config, PriceTable())


def test_a_group_serves_while_one_deployment_is_priced_and_its_fallback_is_tried(tmp_path):
    models = [*MODELS,
              {"model_name": "flaky", "litellm_params": UNPRICED},
              {"model_name": "flaky", "litellm_params": {"model": "mock/flaky", "mock_failure_rate": 1}},
              {"model_name": "backup", "litellm_params": {"model": "mock/backup"}}]
    raw = {"model_list": models, "router_settings": {"fallbacks": [{"flaky": ["backup"]}]},
           "general_settings": {"database_url": f"sqlite:///{tmp_path / 'ledger.db'}"}}
    with LiveServer(raw, tmp_path) as server:
        def chat(model: str) -> httpx.Response:
            return httpx.post(server.base_url + "/v1/chat/completions", timeout=10,
                              json={"model": model, "messages": [{"role": "user", "content": "hi"}]})

        assert all(chat("chat").status_code == 200 for _ in range(6))
        fell_back = chat("flaky")
        assert fell_back.status_code == 200 and fell_back.json()["model"] == "backup"
        assert chat("dark").status_code == 404
        served = httpx.get(server.base_url + "/v1/models", timeout=10).json()["data"]
        assert sorted(m["id"] for m in served) == ["backup", "chat", "flaky"]
    assert server.log().count("no price is known for chat (hosted_vllm/private-llama)") == 1


def test_serve_under_strict_pricing_stops_before_migrating(tmp_path):
    ledger = tmp_path / "ledger.db"
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"model_list": MODELS, "general_settings": {
        "strict_pricing": True, "database_url": f"sqlite:///{ledger}"}}))
    result = subprocess.run([sys.executable, "-m", "moneta.api.cli", "serve", "--config", str(path),
                             "--port", str(free_port())], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode != 0 and not ledger.exists()
    assert result.stderr.startswith("moneta: invalid configuration: general_settings.strict_pricing: no price is "
                                    "known for chat (hosted_vllm/private-llama), dark (hosted_vllm/private-llama)")
