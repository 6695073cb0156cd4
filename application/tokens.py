"""Counting tokens: LiteLLM's `token_counter()`, and the count behind `/utils/token_counter`.

OpenAI models are counted exactly with their own tiktoken encoding (o200k_base or
cl100k_base, shipped in the package, so this works offline). Other families are an estimate
with cl100k_base; `TokenCount.exact` says which. A message list is counted with OpenAI's
chat framing (a few tokens per message), as OpenAI bills it.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Protocol, Sequence

import orjson

from moneta.application.config import GatewayConfig
from moneta.application.ports import Tokenizer
from moneta.domain.errors import BadRequestError


class EncodingTokenizer(Tokenizer, Protocol):
    def encoding_for(self, model: str) -> tuple[str, bool]:
        """(encoding name, exact?) for a model."""
        ...


_INLINE_CHARACTERS = 4096  # about 1,000 tokens: tens of microseconds to count


@dataclass(frozen=True)
class TokenCount:
    total_tokens: int
    encoding: str
    exact: bool


def count_tokens(
    tokenizer: EncodingTokenizer,
    model: str,
    messages: Sequence[dict[str, Any]] | None = None,
    text: str | Sequence[str] | None = None,
) -> TokenCount:
    """Counts either `messages` (chat framing included) or `text` (a string, or several)."""
    encoding, exact = tokenizer.encoding_for(model)
    return TokenCount(total_tokens(tokenizer, model, messages, text), encoding, exact)


async def count_messages_async(tokenizer: Tokenizer, model: str, messages: Sequence[dict[str, Any]]) -> int:
    """`count_messages` from async code: large prompts are counted on a thread (tiktoken lets go of
    the GIL), so that a long prompt never stalls the event loop; small ones cost less than the hop."""
    if _characters(messages) <= _INLINE_CHARACTERS:
        return tokenizer.count_messages(model, messages)
    return await asyncio.to_thread(tokenizer.count_messages, model, messages)


async def count_text_async(tokenizer: Tokenizer, model: str, text: str) -> int:
    if len(text) <= _INLINE_CHARACTERS:
        return tokenizer.count_text(model, text)
    return await asyncio.to_thread(tokenizer.count_text, model, text)


def _characters(messages: Sequence[Any]) -> int:
    total = 0
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            total += len(content)
        elif isinstance(content, list):
            total += sum(len(str(part.get("text") or "")) for part in content if isinstance(part, dict))
    return total


def prompt_tokens(tokenizer: Tokenizer, model: str, chat: dict[str, Any]) -> int:
    """The input tokens of an OpenAI chat body: its messages and, as JSON, its tools."""
    total = tokenizer.count_messages(model, chat.get("messages") or [])
    if chat.get("tools"):
        total += tokenizer.count_text(model, orjson.dumps(chat["tools"]).decode())
    return total


def provider_model(config: GatewayConfig, model: str) -> str:
    """The model whose tokenizer counts for `model`: a config model name stands for its
    (first) deployment's provider model, as in LiteLLM's `model_used`."""
    for deployment in config.deployments:
        if deployment.model_name == model:
            return deployment.provider_model
    return model


def total_tokens(tokenizer: Tokenizer, model: str, messages: Any, text: Any) -> int:
    if (messages is None) == (text is None):
        raise BadRequestError("Pass either 'messages' or a text ('prompt'), not both and not neither.",
                              param="messages")
    if messages is not None:
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            raise BadRequestError("'messages' must be an array of message objects.", param="messages")
        return tokenizer.count_messages(model, messages)
    texts = [text] if isinstance(text, str) else text
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise BadRequestError("'prompt' must be a string or an array of strings.", param="prompt")
    return sum(tokenizer.count_text(model, t) for t in texts)
