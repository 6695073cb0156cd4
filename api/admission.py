"""The front of every call route, as a pipeline of checks: authenticate, read and validate,
authorize the model, check the end user, take the rate limits (then the gateway routes). A refusal of an authenticated
caller is recorded in the ledger, with what the checks saw, before it is answered."""
from __future__ import annotations

import uuid
from datetime import UTC, datetime
from dataclasses import dataclass, replace
from typing import Any, Callable

from fastapi import Request
from starlette.requests import HTTPConnection

from moneta.api.auth import END_USER_HEADER, authenticate
from moneta.api.body import parse_json, read_body
from moneta.application.authorization import model_for
from moneta.application.gateway import Caller, Gateway
from moneta.application.budget_check import BudgetRefused, Budgets
from moneta.application.entitlement_check import Entitlement, Entitlements, NotEntitled, is_wallet, out_of_credit
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
    seen: dict[str, Any] = {}
    try:
        body = parse_json(await read_body(request))
        call = check(body)
        caller = _with_end_user(request, caller, call)
        caller, call = await checked(request, caller, call, request_id, call_type, seen)
    except GatewayError as error:
        model = body.get("model") if isinstance(body, dict) and isinstance(body.get("model"), str) else ""
        await gateway(request).deny(with_seen(caller, seen), call_type, model, error, request_id)
        raise
    return Admitted(caller, body, call, request_id)


async def checked(request: HTTPConnection, caller: Caller, call: dict[str, Any], request_id: uuid.UUID,
                  call_type: str, seen: dict[str, Any], audio_bytes: int = 0) -> tuple[Caller, dict[str, Any]]:
    """The checks after validation: the model and end user allowed, the rate limits taken, the
    budgets reserved (both given back when the call ends). What they saw goes into `seen`, for
    the ledger, refused or not; the rate limits' headers go out with the response."""
    call = await authorize(request, caller, call)
    container = request.app.state.container
    principal = getattr(request.state, "principal", None)
    rate_limits: RateLimits = container.rate_limits
    limits = rate_limits.limits(principal, call["model"], caller.end_user)
    rid = str(request_id)
    try:
        decision = await rate_limits.take(rid, limits)
    except LimitRefused as refused:
        request.state.response_headers = headers(refused.decision)
        seen["limits"] = refused.decision.as_event()
        raise
    ends = []
    if decision is not None:
        request.state.response_headers = headers(decision)
        seen["limits"] = decision.as_event()
        ends.append(rate_limits.settler(rid, limits))
    try:
        entitlement = await _entitle(container.entitlements, principal, caller, call["model"], seen)
        call, barred = await _reserve(container.budgets, principal, caller, call, request_id, call_type, seen, ends,
                                      audio_bytes, entitlement)
    except GatewayError:
        if decision is not None:
            rate_limits.release(rid, limits)
        raise
    if not seen:
        return caller, call
    return Caller(key_hash=caller.key_hash, end_user=caller.end_user, principal=caller.principal,
                  checks={**caller.checks, **seen}, on_end=_all(ends) if ends else None,
                  barred_providers=barred), call


async def _entitle(entitlements: Entitlements | None, principal: Any, caller: Caller, model: str,
                   seen: dict[str, Any]) -> Entitlement | None:
    """With Lago configured: the customer entitled to the call, and its wallet's budget line."""
    if entitlements is None:
        return None
    try:
        entitlement = await entitlements.check(principal, caller.end_user, caller.key_hash, model, datetime.now(UTC))
    except NotEntitled as refused:
        seen["entitlement"] = {**refused.facts, "entitled": False}
        raise
    seen["entitlement"] = {**entitlement.facts, "entitled": True}
    return entitlement


async def _reserve(budgets: Budgets, principal: Any, caller: Caller, call: dict[str, Any], request_id: uuid.UUID,
                   call_type: str, seen: dict[str, Any], ends: list[Callable[[Any], None]],
                   audio_bytes: int, entitlement: Entitlement | None) -> tuple[dict[str, Any], frozenset[str]]:
    """The call as the budgets (the customer's wallet among them) allow it, and the providers they bar it from."""
    now = datetime.now(UTC)
    lines = budgets.lines(principal, call["model"], caller.end_user, now)
    if entitlement is not None and entitlement.wallet is not None:
        lines = [*lines, entitlement.wallet]
    providers = budgets.provider_lines(call["model"], now)
    if not lines and not providers.lines:
        return call, frozenset()
    try:
        reservation = await budgets.check_budget(str(request_id), lines, call_type, call, now, audio_bytes, providers)
    except BudgetRefused as refused:
        seen["budget"] = refused.decision.as_event()
        headroom = refused.decision.refused
        if entitlement is not None and headroom is not None and is_wallet(headroom.line.scope):
            raise out_of_credit(entitlement, headroom) from None
        raise
    seen["budget"] = reservation.as_event()
    if reservation.lines:
        ends.append(budgets.settler(str(request_id), reservation))
    return reservation.call, reservation.barred


def _all(ends: list[Callable[[Any], None]]) -> Callable[[Any], None]:
    if len(ends) == 1:
        return ends[0]

    def each(record: Any) -> None:
        for end in ends:
            end(record)
    return each


def with_seen(caller: Caller, seen: dict[str, Any]) -> Caller:
    """The caller as a Denied event records it: with what the checks saw before one refused."""
    return replace(caller, checks={**caller.checks, **seen}) if seen else caller


def _with_end_user(request: HTTPConnection, caller: Caller, call: dict[str, Any]) -> Caller:
    end_user = request.headers.get(END_USER_HEADER) or (str(call["user"]) if call.get("user") else "")
    return replace(caller, end_user=end_user[:256]) if end_user else caller


async def authorize(request: HTTPConnection, caller: Caller, call: dict[str, Any]) -> dict[str, Any]:
    """The call with its model group named as the key's aliases say, once the key may call it and
    its end user is not blocked."""
    principal = getattr(request.state, "principal", None)
    model = model_for(principal, call["model"])
    if caller.end_user and principal is not None:
        await request.app.state.container.end_users.check(caller.end_user)
    return call if model == call["model"] else {**call, "model": model}
