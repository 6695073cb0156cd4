"""OpenAI chat request -> Gemini `generateContent` request (the Gemini API and Vertex AI share it)."""
from __future__ import annotations

import mimetypes
from typing import Any

import orjson

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

_SYSTEM_ROLES = {"system", "developer"}
# JSON Schema keywords outside the OpenAPI subset Gemini accepts in schemas.
_UNSUPPORTED_SCHEMA_KEYS = {"$schema", "additionalProperties", "strict"}
_GENERATION = {"temperature": "temperature", "top_p": "topP", "seed": "seed", "n": "candidateCount",
               "presence_penalty": "presencePenalty", "frequency_penalty": "frequencyPenalty"}
_MODES = {"auto": "AUTO", "none": "NONE", "required": "ANY"}


def gemini_request(body: dict[str, Any]) -> dict[str, Any]:
    messages = body.get("messages") or []
    payload: dict[str, Any] = {"contents": _contents(messages)}
    system = "\n".join(text_of(m.get("content")) for m in messages if m.get("role") in _SYSTEM_ROLES)
    if system:
        payload["systemInstruction"] = {"parts": [{"text": system}]}
    declarations = [_declaration(f) for f in function_tools(body)]
    if declarations:
        payload["tools"] = [{"functionDeclarations": declarations}]
    if body.get("tool_choice") is not None:
        payload["toolConfig"] = {"functionCallingConfig": _calling_config(body["tool_choice"])}
    generation = _generation_config(body)
    if generation:
        payload["generationConfig"] = generation
    return payload


def clean_schema(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {k: clean_schema(v) for k, v in schema.items() if k not in _UNSUPPORTED_SCHEMA_KEYS}
    if isinstance(schema, list):
        return [clean_schema(v) for v in schema]
    return schema


def _contents(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    tool_names = {call.get("id"): call["function"]["name"]
                  for m in messages if m.get("role") == "assistant" for call in m.get("tool_calls") or ()}
    contents: list[dict[str, Any]] = []
    for message in messages:
        if message.get("role") in _SYSTEM_ROLES:
            continue
        role = "model" if message.get("role") == "assistant" else "user"
        parts = _parts(message, tool_names)
        if not parts:
            continue
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})
    return contents


def _parts(message: dict[str, Any], tool_names: dict[Any, str]) -> list[dict[str, Any]]:
    role = message.get("role")
    if role == "tool":
        name = tool_names.get(message.get("tool_call_id")) or message.get("name")
        if not name:
            raise BadRequestError("a tool message answers no earlier tool call", param="messages")
        return [{"functionResponse": {"name": name, "response": _tool_response(message.get("content"))}}]
    if role == "assistant":
        parts: list[dict[str, Any]] = [{"text": text_of(message.get("content"))}] if text_of(
            message.get("content")) else []
        parts += [{"functionCall": {"name": c["function"]["name"], "args": tool_arguments(c)}}
                  for c in message.get("tool_calls") or ()]
        return parts
    if role == "user":
        return [_user_part(p) for p in parts_of(message.get("content"))]
    raise BadRequestError(f"gemini does not accept messages with role {role!r}", param="messages")


def _tool_response(content: Any) -> dict[str, Any]:
    """Gemini wants an object: a JSON object result passes as it is, anything else is wrapped."""
    text = text_of(content)
    try:
        parsed = orjson.loads(text)
    except orjson.JSONDecodeError:
        parsed = None
    return parsed if isinstance(parsed, dict) else {"content": text}


def _user_part(part: dict[str, Any]) -> dict[str, Any]:
    kind = part.get("type")
    if kind == "text":
        return {"text": part.get("text", "")}
    if kind == "image_url":
        url = image_url_of(part)
        inline = parse_data_url(url)
        if inline:
            return {"inlineData": {"mimeType": inline[0], "data": inline[1]}}
        mime = (part.get("image_url") or {}).get("format") or mimetypes.guess_type(url)[0] or "image/jpeg"
        return {"fileData": {"mimeType": mime, "fileUri": url}}
    raise BadRequestError(f"gemini does not accept content parts of type {kind!r}", param="messages")


def _declaration(function: dict[str, Any]) -> dict[str, Any]:
    declaration = {"name": function["name"], "description": function.get("description", "")}
    parameters = function.get("parameters") or {}
    if parameters.get("properties"):  # Gemini refuses an OBJECT schema with no properties
        declaration["parameters"] = clean_schema(parameters)
    return declaration


def _calling_config(choice: Any) -> dict[str, Any]:
    if isinstance(choice, dict):
        return {"mode": "ANY", "allowedFunctionNames": [(choice.get("function") or {}).get("name")]}
    if choice not in _MODES:
        raise BadRequestError(f"tool_choice {choice!r} is not one of auto, none, required", param="tool_choice")
    return {"mode": _MODES[choice]}


def _generation_config(body: dict[str, Any]) -> dict[str, Any]:
    config = {gemini: body[openai] for openai, gemini in _GENERATION.items() if body.get(openai) is not None}
    if max_output_tokens(body):
        config["maxOutputTokens"] = max_output_tokens(body)
    if stop_sequences(body):
        config["stopSequences"] = stop_sequences(body)
    answer_format = json_schema_of(body.get("response_format"))
    if answer_format:
        config["responseMimeType"] = "application/json"
        if answer_format[1] != {"type": "object"}:
            config["responseSchema"] = clean_schema(answer_format[1])
    effort = body.get("reasoning_effort")
    if effort == "none":
        config["thinkingConfig"] = {"thinkingBudget": 0}
    elif effort is not None:
        if effort not in REASONING_BUDGETS:
            raise BadRequestError(f"reasoning_effort must be one of none, {', '.join(REASONING_BUDGETS)}",
                                  param="reasoning_effort")
        config["thinkingConfig"] = {"thinkingBudget": REASONING_BUDGETS[effort], "includeThoughts": True}
    return config
