"""`provider/model` references, as LiteLLM writes them."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ModelRef:
    provider: str
    name: str

    @classmethod
    def parse(cls, ref: str, default_provider: str = "openai") -> "ModelRef":
        provider, sep, name = ref.partition("/")
        if not sep or not provider or not name:
            return cls(default_provider, ref)
        return cls(provider.lower(), name)

    def __str__(self) -> str:
        return f"{self.provider}/{self.name}"
