"""Which adapter serves which `provider/` prefix."""
from __future__ import annotations

from moneta.application.config import Deployment
from moneta.application.ports import Provider, Tokenizer
from moneta.domain.errors import BadRequestError
from moneta.infrastructure.providers.anthropic import AnthropicProvider
from moneta.infrastructure.providers.azure import AzureOpenAIProvider
from moneta.infrastructure.providers.bedrock import BedrockProvider
from moneta.infrastructure.providers.cohere import CohereProvider
from moneta.infrastructure.providers.gemini import GeminiProvider, VertexAIProvider
from moneta.infrastructure.providers.mock import MockProvider
from moneta.infrastructure.providers.ollama import OllamaProvider
from moneta.infrastructure.providers.openai_family import family_providers


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


def default_providers(environ: dict[str, str], tokenizer: Tokenizer) -> ProviderTable:
    """The adapters this build ships; `environ` supplies conventional keys like OPENAI_API_KEY; the
    mock counts its tokens with `tokenizer`."""
    return ProviderTable({
        **family_providers(environ),
        "azure": AzureOpenAIProvider(environ),
        "anthropic": AnthropicProvider(environ),
        "gemini": GeminiProvider(environ),
        "vertex_ai": VertexAIProvider(environ),
        "ollama": OllamaProvider("ollama", environ),
        "ollama_chat": OllamaProvider("ollama_chat", environ),
        "bedrock": BedrockProvider(),
        "cohere": CohereProvider("cohere", environ.get("COHERE_API_KEY")),
        "cohere_chat": CohereProvider("cohere_chat", environ.get("COHERE_API_KEY")),
        "mock": MockProvider(tokenizer),
    })
