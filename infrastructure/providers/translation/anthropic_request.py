"""OpenAI chat request -> Anthropic Messages request.

`response_format` (json_schema / json_object) is served by a forced tool, `json_tool_call`,
whose input is the answer: it works on every Claude model, where Anthropic's own structured
output format is a beta limited to some. The response side turns that tool call back into text.
"""
from __future__ import annotations

from typing import Any

from moneta.domain.errors import BadRequestError
from moneta.infrastructure.providers.translation.openai_request import (
    REASONING_BUDGETS,
    function_tools,
    image_url_of,
    json_schema_of,
    max_output_tokens,
    parse_data_url,
    parts_of,
    stop_sequences,
    text_of,
    tool_arguments,
)

JSON_TOOL = "json_tool_call"
DEFAULT_MAX_TOKENS = 4096
_SYSTEM_ROLES = {"system", "developer"}


def anthropic_request(body: dict[str, Any]) -> dict[str, Any]:
    messages = body.get("messages") or []
    payload: dict[str, Any] = {"model": body["model"], "messages": _turns(messages)}
    system = [_text_block(p) for m in messages if m.get("role") in _SYSTEM_ROLES for p in parts_of(m.get("content"))]
    if system:
        payload["system"] = system
    thinking = _thinking(body)
    if thinking:
        payload["thinking"] = thinking
    budget = thinking.get("budget_tokens", 0) if thinking else 0
    payload["max_tokens"] = max_output_tokens(body) or DEFAULT_MAX_TOKENS + budget
    for name in ("temperature", "top_p"):
        if body.get(name) is not None:
            payload[name] = body[name]
    if stop_sequences(body):
        payload["stop_sequences"] = stop_sequences(body)
    if body.get("user"):
        payload["metadata"] = {"user_id": body["user"]}
    payload.update(_tools(body))
    return payload


def wants_json_tool(payload: dict[str, Any]) -> bool:
    return (payload.get("tool_choice") or {}).get("name") == JSON_TOOL


def _turns(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Anthropic alternates user and assistant turns: tool results ride in a user turn, and
    consecutive turns of one role merge."""
    turns: list[dict[str, Any]] = []
    for message in messages:
        role = message.get("role")
        if role in _SYSTEM_ROLES:
            continue
        blocks = _blocks(message)
        if not blocks:
            continue
        turn_role = "assistant" if role == "assistant" else "user"
        if turns and turns[-1]["role"] == turn_role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": turn_role, "content": blocks})
    return turns


def _blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    role = message.get("role")
    if role == "tool":
        return [{"type": "tool_result", "tool_use_id": message.get("tool_call_id"),
                 "content": text_of(message.get("content"))}]
    if role == "assistant":
        blocks = list(message.get("thinking_blocks") or ())
        blocks += [_text_block(p) for p in parts_of(message.get("content")) if p.get("type") == "text" and p["text"]]
        blocks += [{"type": "tool_use", "id": call.get("id"), "name": call["function"]["name"],
                    "input": tool_arguments(call)} for call in message.get("tool_calls") or ()]
        return blocks
    if role == "user":
        return [_user_block(p) for p in parts_of(message.get("content"))]
    raise BadRequestError(f"anthropic does not accept messages with role {role!r}", param="messages")


def _text_block(part: dict[str, Any]) -> dict[str, Any]:
    block = {"type": "text", "text": part.get("text", "")}
    if part.get("cache_control"):
        block["cache_control"] = part["cache_control"]
    return block


def _user_block(part: dict[str, Any]) -> dict[str, Any]:
    kind = part.get("type")
    if kind == "text":
        return _text_block(part)
    if kind == "image_url":
        url = image_url_of(part)
        inline = parse_data_url(url)
        source = ({"type": "base64", "media_type": inline[0], "data": inline[1]} if inline
                  else {"type": "url", "url": url})
        return {"type": "image", "source": source}
    raise BadRequestError(f"anthropic does not accept content parts of type {kind!r}", param="messages")


def _thinking(body: dict[str, Any]) -> dict[str, Any] | None:
    if isinstance(body.get("thinking"), dict):
        return body["thinking"]
    effort = body.get("reasoning_effort")
    if effort is None or effort == "none":
        return None
    if effort not in REASONING_BUDGETS:
        raise BadRequestError(f"reasoning_effort must be one of {', '.join(REASONING_BUDGETS)}",
                              param="reasoning_effort")
    return {"type": "enabled", "budget_tokens": REASONING_BUDGETS[effort]}


def _tools(body: dict[str, Any]) -> dict[str, Any]:
    tools = [{"name": f["name"], "description": f.get("description", ""),
              "input_schema": f.get("parameters") or {"type": "object", "properties": {}}}
             for f in function_tools(body)]
    choice = _tool_choice(body.get("tool_choice"))
    answer_format = json_schema_of(body.get("response_format"))
    if answer_format:
        tools.append({"name": JSON_TOOL, "description": f"Respond with the {answer_format[0]} object.",
                      "input_schema": answer_format[1]})
        choice = {"type": "tool", "name": JSON_TOOL}
    if body.get("parallel_tool_calls") is False and tools and (choice or {}).get("type") != "none":
        choice = {**(choice or {"type": "auto"}), "disable_parallel_tool_use": True}
    result: dict[str, Any] = {}
    if tools:
        result["tools"] = tools
    if choice:
        result["tool_choice"] = choice
    return result


def _tool_choice(choice: Any) -> dict[str, Any] | None:
    if choice is None:
        return None
    if isinstance(choice, dict):
        return {"type": "tool", "name": (choice.get("function") or {}).get("name")}
    mapped = {"auto": "auto", "none": "none", "required": "any"}.get(choice)
    if mapped is None:
        raise BadRequestError(f"tool_choice {choice!r} is not one of auto, none, required", param="tool_choice")
    return {"type": mapped}
