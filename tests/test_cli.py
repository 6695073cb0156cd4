"""The command line itself: `moneta --version`, `moneta` alone, `moneta config check`."""
from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version

import yaml


def _moneta(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "moneta.api.cli", *args], capture_output=True, text=True,
                          timeout=60, cwd=cwd)


def _config(tmp_path, raw: dict):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def test_version():
    result = _moneta("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"moneta {version('moneta-gateway')}"


def test_moneta_alone_prints_help():
    result = _moneta()
    assert result.returncode == 0
    assert result.stdout.startswith("usage: moneta") and "config" in result.stdout and "serve" in result.stdout


def test_config_check_prints_what_is_served_and_starts_nothing(tmp_path):
    ledger = tmp_path / "ledger.db"
    path = _config(tmp_path, {
        "model_list": [
            {"model_name": "gpt-4o", "litellm_params": {"model": "openai/gpt-4o", "api_key": "sk-x"},
             "model_info": {"id": "oa"}},
            {"model_name": "gpt-4o", "litellm_params": {"model": "azure/prod-4o", "api_key": "k",
                                                        "api_base": "https://x", "input_cost_per_token": 0.000003,
                                                        "output_cost_per_token": 0.000012},
             "model_info": {"id": "az"}},
            {"model_name": "demo", "litellm_params": {"model": "mock/demo"}, "model_info": {"id": "mock"}},
        ],
        "litellm_settings": {"success_callback": ["langfuse"]},
        "general_settings": {"database_url": f"sqlite:///{ledger}"},
    })
    result = _moneta("config", "check", "--config", path, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"{path} is valid; it serves:",
        "gpt-4o: 2 deployments",
        "  oa  openai/gpt-4o  $2.5 input, $10 output per 1M tokens (genai-prices 0.2.3:openai/gpt-4o)",
        "  az  azure/prod-4o  $3 input, $12 output per 1M tokens (config price)",
        "demo: 1 deployment",
        "  mock  mock/demo  $1 input, $2 output per 1M tokens (mock demo price)",
    ]
    assert result.stderr == "warning: config keys accepted, not supported (they have no effect): litellm_settings.success_callback\n"
    assert not ledger.exists() and list(tmp_path.iterdir()) == [tmp_path / "config.yaml"]


def test_config_check_of_an_invalid_file_names_the_key(tmp_path):
    path = _config(tmp_path, {"model_list": [{"model_name": "x", "litellm_params": {"model": "mock/x", "rpm": "lots"}}]})
    result = _moneta("config", "check", "--config", path)
    assert result.returncode != 0 and result.stdout == ""
    assert result.stderr.strip() == "moneta: invalid configuration: model_list[0].litellm_params.rpm must be a number, " \
                                    "got 'lots'"
