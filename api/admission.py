"""The front of every call route: authenticate, read, validate; a refusal of an authenticated
caller is recorded in the ledger before it is answered."""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Callable

from fastapi import Request

from moneta.api.auth import authenticate
from moneta.api.body import parse_json, read_body
from moneta.application.gateway import Caller, Gateway
from moneta.domain.errors import GatewayError


@dataclass(frozen=True)
class Admitted:
    caller: Caller
    body: dict[str, Any]  # as the client sent it
    call: dict[str, Any]  # what the gateway is asked: the body, or its translation to OpenAI's chat
    request_id: uuid.UUID


def gateway(request: Request) -> Gateway:
    return request.app.state.container.gateway


def new_request_id(request: Request) -> uuid.UUID:
    """The id of the request's ledger stream, also answered in `x-request-id`."""
    request_id = uuid.uuid4()
    request.state.request_id = str(request_id)
    return request_id


async def admit(request: Request, call_type: str, check: Callable[[Any], dict[str, Any]]) -> Admitted:
    """`check` validates the parsed body and returns the call to make (raising a GatewayError)."""
    caller = authenticate(request)
    request_id = new_request_id(request)
    body: Any = {}
    try:
        body = parse_json(await read_body(request))
        call = check(body)
    except GatewayError as error:
        model = body.get("model") if isinstance(body, dict) and isinstance(body.get("model"), str) else ""
        await gateway(request).deny(caller, call_type, model, error, request_id)
        raise
    if call.get("user") and not caller.end_user:
        caller = Caller(key_hash=caller.key_hash, end_user=str(call["user"]))
    return Admitted(caller, body, call, request_id)
