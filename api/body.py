"""Reading request bodies: size limit first, then JSON with orjson, refusing text the ledger
cannot store."""
from __future__ import annotations

from typing import Any

import orjson
from fastapi import Request

from moneta.application.json_limits import check_carriable
from moneta.domain.errors import BadRequestError, RequestTooLargeError


def _limit(request: Request) -> int:
    return request.app.state.container.config.max_request_body_bytes


def check_declared_size(request: Request) -> None:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > _limit(request):
        raise RequestTooLargeError(f"Request body is {declared} bytes; the limit is {_limit(request)} bytes.")


async def read_body(request: Request) -> bytes:
    check_declared_size(request)
    limit = _limit(request)
    received = bytearray()
    async for part in request.stream():
        received += part
        if len(received) > limit:
            raise RequestTooLargeError(f"Request body exceeds the limit of {limit} bytes.")
    return bytes(received)


def parse_json(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequestError(f"The request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise BadRequestError("The request body must be a JSON object.", code="invalid_json")
    check_carriable(body, raw)
    return body
