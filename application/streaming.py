"""Bookkeeping of a chat stream on its way through: usage, text seen, finish reason."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from moneta.application.ports import Tokenizer
from moneta.application.tokens import count_messages_async, count_text_async
from moneta.domain.usage import Usage


@dataclass
class StreamTally:
    first_token_ms: float
    usage: Usage | None = None
    finish_reason: str | None = None
    text_parts: list[str] = field(default_factory=list)

    def add(self, chunk: dict[str, Any]) -> None:
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self.usage = Usage.from_openai(usage)
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            content = delta.get("content")
            if content:
                self.text_parts.append(content)
            for call in delta.get("tool_calls") or ():
                arguments = (call.get("function") or {}).get("arguments")
                if arguments:
                    self.text_parts.append(arguments)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]

    @staticmethod
    def visible(chunk: dict[str, Any], wants_usage: bool) -> dict[str, Any] | None:
        """The chunk as the client asked for it: usage only with `include_usage`."""
        if wants_usage or "usage" not in chunk:
            return chunk
        if not chunk.get("choices"):
            return None  # the usage-only final chunk the gateway asked for on its own account
        return {k: v for k, v in chunk.items() if k != "usage"}

    async def usage_or_estimate(self, tokenizer: Tokenizer, model: str, body: dict[str, Any]) -> tuple[Usage, bool]:
        """The provider's usage when the stream delivered it, else our count of what was sent."""
        if self.usage is not None:
            return self.usage, False
        prompt = await count_messages_async(tokenizer, model, body.get("messages") or [])
        completion = await count_text_async(tokenizer, model, "".join(self.text_parts))
        return Usage(prompt_tokens=prompt, completion_tokens=completion), True
