"""Providers that speak OpenAI's API: one adapter, per-provider defaults.

The key environment variables are the ones LiteLLM reads, so a LiteLLM user's environment works.
"""
from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from moneta.application.config import Deployment
from moneta.application.ports import AudioFile
from moneta.domain.errors import BadRequestError
from moneta.infrastructure.providers.openai_compatible import OpenAICompatibleProvider
from moneta.infrastructure.providers.params import apply_param_policy


@dataclass(frozen=True)
class FamilyDefaults:
    name: str
    base_url: str | None  # None: every deployment must set api_base
    key_envs: tuple[str, ...] = ()
    base_env: str | None = None
    embeddings: bool = False
    transcription: bool = False
    renames: dict[str, str] = field(default_factory=dict)  # OpenAI name -> the provider's name


FAMILY: tuple[FamilyDefaults, ...] = (
    FamilyDefaults("openai", "https://api.openai.com/v1", ("OPENAI_API_KEY",), "OPENAI_BASE_URL",
                   embeddings=True, transcription=True),
    FamilyDefaults("groq", "https://api.groq.com/openai/v1", ("GROQ_API_KEY",), "GROQ_API_BASE", transcription=True),
    FamilyDefaults("mistral", "https://api.mistral.ai/v1", ("MISTRAL_API_KEY",), "MISTRAL_API_BASE", embeddings=True,
                   renames={"seed": "random_seed", "max_completion_tokens": "max_tokens"}),
    FamilyDefaults("deepseek", "https://api.deepseek.com/v1", ("DEEPSEEK_API_KEY",), "DEEPSEEK_API_BASE",
                   renames={"max_completion_tokens": "max_tokens"}),
    FamilyDefaults("together_ai", "https://api.together.xyz/v1",
                   ("TOGETHERAI_API_KEY", "TOGETHER_API_KEY", "TOGETHER_AI_TOKEN"), "TOGETHERAI_API_BASE",
                   embeddings=True),
    FamilyDefaults("fireworks_ai", "https://api.fireworks.ai/inference/v1",
                   ("FIREWORKS_AI_API_KEY", "FIREWORKS_API_KEY", "FIREWORKSAI_API_KEY", "FIREWORKS_AI_TOKEN"),
                   "FIREWORKS_AI_API_BASE", embeddings=True),
    FamilyDefaults("openrouter", "https://openrouter.ai/api/v1", ("OPENROUTER_API_KEY", "OR_API_KEY"),
                   "OPENROUTER_API_BASE"),
    FamilyDefaults("xai", "https://api.x.ai/v1", ("XAI_API_KEY",), "XAI_API_BASE"),
    FamilyDefaults("perplexity", "https://api.perplexity.ai", ("PERPLEXITYAI_API_KEY", "PERPLEXITY_API_KEY"),
                   "PERPLEXITY_API_BASE", renames={"max_completion_tokens": "max_tokens"}),
    FamilyDefaults("hosted_vllm", None, ("HOSTED_VLLM_API_KEY",), "HOSTED_VLLM_API_BASE", embeddings=True),
)


class OpenAIFamilyProvider(OpenAICompatibleProvider):
    """An OpenAI-compatible provider with its own supported parameters and endpoints."""

    def __init__(self, defaults: FamilyDefaults, environ: Mapping[str, str]) -> None:
        base = (environ.get(defaults.base_env) if defaults.base_env else None) or defaults.base_url
        key = next((environ[k] for k in defaults.key_envs if environ.get(k)), None)
        super().__init__(defaults.name, base, key)
        self.defaults = defaults

    async def chat(self, deployment: Deployment, body: dict[str, Any]) -> dict[str, Any]:
        return await super().chat(deployment, self._prepare(deployment, body))

    async def chat_stream(self, deployment: Deployment, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        async for chunk in super().chat_stream(deployment, self._prepare(deployment, body)):
            yield chunk

    async def embedding(self, deployment: Deployment, body: dict[str, Any]) -> dict[str, Any]:
        if not self.defaults.embeddings:
            raise self._unsupported(deployment, "embeddings")
        return await super().embedding(deployment, body)

    async def transcription(self, deployment: Deployment, audio: AudioFile, fields: dict[str, Any]) -> dict[str, Any]:
        if not self.defaults.transcription:
            raise self._unsupported(deployment, "audio transcription")
        return await super().transcription(deployment, audio, fields)

    def _prepare(self, deployment: Deployment, body: dict[str, Any]) -> dict[str, Any]:
        checked = apply_param_policy(self.name, deployment, body)
        renames = self.defaults.renames
        return {renames.get(k, k): v for k, v in checked.items()}

    def _unsupported(self, deployment: Deployment, what: str) -> BadRequestError:
        return BadRequestError(f"{self.name} does not offer {what} through Moneta", param="model",
                               code="unsupported_endpoint", provider=self.name, model=deployment.provider_model)


def family_providers(environ: Mapping[str, str]) -> dict[str, OpenAIFamilyProvider]:
    return {defaults.name: OpenAIFamilyProvider(defaults, environ) for defaults in FAMILY}
