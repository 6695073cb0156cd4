"""Fast checks of OpenAI-shaped request bodies: a clear 400 naming the parameter."""
from __future__ import annotations

from typing import Any

from moneta.domain.errors import BadRequestError

_NUMBER = (int, float)
_CHAT_ROLES = {"system", "user", "assistant", "tool", "function", "developer"}

# parameter -> (accepted types, description for the message)
_COMMON_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "stream": ((bool,), "a boolean"),
    "temperature": (_NUMBER, "a number"),
    "top_p": (_NUMBER, "a number"),
    "n": ((int,), "an integer"),
    "max_tokens": ((int,), "an integer"),
    "max_completion_tokens": ((int,), "an integer"),
    "presence_penalty": (_NUMBER, "a number"),
    "frequency_penalty": (_NUMBER, "a number"),
    "seed": ((int,), "an integer"),
    "user": ((str,), "a string"),
    "stop": ((str, list), "a string or a list of strings"),
    "stream_options": ((dict,), "an object"),
    "tools": ((list,), "an array"),
    "response_format": ((dict,), "an object"),
    "logit_bias": ((dict,), "an object"),
    "metadata": ((dict,), "an object"),
}


def _fail(message: str, param: str | None) -> BadRequestError:
    return BadRequestError(message, param=param, code="invalid_value" if param else None)


def require_model(body: Any) -> str:
    if not isinstance(body, dict):
        raise _fail("The request body must be a JSON object.", None)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _fail("'model' is required and must be a non-empty string.", "model")
    return model


def _check_types(body: dict) -> None:
    for name, (types, description) in _COMMON_TYPES.items():
        value = body.get(name)
        if value is None:
            continue
        # bool is an int in Python; OpenAI rejects true for an integer parameter.
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise _fail(f"'{name}' must be {description}, got {type(value).__name__}.", name)
    for name in ("max_tokens", "max_completion_tokens", "n"):
        value = body.get(name)
        if value is not None and value < 1:
            raise _fail(f"'{name}' must be at least 1, got {value}.", name)
    temperature = body.get("temperature")
    if temperature is not None and not 0 <= temperature <= 2:
        raise _fail(f"'temperature' must be between 0 and 2, got {temperature}.", "temperature")


def validate_chat(body: Any) -> str:
    model = require_model(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _fail("'messages' must be a non-empty array.", "messages")
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise _fail(f"messages[{index}] must be an object.", f"messages[{index}]")
        role = message.get("role")
        if role not in _CHAT_ROLES:
            raise _fail(
                f"messages[{index}].role must be one of {sorted(_CHAT_ROLES)}, got {role!r}.",
                f"messages[{index}].role",
            )
    _check_types(body)
    return model


def validate_text_completion(body: Any) -> str:
    model = require_model(body)
    prompt = body.get("prompt")
    if not isinstance(prompt, (str, list)) or not prompt:
        raise _fail("'prompt' must be a non-empty string or array.", "prompt")
    _check_types(body)
    return model


def validate_embedding(body: Any) -> str:
    model = require_model(body)
    data = body.get("input")
    if not isinstance(data, (str, list)) or not data:
        raise _fail("'input' must be a non-empty string or array.", "input")
    encoding = body.get("encoding_format")
    if encoding is not None and encoding not in ("float", "base64"):
        raise _fail("'encoding_format' must be 'float' or 'base64'.", "encoding_format")
    return model
