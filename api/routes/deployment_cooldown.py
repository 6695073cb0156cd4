"""`POST /deployment/cooldown`: the proxy admin takes a deployment out of rotation for a while.

Body: `deployment_id` (or `model_id`, LiteLLM's name for it), `seconds`, `reason`. The cooldown
is a DeploymentHealth event naming who asked; it ends and recovers as an automatic one does.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from fastapi import APIRouter, Request, Response

from moneta.api.auth import manager
from moneta.api.body import parse_json, read_body
from moneta.api.responses import json_response
from moneta.domain.errors import BadRequestError, PermissionDeniedError

router = APIRouter(tags=["health"])
_FIELDS = {"deployment_id", "model_id", "seconds", "reason"}


@router.post("/deployment/cooldown")
async def cooldown(request: Request) -> Response:
    principal = await manager(request)
    if not principal.writes_everything:
        raise PermissionDeniedError("Only the proxy admin may cool a deployment down.", code="not_allowed")
    body = parse_json(await read_body(request))
    deployment_id, reason = _deployment_id(body), _text(body, "reason")
    gateway_router = request.app.state.container.gateway.router
    until = await gateway_router.cool_down(deployment_id, body.get("seconds"), reason, principal.actor)
    return json_response({"deployment_id": deployment_id, "reason": reason, "requested_by": principal.actor,
                          "cooldown_until": datetime.fromtimestamp(until, timezone.utc).isoformat()})


def _deployment_id(body: dict[str, Any]) -> str:
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        raise BadRequestError(f"Unknown field '{unknown[0]}'.", param=unknown[0])
    if "deployment_id" in body and "model_id" in body and body["deployment_id"] != body["model_id"]:
        raise BadRequestError("deployment_id and model_id name different deployments.", param="model_id")
    deployment_id = _text(body, "deployment_id") or _text(body, "model_id")
    if not deployment_id:
        raise BadRequestError("deployment_id (or model_id) is required.", param="deployment_id")
    return deployment_id


def _text(body: dict[str, Any], name: str) -> str:
    value = body.get(name, "")
    if not isinstance(value, str):
        raise BadRequestError(f"'{name}' must be a string.", param=name)
    return value
