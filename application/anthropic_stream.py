"""An OpenAI chat chunk stream, re-told as Anthropic's Messages stream events.

Anthropic's stream is a sequence of content blocks, each opened, filled and stopped before
the next one opens (`content_block_start`, `content_block_delta`, `content_block_stop`), with
`index` counting blocks from 0. OpenAI's deltas carry text, reasoning and tool calls side by
side; each change of kind here closes the open block and opens the next. The input token
count is not known when `message_start` goes out (the provider reports usage at the end):
it is 0 there and the real counts come in `message_delta`, where the SDK takes them.
"""
from __future__ import annotations

from typing import Any

from moneta.application.anthropic_messages import anthropic_usage, stop_reason

Event = dict[str, Any]


class AnthropicStream:
    def __init__(self, message_id: str, model: str) -> None:
        self.message_id = message_id
        self.model = model
        self._index = -1
        self._open: str | None = None  # the kind of the open block
        self._tool_blocks: dict[int, int] = {}  # OpenAI tool call index -> block index
        self._stop_reason = "end_turn"
        self._usage: dict[str, Any] = {}

    def start(self) -> list[Event]:
        message = {"id": self.message_id, "type": "message", "role": "assistant", "model": self.model,
                   "content": [], "stop_reason": None, "stop_sequence": None,
                   "usage": {"input_tokens": 0, "output_tokens": 0}}
        return [{"type": "message_start", "message": message}]

    def on_chunk(self, chunk: dict[str, Any]) -> list[Event]:
        if isinstance(chunk.get("usage"), dict):
            self._usage = chunk["usage"]
        events: list[Event] = []
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) == 0:
                events += self._on_delta(choice.get("delta") or {})
                if choice.get("finish_reason"):
                    self._stop_reason = stop_reason(choice["finish_reason"])
        return events

    def finish(self) -> list[Event]:
        events = self._open_block("text", {"type": "text", "text": ""}) if self._index < 0 else []
        if self._open is not None:
            events.append({"type": "content_block_stop", "index": self._index})
            self._open = None
        usage = anthropic_usage(self._usage)
        delta = {"type": "message_delta", "delta": {"stop_reason": self._stop_reason, "stop_sequence": None},
                 "usage": usage}
        return [*events, delta, {"type": "message_stop"}]

    # -- deltas --------------------------------------------------------------------------------

    def _on_delta(self, delta: dict[str, Any]) -> list[Event]:
        events: list[Event] = []
        if delta.get("reasoning_content"):
            events += self._thinking(delta["reasoning_content"])
        for block in delta.get("thinking_blocks") or ():
            events += self._thinking_block(block)
        if delta.get("content"):
            events += self._text(delta["content"])
        for call in delta.get("tool_calls") or ():
            events += self._tool_call(call)
        return events

    def _text(self, text: str) -> list[Event]:
        events = self._open_block("text", {"type": "text", "text": ""}) if self._open != "text" else []
        return [*events, self._delta({"type": "text_delta", "text": text})]

    def _thinking(self, thinking: str) -> list[Event]:
        events = self._open_thinking() if self._open != "thinking" else []
        return [*events, self._delta({"type": "thinking_delta", "thinking": thinking})]

    def _thinking_block(self, block: dict[str, Any]) -> list[Event]:
        """A whole thinking block, or the signature closing the thinking streamed so far."""
        if block.get("type") == "redacted_thinking":
            return self._open_block("redacted_thinking", {"type": "redacted_thinking", "data": block.get("data", "")})
        events = self._open_thinking() if self._open != "thinking" else []
        if block.get("thinking"):
            events.append(self._delta({"type": "thinking_delta", "thinking": block["thinking"]}))
        if block.get("signature"):
            events.append(self._delta({"type": "signature_delta", "signature": block["signature"]}))
        return events

    def _tool_call(self, call: dict[str, Any]) -> list[Event]:
        events: list[Event] = []
        position = int(call.get("index") or 0)
        function = call.get("function") or {}
        if position not in self._tool_blocks:
            block = {"type": "tool_use", "id": call.get("id") or "", "name": function.get("name") or "", "input": {}}
            events += self._open_block("tool_use", block)
            self._tool_blocks[position] = self._index
        if function.get("arguments"):
            events.append({"type": "content_block_delta", "index": self._tool_blocks[position],
                           "delta": {"type": "input_json_delta", "partial_json": function["arguments"]}})
        return events

    # -- blocks --------------------------------------------------------------------------------

    def _open_thinking(self) -> list[Event]:
        return self._open_block("thinking", {"type": "thinking", "thinking": "", "signature": ""})

    def _open_block(self, kind: str, block: dict[str, Any]) -> list[Event]:
        events: list[Event] = []
        if self._open is not None:
            events.append({"type": "content_block_stop", "index": self._index})
        self._index += 1
        self._open = kind
        events.append({"type": "content_block_start", "index": self._index, "content_block": block})
        return events

    def _delta(self, delta: dict[str, Any]) -> Event:
        return {"type": "content_block_delta", "index": self._index, "delta": delta}
