"""OpenAI chat <-> Ollama's native `/api/chat` (NDJSON when streaming)."""
from __future__ import annotations

from typing import Any

import orjson

from moneta.domain.errors import BadRequestError
from moneta.infrastructure.providers.translation import openai_response as openai
from moneta.infrastructure.providers.translation.openai_request import (
    image_url_of,
    json_schema_of,
    max_output_tokens,
    parse_data_url,
    parts_of,
    stop_sequences,
    text_of,
    tool_arguments,
)

_OPTIONS = {"temperature": "temperature", "top_p": "top_p", "seed": "seed",
            "frequency_penalty": "frequency_penalty", "presence_penalty": "presence_penalty"}


def ollama_request(body: dict[str, Any], stream: bool) -> dict[str, Any]:
    messages = body.get("messages") or []
    tool_names = {c.get("id"): c["function"]["name"]
                  for m in messages if m.get("role") == "assistant" for c in m.get("tool_calls") or ()}
    payload: dict[str, Any] = {"model": body["model"], "messages": [_message(m, tool_names) for m in messages],
                               "stream": stream}
    options = {ollama: body[openai_name] for openai_name, ollama in _OPTIONS.items() if body.get(openai_name) is not None}
    if max_output_tokens(body):
        options["num_predict"] = max_output_tokens(body)
    if stop_sequences(body):
        options["stop"] = stop_sequences(body)
    if options:
        payload["options"] = options
    if body.get("tools"):
        payload["tools"] = body["tools"]
    answer_format = json_schema_of(body.get("response_format"))
    if answer_format:
        payload["format"] = "json" if answer_format[1] == {"type": "object"} else answer_format[1]
    if body.get("reasoning_effort") is not None:
        payload["think"] = body["reasoning_effort"] != "none"
    return payload


def _message(message: dict[str, Any], tool_names: dict[Any, str]) -> dict[str, Any]:
    role = message.get("role")
    result: dict[str, Any] = {"role": "system" if role == "developer" else role,
                              "content": text_of(message.get("content"))}
    images = [_image(p) for p in parts_of(message.get("content")) if p.get("type") == "image_url"]
    if images:
        result["images"] = images
    if message.get("tool_calls"):
        result["tool_calls"] = [{"function": {"name": c["function"]["name"], "arguments": tool_arguments(c)}}
                                for c in message["tool_calls"]]
    if role == "tool" and message.get("tool_call_id") in tool_names:
        result["tool_name"] = tool_names[message["tool_call_id"]]
    return result


def _image(part: dict[str, Any]) -> str:
    inline = parse_data_url(image_url_of(part))
    if inline is None:
        raise BadRequestError("ollama takes images as base64 data URLs only, not links", param="messages")
    return inline[1]


def _usage(response: dict[str, Any]) -> dict[str, Any]:
    return openai.usage(response.get("prompt_eval_count") or 0, response.get("eval_count") or 0)


def _tool_calls(message: dict[str, Any], first_index: int | None = None) -> list[dict[str, Any]]:
    return [openai.tool_call(openai.new_tool_call_id(), c["function"]["name"],
                             orjson.dumps(c["function"].get("arguments") or {}).decode(),
                             index=None if first_index is None else first_index + i)
            for i, c in enumerate(message.get("tool_calls") or ())]


def _finish(response: dict[str, Any], has_tool_calls: bool) -> str:
    if response.get("done_reason") == "length":
        return "length"
    return "tool_calls" if has_tool_calls else "stop"


def openai_completion(response: dict[str, Any], response_id: str) -> dict[str, Any]:
    message = response.get("message") or {}
    calls = _tool_calls(message)
    choice = {"index": 0, "message": openai.message(message.get("content", ""), calls, message.get("thinking")),
              "finish_reason": _finish(response, bool(calls))}
    return openai.completion(response_id, response.get("model", ""), [choice], _usage(response))


class StreamTranslator:
    """Each NDJSON line of `/api/chat` in, OpenAI chunks out; the last line carries the counts."""

    def __init__(self, response_id: str, model: str) -> None:
        self.chunks = openai.ChunkMaker(response_id, model)
        self.done = False
        self._calls = 0
        self._started = False

    def on_line(self, line: dict[str, Any]) -> list[dict[str, Any]]:
        message = line.get("message") or {}
        delta: dict[str, Any] = {} if self._started else {"role": "assistant"}
        self._started = True
        if message.get("content"):
            delta["content"] = message["content"]
        if message.get("thinking"):
            delta["reasoning_content"] = message["thinking"]
        calls = _tool_calls(message, self._calls)
        if calls:
            delta["tool_calls"] = calls
            self._calls += len(calls)
        if not line.get("done"):
            return [self.chunks.delta(delta)] if delta else []
        self.done = True
        return [self.chunks.delta(delta, _finish(line, self._calls > 0)), self.chunks.usage(_usage(line))]
