"""Legacy text completions (`/v1/completions`) on a chat-only provider, as LiteLLM serves them.

Each prompt becomes one user message of its own chat request, sent through the adapter's `chat`;
the answers become one `text_completion`, their choices numbered in prompt order as OpenAI
numbers a batch of prompts, their usage summed.
"""
from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from moneta.application.config import Deployment
from moneta.domain.errors import BadRequestError, UnsupportedParamsError
from moneta.infrastructure.providers.params import drops_params

Chat = Callable[[Deployment, dict[str, Any]], Awaitable[dict[str, Any]]]

# Text-only parameters a chat model cannot honour, with the value that asks for nothing.
_TEXT_ONLY: dict[str, Any] = {"echo": False, "logprobs": None, "best_of": 1, "suffix": None}
_NOT_FOR_CHAT = frozenset({"prompt", "stream", "stream_options", *_TEXT_ONLY})


async def text_completion_via_chat(chat: Chat, deployment: Deployment, body: dict[str, Any]) -> dict[str, Any]:
    prompts = _prompts(body.get("prompt"))
    params = _chat_params(deployment, body)
    answers = await asyncio.gather(
        *(chat(deployment, {**params, "messages": [{"role": "user", "content": prompt}]}) for prompt in prompts))
    return _text_completion(answers, deployment)


def _prompts(prompt: Any) -> list[str]:
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise BadRequestError("this provider takes 'prompt' as a string or a list of strings, not token ids",
                              param="prompt")
    return prompts


def _chat_params(deployment: Deployment, body: dict[str, Any]) -> dict[str, Any]:
    """The request's parameters for `chat`, which judges them as it judges any chat request."""
    always_dropped = deployment.extra_params.get("additional_drop_params") or ()
    asked = [name for name, nothing in _TEXT_ONLY.items()
             if body.get(name) not in (None, nothing) and name not in always_dropped]
    if asked and not drops_params(deployment, body):
        raise UnsupportedParamsError(
            f"{deployment.provider} does not support the parameter '{asked[0]}' on text completions. "
            "Set drop_params: true to drop it.",
            param=asked[0], provider=deployment.provider, model=deployment.provider_model)
    return {k: v for k, v in body.items() if k not in _NOT_FOR_CHAT}


def _text_completion(answers: list[dict[str, Any]], deployment: Deployment) -> dict[str, Any]:
    chat_choices = [choice for answer in answers for choice in answer.get("choices") or ()]
    choices = [{"text": (choice.get("message") or {}).get("content") or "", "index": index, "logprobs": None,
                "finish_reason": choice.get("finish_reason")} for index, choice in enumerate(chat_choices)]
    return {
        "id": answers[0].get("id") or f"cmpl-{uuid.uuid4().hex}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": answers[0].get("model") or deployment.provider_model,
        "choices": choices,
        # None, not zeros, when the provider counted nothing: the gateway then estimates the usage.
        "usage": _summed([answer.get("usage") or {} for answer in answers]) or None,
    }


def _summed(usages: list[dict[str, Any]]) -> dict[str, Any]:
    """Numeric fields added up, nested details (cached, reasoning tokens) included."""
    total: dict[str, Any] = {}
    for usage in usages:
        for key, value in usage.items():
            if isinstance(value, dict):
                total[key] = _summed([total.get(key) or {}, value])
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                total[key] = total.get(key, 0) + value
    return total
