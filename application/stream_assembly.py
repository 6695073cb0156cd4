"""A chat stream as one answer, and one answer as a stream: how streams fill and read the cache.

`StreamAssembler` builds, from the chunks, the `chat.completion` the stream amounts to (content,
refusal, tool calls, finish reason, usage). `as_chunks` plays a `chat.completion` back as
`chat.completion.chunk`s, each choice's content in one chunk, as LiteLLM streams a cache hit.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

from moneta.domain.usage import Usage

_HEAD_FIELDS = ("id", "created", "model", "system_fingerprint")


@dataclass
class _Choice:
    content: list[str] = field(default_factory=list)
    refusal: list[str] = field(default_factory=list)
    tool_calls: dict[int, dict[str, Any]] = field(default_factory=dict)
    finish_reason: str | None = None

    def message(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": "".join(self.content) or None}
        if self.refusal:
            message["refusal"] = "".join(self.refusal)
        if self.tool_calls:
            message["tool_calls"] = [self.tool_calls[index] for index in sorted(self.tool_calls)]
        return message


class StreamAssembler:
    def __init__(self) -> None:
        self._head: dict[str, Any] = {}
        self._choices: dict[int, _Choice] = {}
        self._usage: dict[str, Any] | None = None

    def add(self, chunk: dict[str, Any]) -> None:
        if not self._head:
            self._head = {name: chunk[name] for name in _HEAD_FIELDS if name in chunk}
        if isinstance(chunk.get("usage"), dict):
            self._usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            self._add_choice(self._choices.setdefault(choice.get("index", 0), _Choice()), choice)

    @staticmethod
    def _add_choice(into: _Choice, choice: dict[str, Any]) -> None:
        delta = choice.get("delta") or {}
        if delta.get("content"):
            into.content.append(delta["content"])
        if delta.get("refusal"):
            into.refusal.append(delta["refusal"])
        for call in delta.get("tool_calls") or ():
            slot = into.tool_calls.setdefault(call.get("index", 0), {
                "id": None, "type": "function", "function": {"name": "", "arguments": ""}})
            if call.get("id"):
                slot["id"] = call["id"]
            function = call.get("function") or {}
            slot["function"]["name"] += function.get("name") or ""
            slot["function"]["arguments"] += function.get("arguments") or ""
        if choice.get("finish_reason"):
            into.finish_reason = choice["finish_reason"]

    def response(self, usage: Usage) -> dict[str, Any]:
        """The answer, with the provider's usage if it sent one, else `usage` (our count)."""
        choices = [{"index": index, "message": choice.message(), "finish_reason": choice.finish_reason,
                    "logprobs": None} for index, choice in sorted(self._choices.items())]
        reported = self._usage or {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
                                   "total_tokens": usage.total_tokens}
        return {**self._head, "object": "chat.completion", "choices": choices, "usage": reported}


def as_chunks(response: dict[str, Any], with_usage: bool) -> Iterator[dict[str, Any]]:
    head = {name: response[name] for name in _HEAD_FIELDS if name in response}
    head["object"] = "chat.completion.chunk"
    for choice in response.get("choices") or ():
        index, message = choice.get("index", 0), choice.get("message") or {}
        delta = {"role": "assistant", "content": message.get("content")}
        if message.get("refusal"):
            delta["refusal"] = message["refusal"]
        if message.get("tool_calls"):
            delta["tool_calls"] = [{"index": i, **call} for i, call in enumerate(message["tool_calls"])]
        yield {**head, "choices": [{"index": index, "delta": delta, "finish_reason": None}]}
        yield {**head, "choices": [{"index": index, "delta": {}, "finish_reason": choice.get("finish_reason")}]}
    if with_usage and response.get("usage") is not None:
        yield {**head, "choices": [], "usage": response["usage"]}
