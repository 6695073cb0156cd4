"""Gemini `GenerateContentResponse` (whole or streamed) -> OpenAI chat completions and chunks."""
from __future__ import annotations

from typing import Any

import orjson

from moneta.infrastructure.providers.translation import openai_response as openai

FINISH_REASONS = {"STOP": "stop", "MAX_TOKENS": "length", "SAFETY": "content_filter",
                  "RECITATION": "content_filter", "BLOCKLIST": "content_filter",
                  "PROHIBITED_CONTENT": "content_filter", "SPII": "content_filter",
                  "IMAGE_SAFETY": "content_filter", "MALFORMED_FUNCTION_CALL": "stop"}


def openai_usage(metadata: dict[str, Any]) -> dict[str, Any]:
    """Gemini bills thinking as output: it counts in completion_tokens, and as reasoning_tokens."""
    thoughts = metadata.get("thoughtsTokenCount") or 0
    return openai.usage(metadata.get("promptTokenCount") or 0, (metadata.get("candidatesTokenCount") or 0) + thoughts,
                        cached=metadata.get("cachedContentTokenCount") or 0, reasoning=thoughts)


def finish_reason(reason: str | None, has_tool_calls: bool) -> str:
    finish = FINISH_REASONS.get(reason or "STOP", "stop")
    return "tool_calls" if finish == "stop" and has_tool_calls else finish


def split_parts(parts: list[dict[str, Any]]) -> tuple[str, str, list[tuple[str, str]]]:
    """(text, thought text, [(function name, JSON arguments)]) of a candidate's parts."""
    text, thoughts, calls = [], [], []
    for part in parts:
        if "functionCall" in part:
            call = part["functionCall"]
            calls.append((call["name"], orjson.dumps(call.get("args") or {}).decode()))
        elif part.get("thought"):
            thoughts.append(part.get("text", ""))
        elif "text" in part:
            text.append(part["text"])
    return "".join(text), "".join(thoughts), calls


def openai_completion(response: dict[str, Any], model: str) -> dict[str, Any]:
    choices = [_choice(c, i) for i, c in enumerate(response.get("candidates") or ())]
    if not choices and (response.get("promptFeedback") or {}).get("blockReason"):
        choices = [{"index": 0, "message": openai.message(None, []), "finish_reason": "content_filter"}]
    return openai.completion(response.get("responseId", ""), response.get("modelVersion") or model, choices,
                             openai_usage(response.get("usageMetadata") or {}))


def _choice(candidate: dict[str, Any], position: int) -> dict[str, Any]:
    text, thoughts, calls = split_parts((candidate.get("content") or {}).get("parts") or [])
    tool_calls = [openai.tool_call(openai.new_tool_call_id(), name, args) for name, args in calls]
    return {"index": candidate.get("index", position), "message": openai.message(text, tool_calls, thoughts),
            "finish_reason": finish_reason(candidate.get("finishReason"), bool(tool_calls))}


class StreamTranslator:
    """Each streamed `GenerateContentResponse` in, OpenAI chunks out; the usage chunk at the end."""

    def __init__(self, model: str) -> None:
        self.chunks = openai.ChunkMaker("", model)
        self.usage_metadata: dict[str, Any] = {}
        self._calls_seen: dict[int, int] = {}  # candidate index -> tool calls sent so far
        self._started: set[int] = set()

    def on_response(self, response: dict[str, Any]) -> list[dict[str, Any]]:
        self.chunks.response_id = response.get("responseId") or self.chunks.response_id
        self.usage_metadata = response.get("usageMetadata") or self.usage_metadata
        out: list[dict[str, Any]] = []
        for position, candidate in enumerate(response.get("candidates") or ()):
            out.extend(self._candidate(candidate.get("index", position), candidate))
        return out

    def final(self) -> dict[str, Any]:
        return self.chunks.usage(openai_usage(self.usage_metadata))

    def _candidate(self, index: int, candidate: dict[str, Any]) -> list[dict[str, Any]]:
        text, thoughts, calls = split_parts((candidate.get("content") or {}).get("parts") or [])
        delta: dict[str, Any] = {}
        if index not in self._started:
            self._started.add(index)
            delta["role"] = "assistant"
        if text:
            delta["content"] = text
        if thoughts:
            delta["reasoning_content"] = thoughts
        if calls:
            first = self._calls_seen.get(index, 0)
            delta["tool_calls"] = [openai.tool_call(openai.new_tool_call_id(), name, args, index=first + i)
                                   for i, (name, args) in enumerate(calls)]
            self._calls_seen[index] = first + len(calls)
        reason = candidate.get("finishReason")
        finish = finish_reason(reason, index in self._calls_seen) if reason else None
        return [self.chunks.delta(delta, finish, index=index)] if delta or finish else []
