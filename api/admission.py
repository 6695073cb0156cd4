"""The front of every call route, as a pipeline of checks: authenticate, read and validate,
authorize the model, check the end user, take the rate limits (then the gateway routes). A refusal of an authenticated
caller is recorded in the ledger, with what the checks saw, before it is answered."""
from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from typing import Any, Callable

from fastapi import Request

from moneta.api.auth import END_USER_HEADER, authenticate
from moneta.api.body import parse_json, read_body
from moneta.application.authorization import model_for
from moneta.application.gateway import Caller, Gateway
from moneta.application.rate_limit_check import LimitRefused, RateLimits, headers
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
    caller = await authenticate(request)
    request_id = new_request_id(request)
    body: Any = {}
    try:
        body = parse_json(await read_body(request))
        call = check(body)
        caller = _with_end_user(request, caller, call)
        caller, call = await checked(request, caller, call, request_id)
    except GatewayError as error:
        model = body.get("model") if isinstance(body, dict) and isinstance(body.get("model"), str) else ""
        await gateway(request).deny(with_refusal(caller, error), call_type, model, error, request_id)
        raise
    return Admitted(caller, body, call, request_id)


async def checked(request: Request, caller: Caller, call: dict[str, Any],
                  request_id: uuid.UUID) -> tuple[Caller, dict[str, Any]]:
    """The checks after validation: the model and end user allowed, then the rate limits taken
    (given back when the call ends). Their headers go out with the response, refused or not."""
    call = authorize(request, caller, call)
    rate_limits: RateLimits = request.app.state.container.rate_limits
    limits = rate_limits.limits(getattr(request.state, "principal", None), call["model"], caller.end_user)
    try:
        decision = await rate_limits.take(str(request_id), limits)
    except LimitRefused as refused:
        request.state.response_headers = headers(refused.decision)
        raise
    if decision is None:
        return caller, call
    request.state.response_headers = headers(decision)
    checks = {**caller.checks, "limits": decision.as_event()}
    return Caller(key_hash=caller.key_hash, end_user=caller.end_user, principal=caller.principal, checks=checks,
                  on_end=rate_limits.settler(str(request_id), limits)), call


def with_refusal(caller: Caller, error: GatewayError) -> Caller:
    if isinstance(error, LimitRefused):
        return replace(caller, checks={**caller.checks, "limits": error.decision.as_event()})
    return caller


def _with_end_user(request: Request, caller: Caller, call: dict[str, Any]) -> Caller:
    end_user = request.headers.get(END_USER_HEADER) or (str(call["user"]) if call.get("user") else "")
    return replace(caller, end_user=end_user[:256]) if end_user else caller


def authorize(request: Request, caller: Caller, call: dict[str, Any]) -> dict[str, Any]:
    """The call with its model group named as the key's aliases say, once the key may call it and
    its end user is not blocked."""
    principal = getattr(request.state, "principal", None)
    model = model_for(principal, call["model"])
    if caller.end_user and principal is not None:
        request.app.state.container.end_users.check(caller.end_user)
    return call if model == call["model"] else {**call, "model": model}
