"""Which OpenAI chat parameters each provider accepts, and what to do with the others.

An unsupported parameter is refused with a 400 naming it and the provider, or dropped when
`drop_params` is true (on the deployment, as the gateway-level setting arrives there too, or
in the request body). Names in the deployment's `additional_drop_params` are always dropped.
`metadata` is not judged (LiteLLM callers tag requests with it), and `user` is never refused: the
gateway attributes spend by it, so where the provider does not take it, it is dropped quietly. Keys that are not OpenAI chat parameters are not judged here: the
OpenAI-compatible family passes them through, the translating adapters read only what they know.
"""
from __future__ import annotations

from typing import Any

from moneta.application.config import Deployment
from moneta.domain.errors import UnsupportedParamsError

OPENAI_CHAT_PARAMS = frozenset({
    "temperature", "top_p", "n", "stop", "max_tokens", "max_completion_tokens", "presence_penalty",
    "frequency_penalty", "logit_bias", "logprobs", "top_logprobs", "user", "seed", "tools", "tool_choice",
    "parallel_tool_calls", "response_format", "reasoning_effort", "modalities", "audio", "prediction",
    "service_tier", "store", "web_search_options", "verbosity", "functions", "function_call",
    "prompt_cache_key", "safety_identifier",
})

_QUIETLY_DROPPED = frozenset({"user"})
_SAMPLING = frozenset({"temperature", "top_p", "stop", "max_tokens", "max_completion_tokens"})
_TOOLS = frozenset({"tools", "tool_choice", "parallel_tool_calls"})
_PENALTIES = frozenset({"presence_penalty", "frequency_penalty"})
_OPEN_MODELS = _SAMPLING | _TOOLS | _PENALTIES | {"n", "seed", "user", "response_format", "logprobs",
                                                  "top_logprobs", "logit_bias"}

SUPPORTED_PARAMS: dict[str, frozenset[str]] = {
    "openai": OPENAI_CHAT_PARAMS,
    "azure": OPENAI_CHAT_PARAMS,
    "hosted_vllm": OPENAI_CHAT_PARAMS,
    "openrouter": OPENAI_CHAT_PARAMS,
    "groq": _SAMPLING | _TOOLS | _PENALTIES | {"n", "seed", "user", "response_format", "reasoning_effort",
                                               "service_tier"},
    "mistral": _SAMPLING | _TOOLS | _PENALTIES | {"n", "seed", "response_format", "prediction"},
    "deepseek": _SAMPLING | _TOOLS | _PENALTIES | {"response_format", "logprobs", "top_logprobs"},
    "together_ai": _OPEN_MODELS,
    "fireworks_ai": _OPEN_MODELS | {"reasoning_effort", "prediction"},
    "xai": _OPEN_MODELS | {"reasoning_effort", "web_search_options"},
    "perplexity": _SAMPLING | _PENALTIES | {"response_format", "web_search_options", "reasoning_effort"},
    "anthropic": _SAMPLING | _TOOLS | {"user", "response_format", "reasoning_effort"},
    "gemini": _SAMPLING | _TOOLS | _PENALTIES | {"n", "seed", "response_format", "reasoning_effort"},
    "ollama": _SAMPLING | _PENALTIES | {"tools", "seed", "response_format", "reasoning_effort"},
}
SUPPORTED_PARAMS["vertex_ai"] = SUPPORTED_PARAMS["gemini"]
SUPPORTED_PARAMS["ollama_chat"] = SUPPORTED_PARAMS["ollama"]


def apply_param_policy(provider: str, deployment: Deployment, body: dict[str, Any]) -> dict[str, Any]:
    """The body with `drop_params` removed and unsupported parameters dropped or refused."""
    drop = drops_params(deployment, body)
    supported = SUPPORTED_PARAMS[provider]
    unsupported = [k for k, v in body.items() if k in OPENAI_CHAT_PARAMS and k not in supported and v is not None]
    refused = [k for k in unsupported if k not in _QUIETLY_DROPPED]
    if refused and not drop:
        name = refused[0]
        raise UnsupportedParamsError(
            f"{provider} does not support the parameter '{name}'. Set drop_params: true to drop it.",
            param=name, provider=provider, model=deployment.provider_model,
        )
    skipped = {*unsupported, "drop_params", *(deployment.extra_params.get("additional_drop_params") or ())}
    return {k: v for k, v in body.items() if k not in skipped}


def drops_params(deployment: Deployment, body: dict[str, Any]) -> bool:
    """Whether unsupported parameters are dropped rather than refused."""
    return bool(body.get("drop_params") or deployment.extra_params.get("drop_params"))
