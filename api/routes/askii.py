"""The askii rate: `POST /moneta/askii/rate` (the proxy admin) records a change, `GET` shows the rates.

POST body: `{"askii_per_usd": "1200", "effective_from": "2026-12-01T00:00:00Z"}` (a number or its
text; `effective_from` is optional, now by default, and may not lie in the past). The answer comes
once the change is durable in the ledger; this worker settles with it at once, the others within
about a second.
"""
from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from moneta.api.auth import manager, request_principal
from moneta.api.body import parse_json, read_body
from moneta.api.responses import json_response
from moneta.application.askii import AskiiExchange
from moneta.domain.askii import InvalidAskiiValue, RateBook, RateChange, parse_time
from moneta.domain.errors import BadRequestError, PermissionDeniedError

router = APIRouter(tags=["askii"])
_FIELDS = ("askii_per_usd", "effective_from")


@router.post("/moneta/askii/rate")
async def set_rate(request: Request) -> Response:
    principal = await manager(request)
    if not principal.writes_everything:
        raise PermissionDeniedError("Only the proxy admin may change the askii rate.", code="not_allowed")
    body = _exact(await read_body(request))
    unknown = [name for name in body if name not in _FIELDS]
    if unknown:
        raise BadRequestError(f"Unknown field(s): {', '.join(sorted(unknown))}.", param=sorted(unknown)[0],
                              code="invalid_field")
    if body.get("askii_per_usd") is None:
        raise BadRequestError("'askii_per_usd' is required.", param="askii_per_usd", code="missing_field")
    exchange: AskiiExchange = request.app.state.container.askii
    try:
        start = _start(body.get("effective_from"))
        change = await run_in_threadpool(exchange.set_rate, body["askii_per_usd"], start, principal.actor)
    except InvalidAskiiValue as error:
        raise BadRequestError(str(error), param=error.param, code="invalid_value") from None
    return json_response(_change(change))


@router.get("/moneta/askii/rate")
async def rates(request: Request) -> Response:
    await request_principal(request)  # any caller the gateway knows (401 for a bad key)
    exchange: AskiiExchange = request.app.state.container.askii
    book: RateBook = await run_in_threadpool(exchange.load)
    return json_response({"askii_per_usd": str(exchange.current_rate()), "default": str(book.default),
                          "history": [_change(change) for change in book.changes]})


def _exact(raw: bytes) -> dict[str, Any]:
    """The JSON body, its numbers read exactly (a float would round `0.1` to 0.1000000000000000055...)."""
    body = parse_json(raw)  # the checks every body passes
    if any(isinstance(value, float) for value in body.values()):
        body = json.loads(raw, parse_float=Decimal)
    return body


def _start(value: Any) -> Any:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidAskiiValue("'effective_from' must be an ISO 8601 time (text)", "effective_from")
    return parse_time(value, "effective_from")


def _change(change: RateChange) -> dict[str, Any]:
    return {"askii_per_usd": str(change.rate), "effective_from": change.effective_from.isoformat(),
            "actor": change.actor,
            "recorded_at": change.recorded_at.isoformat() if change.recorded_at is not None else None}
