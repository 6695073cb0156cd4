"""Which adapter serves which `provider/` prefix."""
from __future__ import annotations

from application.config import Deployment
from application.ports import Provider
from domain.errors import BadRequestError
from infrastructure.providers.bedrock import BedrockProvider
from infrastructure.providers.cohere import CohereProvider
from infrastructure.providers.mock import MockProvider
from infrastructure.providers.openai_compatible import OpenAICompatibleProvider


class ProviderTable:
    def __init__(self, adapters: dict[str, Provider]) -> None:
        self._adapters = adapters

    def for_deployment(self, deployment: Deployment) -> Provider:
        adapter = self._adapters.get(deployment.provider)
        if adapter is None:
            raise BadRequestError(
                f"provider {deployment.provider!r} is not supported (model {deployment.model_name!r}); "
                f"supported: {', '.join(sorted(self._adapters))}",
                param="model",
                code="unsupported_provider",
            )
        return adapter

    def names(self) -> list[str]:
        return sorted(self._adapters)


def default_providers(environ: dict[str, str]) -> ProviderTable:
    """The adapters this build ships; `environ` supplies conventional keys like OPENAI_API_KEY."""
    return ProviderTable({
        "openai": OpenAICompatibleProvider(
            "openai", environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1", environ.get("OPENAI_API_KEY")
        ),
        "bedrock": BedrockProvider(),
        "cohere": CohereProvider("cohere", environ.get("COHERE_API_KEY")),
        "cohere_chat": CohereProvider("cohere_chat", environ.get("COHERE_API_KEY")),
        "mock": MockProvider(),
    })
