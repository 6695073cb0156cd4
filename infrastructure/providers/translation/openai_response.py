"""Building OpenAI chat responses and stream chunks from a provider's answer."""
from __future__ import annotations

import time
import uuid
from typing import Any


def new_tool_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def usage(prompt: int, completion: int, *, cached: int = 0, reasoning: int = 0) -> dict[str, Any]:
    result: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": completion,
                              "total_tokens": prompt + completion}
    if cached:
        result["prompt_tokens_details"] = {"cached_tokens": cached}
    if reasoning:
        result["completion_tokens_details"] = {"reasoning_tokens": reasoning}
    return result


def message(text: str | None, tool_calls: list[dict[str, Any]], reasoning: str | None = None) -> dict[str, Any]:
    result: dict[str, Any] = {"role": "assistant", "content": text if text or not tool_calls else None}
    if tool_calls:
        result["tool_calls"] = tool_calls
    if reasoning:
        result["reasoning_content"] = reasoning
    return result


def tool_call(call_id: str, name: str, arguments: str, index: int | None = None) -> dict[str, Any]:
    call: dict[str, Any] = {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
    if index is not None:
        call["index"] = index
    return call


def completion(response_id: str, model: str, choices: list[dict[str, Any]],
               usage_: dict[str, Any] | None) -> dict[str, Any]:
    result: dict[str, Any] = {"id": response_id, "object": "chat.completion", "created": int(time.time()),
                              "model": model, "choices": choices}
    if usage_ is not None:
        result["usage"] = usage_
    return result


class ChunkMaker:
    """Chunks of one stream, sharing its id, model and creation time."""

    def __init__(self, response_id: str, model: str) -> None:
        self.response_id = response_id
        self.model = model
        self.created = int(time.time())

    def delta(self, delta: dict[str, Any], finish_reason: str | None = None, index: int = 0) -> dict[str, Any]:
        return self._chunk([{"index": index, "delta": delta, "finish_reason": finish_reason}])

    def usage(self, usage_: dict[str, Any]) -> dict[str, Any]:
        return {**self._chunk([]), "usage": usage_}

    def _chunk(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {"id": self.response_id, "object": "chat.completion.chunk", "created": self.created,
                "model": self.model, "choices": choices}
