"""What the library raises: LiteLLM's exception names, each an `openai` exception, carrying
status_code, llm_provider and model. And what it leaves behind: no unclosed HTTP session, a
mock response that completion_cost() prices, mock usage counted as the token counter counts."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from decimal import Decimal

import httpx
import openai
import pytest

import moneta
from moneta.domain import errors
from moneta.exceptions import from_gateway_error
from tests.fake_openai import FakeOpenAI
from tests.library_ledger import library_over
from tests.live_server import LiveServer


@pytest.mark.parametrize("error, library_class, openai_class, status", [
    (errors.BadRequestError("bad", param="messages"), moneta.BadRequestError, openai.BadRequestError, 400),
    (errors.ContextWindowExceededError("long"), moneta.ContextWindowExceededError, openai.BadRequestError, 400),
    (errors.ContentPolicyViolationError("no"), moneta.ContentPolicyViolationError, openai.BadRequestError, 400),
    (errors.UnsupportedParamsError("p"), moneta.UnsupportedParamsError, openai.BadRequestError, 400),
    (errors.AuthenticationError("key"), moneta.AuthenticationError, openai.AuthenticationError, 401),
    (errors.PermissionDeniedError("no"), moneta.PermissionDeniedError, openai.PermissionDeniedError, 403),
    (errors.ModelNotFoundError("gone"), moneta.NotFoundError, openai.NotFoundError, 404),
    (errors.UnprocessableEntityError("x"), moneta.UnprocessableEntityError, openai.UnprocessableEntityError, 422),
    (errors.RateLimitError("slow", retry_after=2), moneta.RateLimitError, openai.RateLimitError, 429),
    (errors.BudgetExceededError("over"), moneta.BudgetExceededError, openai.RateLimitError, 429),
    (errors.InternalServerError("boom"), moneta.InternalServerError, openai.InternalServerError, 500),
    (errors.ServiceUnavailableError("down"), moneta.ServiceUnavailableError, openai.InternalServerError, 503),
    (errors.LedgerUnavailableError("ledger"), moneta.ServiceUnavailableError, openai.APIStatusError, 503),
    (errors.APIConnectionError("refused"), moneta.APIConnectionError, openai.APIConnectionError, 502),
    (errors.TimeoutError("slow"), moneta.Timeout, openai.APITimeoutError, 408),
    (errors.GatewayError("odd"), moneta.APIError, openai.APIError, 500),
])
def test_each_gateway_error_is_raised_as_litellms_name_and_openais_class(error, library_class, openai_class, status):
    error.provider, error.model = "openai", "gpt-4o-mini"
    raised = from_gateway_error(error)
    assert type(raised) is library_class and isinstance(raised, openai_class)
    assert (raised.status_code, raised.llm_provider, raised.model) == (status, "openai", "gpt-4o-mini")
    assert (str(raised), raised.code, raised.param) == (error.message, error.to_openai()["error"]["code"], error.param)


def test_a_rate_limit_keeps_its_retry_after():
    raised = from_gateway_error(errors.RateLimitError("slow", retry_after=2.5))
    assert raised.response.headers["retry-after"] == "2.5"


def test_budget_exceeded_has_litellms_signature_and_is_a_rate_limit_error():
    error = moneta.BudgetExceededError(12.5, 10)
    assert (error.current_cost, error.max_budget, error.status_code) == (12.5, 10, 429)
    assert str(error) == "Budget has been exceeded! Current cost: 12.5, Max budget: 10"
    assert (error.type, error.code) == ("budget_exceeded", "budget_exceeded")
    assert str(moneta.BudgetExceededError(1, 2, "team over budget")) == "team over budget"
    with pytest.raises(openai.RateLimitError):
        raise error
    ours = errors.BudgetExceededError("key over budget", current_cost=Decimal("10.01"), max_budget=Decimal("10"))
    raised = from_gateway_error(ours)
    assert (raised.current_cost, raised.max_budget) == (Decimal("10.01"), Decimal("10"))
    assert ours.to_openai()["error"]["type"] == "budget_exceeded"


def test_an_upstream_gateways_budget_refusal_is_caught_by_openais_rate_limit_error(tmp_path, monkeypatch):
    library = library_over(tmp_path, monkeypatch)
    refusal = {"message": "Budget has been exceeded! Current cost: 3.2, Max budget: 3.0",
               "type": "budget_exceeded", "param": None, "code": "400"}
    upstream = FakeOpenAI(fail_with=(429, refusal)).start()
    try:
        with pytest.raises(openai.RateLimitError) as caught:
            moneta.completion(model="openai/gpt-4o-mini", messages=[{"role": "user", "content": "hi"}],
                              api_base=upstream.base_url, api_key=upstream.api_key)
        upstream.fail_with = (429, {"message": "slow down", "type": "requests", "code": "rate_limit_exceeded"})
        with pytest.raises(moneta.RateLimitError) as plain:
            moneta.completion(model="openai/gpt-4o-mini", messages=[{"role": "user", "content": "hi"}],
                              api_base=upstream.base_url, api_key=upstream.api_key)
    finally:
        upstream.stop()
        library.close()
    assert type(caught.value) is moneta.BudgetExceededError and caught.value.status_code == 429
    assert type(plain.value) is moneta.RateLimitError


SCRIPT = textwrap.dedent("""
    import asyncio, json, sys
    import openai
    import moneta

    ok_url, limited_url, too_long_url, key = sys.argv[1:]
    messages = [{"role": "user", "content": "Hello"}]
    out = {}

    def outcome(**kwargs):
        try:
            moneta.completion(model="openai/gpt-4o-mini", messages=messages, **kwargs)
        except openai.APIError as e:
            nearest_openai = next(c for c in type(e).__mro__ if c.__module__.startswith("openai"))
            return [type(e).__name__, nearest_openai.__name__, e.status_code, e.llm_provider, e.model]

    out["limited"] = outcome(api_base=limited_url, api_key=key)
    out["bad_key"] = outcome(api_base=ok_url, api_key="sk-wrong")
    out["too_long"] = outcome(api_base=too_long_url, api_key=key)
    try:
        moneta.completion(model="openai/house-model-x1", messages=messages, api_base=ok_url, api_key=key)
    except moneta.BadRequestError as e:
        out["unpriced"] = [type(e).__name__, e.status_code, e.code]
    out["answer"] = moneta.completion(model="openai/gpt-4o-mini", messages=messages, api_base=ok_url,
                                      api_key=key).choices[0].message.content
    out["async_answer"] = asyncio.run(moneta.acompletion(model="openai/gpt-4o-mini", messages=messages,
                                                         api_base=ok_url, api_key=key)).choices[0].message.content
    demo = moneta.completion(model="mock/demo", messages=messages)
    out["demo_usage"] = dict(demo.usage)
    out["demo_cost"] = str(moneta.completion_cost(completion_response=demo))
    print(json.dumps(out))
""")


def test_library_calls_raise_openai_exceptions_and_leave_nothing_open(tmp_path):
    fakes = [FakeOpenAI().start(),
             FakeOpenAI(fail_with=(429, {"message": "slow down", "type": "requests", "code": "rate_limit_exceeded"})
                        ).start(),
             FakeOpenAI(fail_with=(400, {"message": "too long", "type": "invalid_request_error",
                                         "code": "context_length_exceeded"})).start()]
    try:
        result = subprocess.run(
            [sys.executable, "-c", SCRIPT, *(f.base_url for f in fakes), fakes[0].api_key],
            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    finally:
        for fake in fakes:
            fake.stop()
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["limited"] == ["RateLimitError", "RateLimitError", 429, "openai", "gpt-4o-mini"]
    assert out["bad_key"] == ["AuthenticationError", "AuthenticationError", 401, "openai", "gpt-4o-mini"]
    assert out["too_long"] == ["ContextWindowExceededError", "BadRequestError", 400, "openai", "gpt-4o-mini"]
    assert out["unpriced"] == ["BadRequestError", 400, "model_not_priced"]
    assert out["answer"] == out["async_answer"] == FakeOpenAI.reply
    assert "Unclosed" not in result.stderr, result.stderr  # aiohttp's warning for a session left open
    # the mock's usage is the token counter's count, priced at the mock demo price ($1 / $2 per 1M tokens)
    prompt = moneta.token_counter(model="demo", messages=[{"role": "user", "content": "Hello"}])
    assert out["demo_usage"]["prompt_tokens"] == prompt == 8
    completion = out["demo_usage"]["completion_tokens"]
    assert Decimal(out["demo_cost"]) == (prompt * 1 + completion * 2) * Decimal("0.000001")


def test_the_proxy_mock_bills_the_prompt_the_token_counter_counts(tmp_path):
    config = {"model_list": [{"model_name": "mock-gpt", "litellm_params": {"model": "mock/mock-gpt"}}],
              "general_settings": {"database_url": f"sqlite:///{tmp_path / 'ledger.db'}"}}
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"}]
    with LiveServer(config, tmp_path) as server:
        answer = httpx.post(server.base_url + "/v1/chat/completions", timeout=10,
                            json={"model": "mock-gpt", "messages": messages}).json()
        counted = httpx.post(server.base_url + "/utils/token_counter", timeout=10,
                             json={"model": "mock-gpt", "messages": messages}).json()
    assert answer["usage"]["prompt_tokens"] == counted["total_tokens"] > 4
