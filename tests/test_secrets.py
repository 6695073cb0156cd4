"""Credentials never leave the gateway: not in a repr, an error, a stream or the ledger."""
from __future__ import annotations

import httpx
import orjson
import pytest

from moneta.domain.redaction import redact
from moneta.infrastructure.config_loader import parse_config
from tests.fake_openai import FakeOpenAI
from tests.inprocess_gateway import InProcessGateway

AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
CONFIG = {
    "model_list": [
        {"model_name": "bedrock", "litellm_params": {
            "model": "bedrock/anthropic.claude-3-haiku", "aws_access_key_id": "AKIAEXAMPLEKEY0001",
            "aws_secret_access_key": AWS_SECRET, "aws_region_name": "us-east-1"}},
        {"model_name": "azure", "litellm_params": {
            "model": "azure/gpt-4o", "api_base": "https://x.openai.azure.com", "tenant_id": "t",
            "client_id": "c", "client_secret": "azure-client-secret-value"}},
    ],
    "general_settings": {"master_key": "sk-master-value-1", "database_url": "postgresql://u:db-pass-word@h/db"},
    "router_settings": {"redis_host": "127.0.0.1", "redis_password": "redis-pass-word"},
}
SECRETS = (AWS_SECRET, "azure-client-secret-value", "sk-master-value-1", "db-pass-word", "redis-pass-word")


def test_every_credential_of_the_config_is_known_and_absent_from_its_repr():
    config = parse_config(CONFIG, {})
    for secret in SECRETS:
        assert secret in config.secrets()
        assert secret not in repr(config)


def test_configured_keys_are_trimmed_with_a_notice_that_does_not_show_them():
    raw = {"model_list": [{"model_name": "m", "litellm_params": {"model": "openai/gpt-4o", "api_key": " sk-up-key\n"}}],
           "general_settings": {"master_key": "os.environ/KEY"}}
    config = parse_config(raw, {"KEY": "sk-master-key-9\n"})
    assert config.master_key == "sk-master-key-9"
    assert config.deployments[0].api_key == "sk-up-key"
    assert config.notices == ("these credentials had surrounding whitespace; it was trimmed: "
                              "model_list[0].litellm_params.api_key, general_settings.master_key",)


def test_a_master_key_from_the_environment_is_trimmed():
    assert parse_config({}, {"LITELLM_MASTER_KEY": "sk-env-key \n"}).master_key == "sk-env-key"


@pytest.mark.parametrize("text", [
    "denied for key ABCDEF-SECRET-123",  # a known secret, in another letter case
    "secret_access_key=" + AWS_SECRET,
    "the signature of " + AWS_SECRET + " did not match",
])
def test_redaction_masks_known_secrets_in_any_case_and_aws_secret_keys(text):
    redacted = redact(text, ("abcdef-secret-123",))
    assert "[REDACTED]" in redacted
    assert "ABCDEF-SECRET-123" not in redacted and AWS_SECRET not in redacted


def test_redaction_leaves_hashes_and_ids_alone():
    text = "request 3f786850e387550fdab836ed7e6dc881de23001b for key 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    assert redact(text) == text


@pytest.fixture
def upstream():
    fake = FakeOpenAI().start()
    yield fake
    fake.stop()


def test_an_error_in_the_middle_of_an_openai_stream_is_redacted(tmp_path, upstream, caplog):
    upstream.stream_error = {"message": f"key {upstream.api_key.upper()} was revoked", "type": "server_error"}
    config = {"model_list": [{"model_name": "gpt", "litellm_params": {
        "model": "openai/gpt-4o-mini", "api_base": upstream.base_url, "api_key": upstream.api_key}}]}
    with InProcessGateway(config, tmp_path, []) as gateway:
        with httpx.stream("POST", gateway.base_url + "/v1/chat/completions", timeout=10, json={
                "model": "gpt", "stream": True, "messages": [{"role": "user", "content": "hi"}]}) as response:
            events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
        request_id = response.headers["x-request-id"]
        error = orjson.loads(events[-1])["error"]
        assert request_id in error["message"]  # a 500 says only that it happened, under which id
        stored = repr(gateway.events(request_id))
    assert upstream.api_key.upper() not in "".join(events) and upstream.api_key.upper() not in stored
    assert "key [REDACTED] was revoked" in caplog.text and upstream.api_key.upper() not in caplog.text
