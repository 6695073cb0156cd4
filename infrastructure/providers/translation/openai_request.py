"""Reading the parts of an OpenAI chat request that every translating adapter needs."""
from __future__ import annotations

import re
from typing import Any

import orjson

from moneta.domain.errors import BadRequestError

_DATA_URL = re.compile(r"data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?:;[\w=.-]+)*;base64,(?P<data>.*)", re.DOTALL)

# Thinking budgets for `reasoning_effort`, as LiteLLM maps them.
REASONING_BUDGETS = {"minimal": 512, "low": 1024, "medium": 2048, "high": 4096}


def parts_of(content: Any) -> list[dict[str, Any]]:
    """A message's content as a list of OpenAI content parts."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    return [p for p in content if isinstance(p, dict)]


def text_of(content: Any) -> str:
    return "".join(p.get("text", "") for p in parts_of(content) if p.get("type") == "text")


def image_url_of(part: dict[str, Any]) -> str:
    image = part.get("image_url")
    return str(image.get("url", "") if isinstance(image, dict) else image or "")


def parse_data_url(url: str) -> tuple[str, str] | None:
    """(media type, base64 data) of a `data:...;base64,` URL; None for any other URL."""
    match = _DATA_URL.fullmatch(url)
    if not match:
        return None
    return match.group("mime") or "application/octet-stream", match.group("data")


def tool_arguments(call: dict[str, Any]) -> dict[str, Any]:
    """A tool call's arguments (a JSON string in OpenAI's format) as an object."""
    raw = (call.get("function") or {}).get("arguments") or "{}"
    if isinstance(raw, dict):
        return raw
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRequestError(f"tool call {call.get('id')!r} has arguments that are not JSON",
                              param="messages") from None
    return parsed if isinstance(parsed, dict) else {"value": parsed}


def max_output_tokens(body: dict[str, Any]) -> int | None:
    return body.get("max_completion_tokens") or body.get("max_tokens")


def stop_sequences(body: dict[str, Any]) -> list[str] | None:
    stop = body.get("stop")
    if stop is None:
        return None
    return [stop] if isinstance(stop, str) else list(stop)


def function_tools(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The `function` objects of the request's tools (name, description, parameters)."""
    return [t["function"] for t in body.get("tools") or () if t.get("type", "function") == "function"]


def json_schema_of(response_format: dict[str, Any] | None) -> tuple[str, dict[str, Any]] | None:
    """(name, schema) the answer must follow, for `json_schema` and `json_object` formats."""
    if not response_format:
        return None
    kind = response_format.get("type")
    if kind == "json_schema":
        spec = response_format.get("json_schema") or {}
        return spec.get("name") or "response", spec.get("schema") or {"type": "object"}
    if kind == "json_object":
        return "response", {"type": "object"}
    return None
