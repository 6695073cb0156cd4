"""JSON responses serialised with orjson (fast, and no pydantic on the hot path)."""
from __future__ import annotations

from typing import Any, Mapping

import orjson
from fastapi import Response


def json_response(payload: Any, status_code: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(orjson.dumps(payload), status_code=status_code, media_type="application/json",
                    headers=dict(headers) if headers else None)
