"""OpenAI-shaped requests checked against their declared shapes: a 400 naming the parameter.

The shapes are compiled once, here, at import. Each check returns the model asked for.
"""
from __future__ import annotations

from typing import Any

from moneta.application import openai_schemas as schemas
from moneta.application.schema import Shape

_CHAT = Shape(schemas.ChatRequest)
_TEXT_COMPLETION = Shape(schemas.TextCompletionRequest)
_EMBEDDING = Shape(schemas.EmbeddingRequest)
_TOKEN_COUNT = Shape(schemas.TokenCountRequest)
_TRANSCRIPTION = Shape(schemas.TranscriptionForm)


def validate_chat(body: Any) -> str:
    _CHAT.check(body)
    return body["model"]


def validate_text_completion(body: Any) -> str:
    _TEXT_COMPLETION.check(body)
    return body["model"]


def validate_embedding(body: Any) -> str:
    _EMBEDDING.check(body)
    return body["model"]


def validate_token_count(body: Any) -> str:
    _TOKEN_COUNT.check(body)
    return body["model"]


def validate_transcription(fields: dict[str, Any]) -> str:
    """The form's text fields (the file apart), as received: strings, or an upload where text belongs."""
    _TRANSCRIPTION.check(fields)
    return fields["model"]
