"""The built-in `mock/` provider: deterministic answers, offline, for demos and tests.

Settings (in `litellm_params`, or per request in the body where marked):
- `mock_response` (also per request): the exact reply text;
- `mock_latency_ms`: wait this long before answering (and between stream chunks, a tenth);
- `mock_failure_rate` (0..1) and `mock_failure_status` (default 500): failure injection;
- `mock_stream_chunks`: how many chunks a streamed reply is cut into (default 4).
Tokens are counted with the gateway's tokenizer, as `/utils/token_counter` counts them (a
prompt's messages with OpenAI's chat framing), so a mock call bills what a real one would.
"""
from __future__ import annotations

import asyncio
import hashlib
import io
import random
import struct
import time
import uuid
import wave
from typing import Any, AsyncIterator

from moneta.application.config import Deployment
from moneta.application.ports import AudioFile, Tokenizer
from moneta.domain import errors

_FAILURES = {
    400: errors.BadRequestError, 401: errors.AuthenticationError, 404: errors.NotFoundError,
    408: errors.TimeoutError, 429: errors.RateLimitError, 500: errors.InternalServerError,
    503: errors.ServiceUnavailableError,
}


def _prompt_text(messages: list[dict[str, Any]]) -> str:
    parts = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
        parts.append(str(content or ""))
    return " ".join(parts)


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return _prompt_text([message])
    return ""


class MockProvider:
    name = "mock"

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer

    def _usage(self, deployment: Deployment, prompt_tokens: int, reply: str) -> dict[str, int]:
        completion = self.tokenizer.count_text(deployment.provider_model, reply)
        return {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
                "total_tokens": prompt_tokens + completion}

    def _chat_usage(self, deployment: Deployment, messages: list[dict[str, Any]], reply: str) -> dict[str, int]:
        return self._usage(deployment, self.tokenizer.count_messages(deployment.provider_model, messages), reply)

    async def chat(self, deployment: Deployment, body: dict[str, Any]) -> dict[str, Any]:
        await self._behave(deployment)
        messages = body["messages"]
        reply = self._reply(deployment, body, _last_user_text(messages))
        return {
            "id": f"chatcmpl-mock-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": deployment.provider_model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": reply},
                         "finish_reason": "stop", "logprobs": None}],
            "usage": self._chat_usage(deployment, messages, reply),
        }

    async def chat_stream(self, deployment: Deployment, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        await self._behave(deployment)
        messages = body["messages"]
        reply = self._reply(deployment, body, _last_user_text(messages))
        chunk_id = f"chatcmpl-mock-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        pieces = _split(reply, int(deployment.extra_params.get("mock_stream_chunks", 4)))
        pause = float(deployment.extra_params.get("mock_latency_ms", 0)) / 10000
        for index, piece in enumerate(pieces):
            delta = {"role": "assistant", "content": piece} if index == 0 else {"content": piece}
            yield _chunk(chunk_id, created, deployment, [{"index": 0, "delta": delta, "finish_reason": None}])
            if pause:
                await asyncio.sleep(pause)
        yield _chunk(chunk_id, created, deployment, [{"index": 0, "delta": {}, "finish_reason": "stop"}])
        final = _chunk(chunk_id, created, deployment, [])
        final["usage"] = self._chat_usage(deployment, messages, reply)
        yield final

    async def text_completion(self, deployment: Deployment, body: dict[str, Any]) -> dict[str, Any]:
        await self._behave(deployment)
        prompt = body["prompt"] if isinstance(body["prompt"], str) else " ".join(map(str, body["prompt"]))
        reply = self._reply(deployment, body, prompt)
        return {
            "id": f"cmpl-mock-{uuid.uuid4().hex[:24]}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": deployment.provider_model,
            "choices": [{"index": 0, "text": reply, "finish_reason": "stop", "logprobs": None}],
            "usage": self._usage(deployment, self.tokenizer.count_text(deployment.provider_model, prompt), reply),
        }

    async def embedding(self, deployment: Deployment, body: dict[str, Any]) -> dict[str, Any]:
        await self._behave(deployment)
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        dimensions = int(body.get("dimensions") or 8)
        data = [{"object": "embedding", "index": i, "embedding": _vector(str(text), dimensions)}
                for i, text in enumerate(inputs)]
        tokens = sum(self.tokenizer.count_text(deployment.provider_model, str(text)) for text in inputs)
        return {"object": "list", "data": data, "model": deployment.provider_model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}

    async def transcription(self, deployment: Deployment, audio: AudioFile, fields: dict[str, Any]) -> dict[str, Any]:
        await self._behave(deployment)
        seconds = _audio_seconds(audio.content)
        text = str(deployment.extra_params.get("mock_response")
                   or f"mock transcription of {audio.filename} ({len(audio.content)} bytes)")
        return {"text": text, "duration": seconds, "usage": {"type": "duration", "seconds": seconds}}

    # -- behaviour -------------------------------------------------------------------------

    @staticmethod
    def _reply(deployment: Deployment, body: dict[str, Any], prompt: str) -> str:
        fixed = body.get("mock_response") or deployment.extra_params.get("mock_response")
        if fixed:
            return str(fixed)
        return f"This is a mock response to: {prompt[:200]}" if prompt else "This is a mock response."

    @staticmethod
    async def _behave(deployment: Deployment) -> None:
        params = deployment.extra_params
        latency = float(params.get("mock_latency_ms", 0))
        if latency:
            await asyncio.sleep(latency / 1000)
        rate = float(params.get("mock_failure_rate", 0))
        if rate and random.random() < rate:
            status = int(params.get("mock_failure_status", 500))
            cls = _FAILURES.get(status, errors.error_for_status(status))
            raise cls(f"mock failure injected (HTTP {status})", provider="mock", model=deployment.provider_model,
                      status_code=status, retry_after=params.get("mock_retry_after"))


def _chunk(chunk_id: str, created: int, deployment: Deployment, choices: list[dict[str, Any]]) -> dict[str, Any]:
    return {"id": chunk_id, "object": "chat.completion.chunk", "created": created,
            "model": deployment.provider_model, "choices": choices}


def _split(text: str, parts: int) -> list[str]:
    words = text.split(" ")
    parts = max(1, min(parts, len(words)))
    size = -(-len(words) // parts)
    groups = [" ".join(words[i:i + size]) for i in range(0, len(words), size)]
    return [g if i == 0 else " " + g for i, g in enumerate(groups)]


def _vector(text: str, dimensions: int) -> list[float]:
    digest = hashlib.sha256(text.encode()).digest()
    while len(digest) < dimensions * 4:
        digest += hashlib.sha256(digest).digest()
    values = struct.unpack(f"<{dimensions}I", digest[: dimensions * 4])
    return [round(v / 0xFFFFFFFF * 2 - 1, 6) for v in values]


def _audio_seconds(content: bytes) -> float:
    """A WAV file's real duration; for other formats, the size at 16 kB/s (128 kbit/s)."""
    try:
        with wave.open(io.BytesIO(content)) as reader:
            return round(reader.getnframes() / reader.getframerate(), 3)
    except (wave.Error, EOFError):
        return round(len(content) / 16000, 3)
