"""Token counting with tiktoken, from the encodings shipped in this package (works offline).

OpenAI models use their own encoding (o200k_base or cl100k_base, by tiktoken's model map).
Other families (Claude, Gemini, Llama, ...) have no public tokenizer here: their counts are
a documented estimate with cl100k_base, typically within ±15% of the provider's own count.
"""
from __future__ import annotations

import threading
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence
from unittest import mock

import tiktoken
import tiktoken_ext.openai_public as openai_public
from tiktoken.load import load_tiktoken_bpe

_DATA = Path(__file__).with_name("tiktoken_data")
_SHA256 = {
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
}
ESTIMATE_ENCODING = "cl100k_base"
# OpenAI's chat format: each message costs 3 tokens of framing, a name 1 more, the reply 3.
_PER_MESSAGE, _PER_NAME, _REPLY_PRIMING = 3, 1, 3
_lock = threading.Lock()


def _local_bpe(encoding_name: str):
    def load(_url: str, expected_hash: str | None = None) -> dict[bytes, int]:
        return load_tiktoken_bpe(str(_DATA / f"{encoding_name}.tiktoken"), expected_hash=_SHA256[encoding_name])

    return load


@lru_cache(maxsize=None)
def encoding(name: str) -> tiktoken.Encoding:
    """Builds the encoding from the shipped file; tiktoken's own constructor would download it."""
    with _lock, mock.patch.object(openai_public, "load_tiktoken_bpe", _local_bpe(name)):
        params = getattr(openai_public, name)()
    return tiktoken.Encoding(**params)


def preload() -> None:
    """Reads the shipped encodings now, so that no request pays for the first read from disk."""
    for name in _SHA256:
        encoding(name)


@lru_cache(maxsize=4096)
def encoding_name_for(model: str) -> tuple[str, bool]:
    """(encoding name, exact?) for a model, with or without its `provider/` prefix."""
    bare = model.rsplit("/", 1)[-1]
    try:
        name = tiktoken.encoding_name_for_model(bare)
    except KeyError:
        return ESTIMATE_ENCODING, False
    return (name, True) if name in _SHA256 else (ESTIMATE_ENCODING, False)


class TiktokenCounter:
    def encoding_for(self, model: str) -> tuple[str, bool]:
        return encoding_name_for(model)

    def count_text(self, model: str, text: str) -> int:
        name = encoding_name_for(model)[0]
        if len(text) <= _REMEMBERED_UP_TO:
            return _count_short(name, text)
        return len(encoding(name).encode(text, disallowed_special=()))

    def count_messages(self, model: str, messages: Sequence[dict[str, Any]]) -> int:
        total = _REPLY_PRIMING
        for message in messages:
            total += _PER_MESSAGE
            for key, value in message.items():
                total += self.count_text(model, _as_text(value))
                if key == "name":
                    total += _PER_NAME
        return total


# tiktoken lets go of the GIL on every call: in a server whose ledger writer is running, taking
# it back costs tens of microseconds, against one for the count itself. Short texts repeat (roles,
# system prompts, few-shot examples): their counts are remembered.
_REMEMBERED_UP_TO = 1024  # characters


@lru_cache(maxsize=8192)
def _count_short(encoding_name: str, text: str) -> int:
    return len(encoding(encoding_name).encode(text, disallowed_special=()))


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):  # multi-part content: count the text parts
        return " ".join(p.get("text", "") for p in value if isinstance(p, dict) and p.get("type") == "text")
    if value is None:
        return ""
    return str(value)
