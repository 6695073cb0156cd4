"""Prices: the config's overrides first, then `genai-prices` (prices over time, resolved once
per model and price period: price_periods.py), and for audio billed by the second a small
table of our own. Never a silent $0."""
from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from functools import lru_cache

import genai_prices
from genai_prices.data_snapshot import find_provider_by_id, get_snapshot

from moneta.application.config import Deployment
from moneta.domain.errors import BadRequestError
from moneta.domain.model_ref import ModelRef
from moneta.domain.pricing import CostQuote, TokenPrice
from moneta.domain.usage import Usage
from moneta.infrastructure.price_periods import PricePeriods

GENAI_PRICES_SOURCE = f"genai-prices {genai_prices.__version__}"

# The built-in mock provider's demo prices, so the demo shows non-zero spend.
MOCK_DEMO_PRICE = TokenPrice(Decimal("0.000001"), Decimal("0.000002"), source="mock demo price")

# Audio transcription is billed per minute; genai-prices has it only as tokens (=$0).
PER_SECOND_USD: dict[str, Decimal] = {
    "whisper-1": Decimal("0.006") / 60,
    "whisper-large-v3": Decimal("0.111") / 3600,        # Groq
    "whisper-large-v3-turbo": Decimal("0.04") / 3600,   # Groq
    "distil-whisper-large-v3-en": Decimal("0.02") / 3600,
}

# genai-prices' provider ids for our provider prefixes, where they differ.
_PRICE_PROVIDER = {"azure": "azure", "gemini": "google", "vertex_ai": "google", "bedrock": "aws",
                   "together_ai": "together", "fireworks_ai": "fireworks", "xai": "x-ai"}


class UnpricedModelError(BadRequestError):
    default_code = "model_not_priced"


class PriceTable:
    def __init__(self) -> None:
        self._genai = PricePeriods()

    def check_priced(self, deployment: Deployment) -> None:
        if deployment.price or deployment.allow_zero_cost or deployment.provider == "mock":
            return
        priced_as = _priced_as(deployment)
        if _per_second(priced_as.name) is not None:
            return
        if _genai_model(priced_as.provider, priced_as.name) is None:
            raise UnpricedModelError(
                f"no price is known for {priced_as} (model {deployment.model_name!r}): set input_cost_per_token "
                "and output_cost_per_token in its litellm_params, base_model (the priced model it runs) or "
                "allow_zero_cost: true in its model_info",
                param="model",
            )

    def quote(self, deployment: Deployment, usage: Usage, at: datetime) -> CostQuote:
        if deployment.price is not None:
            return CostQuote(deployment.price.cost_of(usage), deployment.price.source)
        if deployment.provider == "mock":
            return CostQuote(MOCK_DEMO_PRICE.cost_of(usage), MOCK_DEMO_PRICE.source)
        priced_as = _priced_as(deployment)
        per_second = _per_second(priced_as.name)
        if per_second is not None and usage.audio_seconds:
            return CostQuote(Decimal(str(usage.audio_seconds)) * per_second, "moneta audio price table")
        if deployment.allow_zero_cost and _genai_model(priced_as.provider, priced_as.name) is None:
            return CostQuote(Decimal(0), "allow_zero_cost")
        return self._genai_quote(priced_as, usage, at)

    def known_models(self, provider: str) -> list[str]:
        found = find_provider_by_id(get_snapshot().providers, _PRICE_PROVIDER.get(provider, provider))
        models = found.models if found is not None else []
        # An id ending so ("ft:gpt-4o-mini-") is a prefix genai-prices matches fine-tunes by, not a model.
        return [model.id for model in models if not model.id.endswith(("-", ".", ":"))]

    def _genai_quote(self, priced_as: ModelRef, usage: Usage, at: datetime) -> CostQuote:
        known = _genai_model(priced_as.provider, priced_as.name)
        if known is None:
            raise UnpricedModelError(f"no price is known for {priced_as}", param="model")
        provider_id, model_id = known.split("/", 1)
        return CostQuote(self._genai.cost(provider_id, model_id, usage, at), f"{GENAI_PRICES_SOURCE}:{known}")


def _priced_as(deployment: Deployment) -> ModelRef:
    """The model whose price applies: `model_info.base_model` when set (an Azure deployment's own
    name says nothing of the model behind it), else the deployment's provider/model."""
    base_model = deployment.model_info.get("base_model")
    if base_model:
        return ModelRef.parse(str(base_model))
    return ModelRef(deployment.provider, deployment.provider_model)


def _per_second(model: str) -> Decimal | None:
    return PER_SECOND_USD.get(model.rsplit("/", 1)[-1])


@lru_cache(maxsize=1024)
def _genai_model(provider: str, model: str) -> str | None:
    """The model id genai-prices knows this deployment by, or None."""
    try:
        result = genai_prices.calc_price(genai_prices.Usage(input_tokens=1), model,
                                         provider_id=_PRICE_PROVIDER.get(provider, provider))
    except LookupError:
        try:
            result = genai_prices.calc_price(genai_prices.Usage(input_tokens=1), model)
        except LookupError:
            return None
    return f"{result.provider.id}/{result.model.id}"
