"""LiteLLM's `completion_cost()` and `cost_per_token()`, priced as the gateway prices a call.

Differences from LiteLLM, on purpose:
- amounts are `Decimal` USD, not float: exact, and equal to the `cost` the ledger records;
- a model with no known price raises `moneta.BadRequestError` (400, code `model_not_priced`)
  instead of returning 0, unless `input_cost_per_token` / `output_cost_per_token` price it here.

A model name defined in the config (MONETA_CONFIG) is priced as its first deployment, with
that deployment's price overrides; any other name is read as `provider/model` (bare names
are OpenAI's) and priced by `genai-prices` at the price in force at the call's time. A response
of the library's own calls is priced as the model its call named (`mock/demo`, ...).
"""
from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Mapping

from moneta import bootstrap
from moneta.application.config import Deployment
from moneta.domain.model_ref import ModelRef
from moneta.domain.pricing import TokenPrice, to_decimal
from moneta.domain.usage import Usage
from moneta.exceptions import raising_library_errors


@raising_library_errors
def cost_per_token(
    model: str,
    prompt_tokens: int = 0,
    completion_tokens: int = 0,
    *,
    cache_read_input_tokens: int = 0,
    cache_creation_input_tokens: int = 0,
    custom_llm_provider: str | None = None,
    input_cost_per_token: Any = None,
    output_cost_per_token: Any = None,
    at: datetime | None = None,
) -> tuple[Decimal, Decimal]:
    """(prompt cost, completion cost) in USD, as LiteLLM's pair. `prompt_tokens` includes
    the cached ones (OpenAI's convention), charged at the cache price where one is known.
    `at` is the time of the call (default: now), for the price in force then."""
    usage = Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                  cached_tokens=cache_read_input_tokens, cache_write_tokens=cache_creation_input_tokens)
    deployment = _deployment(model, custom_llm_provider, input_cost_per_token, output_cost_per_token)
    return _split_cost(deployment, usage, at or datetime.now(timezone.utc))


@raising_library_errors
def completion_cost(
    completion_response: Mapping[str, Any],
    model: str | None = None,
    *,
    custom_llm_provider: str | None = None,
    input_cost_per_token: Any = None,
    output_cost_per_token: Any = None,
) -> Decimal:
    """The cost in USD of a chat, text or embedding response (a dict or the library's
    ModelResponse), from its `usage`, at the price in force when it was `created`."""
    asked = getattr(completion_response, "_hidden_params", {}).get("model")
    name = model or asked or str(completion_response.get("model") or "")
    deployment = _deployment(name, custom_llm_provider, input_cost_per_token, output_cost_per_token)
    usage = Usage.from_openai(completion_response.get("usage"))
    prompt, completion = _split_cost(deployment, usage, _created(completion_response))
    return prompt + completion


def _split_cost(deployment: Deployment, usage: Usage, at: datetime) -> tuple[Decimal, Decimal]:
    prices = bootstrap.price_book()
    prompt_only = replace(usage, completion_tokens=0, reasoning_tokens=0, audio_completion_tokens=0)
    prompt_cost = prices.quote(deployment, prompt_only, at).cost
    # The whole call priced at once, then split by difference: tiers set by the prompt's size apply to both.
    return prompt_cost, prices.quote(deployment, usage, at).cost - prompt_cost


def _deployment(model: str, provider: str | None, input_cost: Any, output_cost: Any) -> Deployment:
    price = None
    if input_cost is not None or output_cost is not None:
        price = TokenPrice(to_decimal(input_cost or 0, "input_cost_per_token"),
                           to_decimal(output_cost or 0, "output_cost_per_token"), source="call arguments")
    configured = _configured(model)
    if configured is not None and provider is None:
        return configured if price is None else replace(configured, price=price)
    ref = ModelRef(provider, model) if provider else ModelRef.parse(model)
    return Deployment(id=f"cost:{ref}", model_name=model, provider=ref.provider, provider_model=ref.name,
                      price=price)


def _configured(model: str) -> Deployment | None:
    return next((d for d in bootstrap.library_config().deployments if d.model_name == model), None)


def _created(response: Mapping[str, Any]) -> datetime:
    created = response.get("created")
    if isinstance(created, (int, float)) and not isinstance(created, bool):
        return datetime.fromtimestamp(created, timezone.utc)
    return datetime.now(timezone.utc)
