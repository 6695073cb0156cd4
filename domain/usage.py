"""Token usage of one call, as the provider reported it (or as we estimated it)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    audio_seconds: float = 0.0
    # Parts of prompt_tokens / completion_tokens that some models price apart.
    cache_write_tokens: int = 0
    audio_prompt_tokens: int = 0
    audio_completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def as_event_fields(self) -> dict:
        fields = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cached_tokens": self.cached_tokens,
            "reasoning_tokens": self.reasoning_tokens,
        }
        extra = {"cache_write_tokens": self.cache_write_tokens, "audio_prompt_tokens": self.audio_prompt_tokens,
                 "audio_completion_tokens": self.audio_completion_tokens}
        return {**fields, **{name: count for name, count in extra.items() if count}}

    def __add__(self, other: "Usage") -> "Usage":
        return Usage(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in dataclasses.fields(Usage)})

    @classmethod
    def from_realtime(cls, usage: dict | None) -> "Usage":
        """Reads the `usage` of a Realtime API `response.done` event."""
        if not usage:
            return cls()
        inputs = usage.get("input_token_details") or {}
        outputs = usage.get("output_token_details") or {}
        return cls(
            prompt_tokens=int(usage.get("input_tokens") or 0),
            completion_tokens=int(usage.get("output_tokens") or 0),
            cached_tokens=int(inputs.get("cached_tokens") or 0),
            audio_prompt_tokens=int(inputs.get("audio_tokens") or 0),
            audio_completion_tokens=int(outputs.get("audio_tokens") or 0),
        )

    @classmethod
    def from_openai(cls, usage: dict | None) -> "Usage":
        """Reads an OpenAI `usage` object (chat, completions or embeddings)."""
        if not usage:
            return cls()
        prompt_details = usage.get("prompt_tokens_details") or {}
        completion_details = usage.get("completion_tokens_details") or {}
        return cls(
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            cached_tokens=int(prompt_details.get("cached_tokens") or 0),
            reasoning_tokens=int(completion_details.get("reasoning_tokens") or 0),
            cache_write_tokens=int(usage.get("cache_creation_input_tokens") or 0),
            audio_prompt_tokens=int(prompt_details.get("audio_tokens") or 0),
            audio_completion_tokens=int(completion_details.get("audio_tokens") or 0),
        )
