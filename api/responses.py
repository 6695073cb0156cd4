"""JSON responses serialised with orjson (fast, and no pydantic on the hot path)."""
from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Mapping

import orjson
from fastapi import Response


def json_response(payload: Any, status_code: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(orjson.dumps(payload), status_code=status_code, media_type="application/json",
                    headers=dict(headers) if headers else None)


def jsonable(value: Any) -> Any:
    """Money as a JSON number, as LiteLLM's clients expect, and also as exact decimal text under
    the same name with `_exact` appended (`spend` and `spend_exact`); times as ISO 8601."""
    if isinstance(value, list):
        return [jsonable(item) for item in value]
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out[key] = jsonable(item)
            if isinstance(item, Decimal):
                out[f"{key}_exact"] = str(item)
        return out
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value
