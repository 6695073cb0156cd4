"""Anthropic Messages responses and stream events -> OpenAI chat completions and chunks."""
from __future__ import annotations

from typing import Any

import orjson

from moneta.infrastructure.providers.translation import openai_response as openai
from moneta.infrastructure.providers.translation.anthropic_request import JSON_TOOL

FINISH_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "pause_turn": "stop", "max_tokens": "length",
                  "tool_use": "tool_calls", "refusal": "content_filter"}


def openai_usage(usage: dict[str, Any]) -> dict[str, Any]:
    """Anthropic counts cached input apart from `input_tokens`; OpenAI's prompt_tokens include it."""
    cache_read = usage.get("cache_read_input_tokens") or 0
    cache_write = usage.get("cache_creation_input_tokens") or 0
    prompt = (usage.get("input_tokens") or 0) + cache_read + cache_write
    result = openai.usage(prompt, usage.get("output_tokens") or 0, cached=cache_read)
    if cache_write:
        result["cache_creation_input_tokens"] = cache_write
    return result


def openai_completion(response: dict[str, Any], json_mode: bool) -> dict[str, Any]:
    texts: list[str] = []
    reasoning: list[str] = []
    thinking_blocks: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    for block in response.get("content") or ():
        kind = block.get("type")
        if kind == "text":
            texts.append(block.get("text", ""))
        elif kind in ("thinking", "redacted_thinking"):
            reasoning.append(block.get("thinking", ""))
            thinking_blocks.append(block)
        elif kind == "tool_use" and json_mode and block.get("name") == JSON_TOOL:
            texts.append(orjson.dumps(block.get("input") or {}).decode())
        elif kind == "tool_use":
            calls.append(openai.tool_call(block["id"], block["name"], orjson.dumps(block.get("input") or {}).decode()))
    message = openai.message("".join(texts), calls, "".join(reasoning))
    if thinking_blocks:
        message["thinking_blocks"] = thinking_blocks
    finish = _finish(response.get("stop_reason"), json_mode)
    return openai.completion(response.get("id", ""), response.get("model", ""),
                             [{"index": 0, "message": message, "finish_reason": finish}],
                             openai_usage(response.get("usage") or {}))


def _finish(stop_reason: str | None, json_mode: bool) -> str:
    finish = FINISH_REASONS.get(stop_reason or "", "stop")
    return "stop" if json_mode and finish == "tool_calls" else finish


class StreamTranslator:
    """Anthropic stream events in, OpenAI chunks out; `done` once `message_stop` arrived."""

    def __init__(self, model: str, json_mode: bool) -> None:
        self.chunks = openai.ChunkMaker("", model)
        self.json_mode = json_mode
        self.usage: dict[str, Any] = {}
        self.stop_reason: str | None = None
        self.done = False
        self._blocks: dict[int, tuple[str, int]] = {}  # Anthropic block index -> (kind, tool call index)

    def on_event(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        handler = getattr(self, "_" + str(event.get("type")), None)
        return handler(event) if handler else []

    def _message_start(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        message = event.get("message") or {}
        self.chunks.response_id = message.get("id", "")
        self.chunks.model = message.get("model") or self.chunks.model
        self.usage.update(message.get("usage") or {})
        return [self.chunks.delta({"role": "assistant", "content": ""})]

    def _content_block_start(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        block = event.get("content_block") or {}
        kind = block.get("type", "")
        if kind != "tool_use":
            self._blocks[event["index"]] = (kind, -1)
            text = block.get("text") if kind == "text" else None
            return [self.chunks.delta({"content": text})] if text else []
        if self.json_mode and block.get("name") == JSON_TOOL:
            self._blocks[event["index"]] = ("json", -1)
            return []
        call_index = sum(1 for k, _ in self._blocks.values() if k == "tool_use")
        self._blocks[event["index"]] = ("tool_use", call_index)
        call = openai.tool_call(block["id"], block["name"], "", index=call_index)
        return [self.chunks.delta({"tool_calls": [call]})]

    def _content_block_delta(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        delta = event.get("delta") or {}
        kind = delta.get("type")
        if kind == "text_delta":
            return [self.chunks.delta({"content": delta.get("text", "")})]
        if kind == "thinking_delta":
            return [self.chunks.delta({"reasoning_content": delta.get("thinking", "")})]
        if kind == "signature_delta":
            block = {"type": "thinking", "thinking": "", "signature": delta.get("signature", "")}
            return [self.chunks.delta({"thinking_blocks": [block]})]
        if kind == "input_json_delta":
            block_kind, call_index = self._blocks.get(event["index"], ("", -1))
            partial = delta.get("partial_json", "")
            if block_kind == "json":
                return [self.chunks.delta({"content": partial})]
            return [self.chunks.delta({"tool_calls": [{"index": call_index, "function": {"arguments": partial}}]})]
        return []

    def _message_delta(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        self.usage.update({k: v for k, v in (event.get("usage") or {}).items() if v is not None})
        self.stop_reason = (event.get("delta") or {}).get("stop_reason") or self.stop_reason
        return [self.chunks.delta({}, _finish(self.stop_reason, self.json_mode))]

    def _message_stop(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        self.done = True
        return [self.chunks.usage(openai_usage(self.usage))]
