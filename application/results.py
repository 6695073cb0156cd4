"""Typed OpenAI-shaped results that are also plain dicts (`r.choices[0].message.content`
and `r["choices"][0]["message"]["content"]` both work, and `json.dumps(r)` just works)."""
from __future__ import annotations

from typing import Any


class OpenAIObject(dict):
    """A dict whose keys read as attributes, recursively. An absent field reads as None,
    as it does on the `openai` SDK's models (`chunk.choices[0].delta.content`)."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return _wrap(self.get(name))

    def __getitem__(self, key: str) -> Any:
        return _wrap(dict.__getitem__(self, key))

    def model_dump(self) -> dict:
        return dict(self)


def _wrap(value: Any) -> Any:
    if isinstance(value, dict) and not isinstance(value, OpenAIObject):
        return OpenAIObject(value)
    if isinstance(value, list):
        return [_wrap(v) for v in value]
    return value


class ModelResponse(OpenAIObject):
    """`chat.completion` or `text_completion`."""


class ModelResponseChunk(OpenAIObject):
    """`chat.completion.chunk`."""


class EmbeddingResponse(OpenAIObject):
    pass


class TranscriptionResponse(OpenAIObject):
    pass
