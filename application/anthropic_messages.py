"""Anthropic's Messages API in and out: request -> OpenAI chat body, OpenAI response -> message.

So a client of Anthropic's API (the official `anthropic` SDK, Claude Code) can use any
provider behind the gateway. What has no OpenAI equivalent:
- `top_k` is dropped (OpenAI's API has no such parameter);
- `thinking.budget_tokens` becomes a `reasoning_effort` (low below 2048, medium below 4096,
  else high);
- a thinking block of an earlier turn goes back upstream (as `thinking_blocks`) only with
  its signature: only Anthropic issues one, and only Anthropic accepts one back;
- `cache_control` marks are dropped; server tools and document blocks are refused (400).
"""
from __future__ import annotations

from typing import Any

import orjson

from moneta.application.anthropic_schemas import CountTokensRequest, MessagesRequest
from moneta.application.schema import Shape
from moneta.domain.errors import BadRequestError

STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "function_call": "tool_use",
                "content_filter": "refusal"}
_WORDING = {"max_tokens": "must be an integer of at least 1", "messages": "must be a non-empty array"}
_REQUEST = Shape(MessagesRequest, anthropic=True, wording=_WORDING)
_COUNT_TOKENS = Shape(CountTokensRequest, anthropic=True, wording=_WORDING)
_TOOL_CHOICES = {"auto": "auto", "none": "none", "any": "required"}


# -- request -------------------------------------------------------------------------------

def validate_request(body: Any, *, require_max_tokens: bool = True) -> str:
    """The model, once the body has Anthropic's shape; BadRequestError naming the field."""
    (_REQUEST if require_max_tokens else _COUNT_TOKENS).check(body)
    return body["model"]


def to_openai_chat(body: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI chat body asking for what the (validated) Anthropic request asks for."""
    chat: dict[str, Any] = {"model": body["model"], "messages": _system(body.get("system")) + _messages(body)}
    if body.get("max_tokens") is not None:
        chat["max_tokens"] = body["max_tokens"]
    for name in ("temperature", "top_p"):
        if body.get(name) is not None:
            chat[name] = body[name]
    if body.get("stop_sequences"):
        chat["stop"] = body["stop_sequences"]
    user = (body.get("metadata") or {}).get("user_id")
    if user:
        chat["user"] = str(user)
    effort = _reasoning_effort(body.get("thinking"))
    if effort:
        chat["reasoning_effort"] = effort
    chat.update(_tools(body))
    if body.get("stream"):
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    return chat


def _system(system: Any) -> list[dict[str, Any]]:
    if not system:
        return []
    if isinstance(system, str):
        return [{"role": "system", "content": system}]
    return [{"role": "system", "content": "\n".join(block["text"] for block in system)}]


def _messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = []
    for message in body["messages"]:
        blocks = _blocks(message.get("content"))
        result += _assistant(blocks) if message["role"] == "assistant" else _user(blocks)
    return result


def _blocks(content: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"type": "text", "text": content}] if isinstance(content, str) else content


def _user(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tool results become `tool` messages, which OpenAI wants right after the assistant's
    tool calls; the rest of the turn follows as one user message."""
    tools = [_tool_message(b) for b in blocks if b.get("type") == "tool_result"]
    parts = [_part(b) for b in blocks if b.get("type") != "tool_result"]
    parts += [_part(inner) for b in blocks if b.get("type") == "tool_result"
              for inner in _blocks(b.get("content") or []) if inner.get("type") == "image"]
    if len(parts) == 1 and parts[0]["type"] == "text":
        return [*tools, {"role": "user", "content": parts[0]["text"]}]
    return tools + ([{"role": "user", "content": parts}] if parts else [])


def _tool_message(block: dict[str, Any]) -> dict[str, Any]:
    content = block.get("content")
    text = content if isinstance(content, str) else "\n".join(
        inner["text"] for inner in _blocks(content or []) if inner.get("type") == "text")
    return {"role": "tool", "tool_call_id": block.get("tool_use_id"), "content": text}


def _part(block: dict[str, Any]) -> dict[str, Any]:
    kind = block.get("type")
    if kind == "text":
        return {"type": "text", "text": block["text"]}
    if kind == "image":
        return {"type": "image_url", "image_url": {"url": _image_url(block.get("source") or {})}}
    raise BadRequestError(f"content blocks of type {kind!r} are not supported here", param="messages")


def _image_url(source: dict[str, Any]) -> str:
    if source.get("type") == "base64":
        return f"data:{source.get('media_type')};base64,{source.get('data')}"
    if source.get("type") == "url":
        return str(source.get("url"))
    raise BadRequestError(f"image sources of type {source.get('type')!r} are not supported", param="messages")


def _assistant(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    text = "".join(b["text"] for b in blocks if b.get("type") == "text")
    calls = [{"id": b.get("id"), "type": "function",
              "function": {"name": b.get("name"), "arguments": orjson.dumps(b.get("input") or {}).decode()}}
             for b in blocks if b.get("type") == "tool_use"]
    message: dict[str, Any] = {"role": "assistant", "content": text if text or not calls else None}
    if calls:
        message["tool_calls"] = calls
    signed = [b for b in blocks if (b.get("type") == "thinking" and b.get("signature"))
              or b.get("type") == "redacted_thinking"]
    if signed:
        message["thinking_blocks"] = signed
    return [message]


def _reasoning_effort(thinking: Any) -> str | None:
    if not isinstance(thinking, dict) or thinking.get("type") != "enabled":
        return None
    budget = int(thinking.get("budget_tokens") or 0)
    return "low" if budget < 2048 else "medium" if budget < 4096 else "high"


def _tools(body: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    if body.get("tools"):
        result["tools"] = [_tool(tool) for tool in body["tools"]]
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        result["tool_choice"] = _tool_choice(choice)
        if choice.get("disable_parallel_tool_use"):
            result["parallel_tool_calls"] = False
    return result


def _tool(tool: dict[str, Any]) -> dict[str, Any]:
    if tool.get("type") not in (None, "custom"):
        raise BadRequestError(f"tools: only custom tools are supported here, got type {tool['type']!r}",
                              param="tools")
    function = {"name": tool["name"], "parameters": tool.get("input_schema") or {"type": "object", "properties": {}}}
    if tool.get("description"):
        function["description"] = tool["description"]
    return {"type": "function", "function": function}


def _tool_choice(choice: dict[str, Any]) -> Any:
    if choice["type"] == "tool":
        return {"type": "function", "function": {"name": choice["name"]}}
    return _TOOL_CHOICES[choice["type"]]


# -- response ------------------------------------------------------------------------------

def to_anthropic_message(response: dict[str, Any], message_id: str, model: str) -> dict[str, Any]:
    """An Anthropic `message` from an OpenAI chat completion (its first choice)."""
    choice = (response.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": _content(message),
        "stop_reason": stop_reason(choice.get("finish_reason")),
        "stop_sequence": None,
        "usage": anthropic_usage(response.get("usage") or {}),
    }


def stop_reason(finish_reason: str | None) -> str:
    return STOP_REASONS.get(finish_reason or "stop", "end_turn")


def anthropic_usage(usage: dict[str, Any]) -> dict[str, int]:
    """Anthropic counts cache reads and writes apart from `input_tokens`; OpenAI's
    prompt_tokens include them."""
    cached = int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
    written = int(usage.get("cache_creation_input_tokens") or 0)
    return {
        "input_tokens": max(0, int(usage.get("prompt_tokens") or 0) - cached - written),
        "output_tokens": int(usage.get("completion_tokens") or 0),
        "cache_read_input_tokens": cached,
        "cache_creation_input_tokens": written,
    }


def _content(message: dict[str, Any]) -> list[dict[str, Any]]:
    blocks = list(message.get("thinking_blocks") or ())
    if not blocks and message.get("reasoning_content"):
        blocks.append({"type": "thinking", "thinking": message["reasoning_content"], "signature": ""})
    text = message.get("content")
    if isinstance(text, list):
        text = "".join(part.get("text", "") for part in text if isinstance(part, dict))
    if text:
        blocks.append({"type": "text", "text": text})
    blocks += [_tool_use_block(call) for call in message.get("tool_calls") or ()]
    return blocks or [{"type": "text", "text": ""}]


def _tool_use_block(call: dict[str, Any]) -> dict[str, Any]:
    function = call.get("function") or {}
    return {"type": "tool_use", "id": call.get("id") or "", "name": function.get("name") or "",
            "input": _tool_input(function.get("arguments"))}


def _tool_input(arguments: Any) -> dict[str, Any]:
    if isinstance(arguments, dict):
        return arguments
    try:
        parsed = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        parsed = None
    # The call is made and paid for by now: keep malformed arguments visible rather than fail.
    return parsed if isinstance(parsed, dict) else {"raw_arguments": arguments}
