"""What every request must respect, whatever its route:
- no NUL character in any text (a value or a key): PostgreSQL's text and jsonb refuse it, and
  a projection that meets one in the ledger stops there;
- JSON nested at most MAX_DEPTH deep: orjson writes 254 levels at most, and a provider's
  request wraps the body in a few more levels of its own.
"""
from __future__ import annotations

from typing import Any

import orjson

from moneta.application.schema import param_name
from moneta.domain.errors import BadRequestError

WRITER_DEPTH = 254  # orjson's
MAX_DEPTH = 240


def check_carriable(body: Any, raw: bytes | None = None) -> None:
    """Both checks; `raw`, the JSON text the body was read from, speeds them up."""
    refuse_nul(body, raw)
    refuse_too_deep(body, raw)


def refuse_nul(value: Any, raw: bytes | None = None) -> None:
    """BadRequestError naming a string (a value or a key) holding a NUL, if any. Given the JSON
    text the value was read from, one scan of it first: in JSON a NUL can only be `\\u0000`."""
    if raw is not None and b"\\u0000" not in raw:
        return
    path = _nul_path(value)
    if path is not None:
        param = param_name(path)
        raise BadRequestError(f"Invalid value for '{param}': text cannot contain a NUL character (\\u0000).",
                              param=param, code="invalid_value")


def refuse_too_deep(value: Any, raw: bytes | None = None) -> None:
    """BadRequestError unless orjson can write the value with room for the providers' levels.
    (JSON text shorter than twice MAX_DEPTH cannot be nested that deep.)"""
    if raw is not None and len(raw) < 2 * MAX_DEPTH:
        return
    wrapped = value
    for _ in range(WRITER_DEPTH - MAX_DEPTH):
        wrapped = [wrapped]
    try:
        orjson.dumps(wrapped)
    except orjson.JSONEncodeError as exc:
        raise BadRequestError(f"The request cannot be written as JSON of at most {MAX_DEPTH} levels: {exc}.",
                              code="invalid_value") from None


def _nul_path(value: Any) -> tuple[str | int, ...] | None:
    stack: list[tuple[tuple[str | int, ...], Any]] = [((), value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return path
        elif isinstance(item, dict):
            for key, child in item.items():
                if isinstance(key, str) and "\x00" in key:
                    return (*path, key)
                stack.append(((*path, key), child))
        elif isinstance(item, (list, tuple)):
            stack.extend(((*path, index), child) for index, child in enumerate(item))
    return None
