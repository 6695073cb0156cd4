"""LiteLLM's `GET /health`: each deployment, healthy or not, from the router's live cooldowns
and (when the projections run) the deployment health view. No upstream is called here.

Auth is the including app's business.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from moneta.api.responses import json_response
from moneta.application.config import Deployment
from moneta.projections.deployment_health import deployment_health

router = APIRouter(tags=["health"])
_VIEW_FIELDS = ("success_count", "failure_count", "cooldown_count", "last_error_type", "last_status_code",
                "last_cooldown_reason", "latency_p50_ms", "latency_p90_ms", "latency_p99_ms")


@router.get("/health")
async def health(request: Request, model: str | None = None) -> Response:
    """`model` limits the answer to one model group."""
    gateway_router = request.app.state.container.gateway.router
    cooling = gateway_router.cooldowns.state().cooling
    store = getattr(getattr(request.app.state, "views", None), "store", None)
    recorded = await run_in_threadpool(deployment_health, store) if store is not None else {}
    healthy, unhealthy = [], []
    for group, deployments in gateway_router.groups().items():
        if model is not None and group != model:
            continue
        for deployment in deployments:
            endpoint = _endpoint(deployment, recorded.get(deployment.id) or {}, cooling.get(deployment.id))
            (unhealthy if deployment.id in cooling else healthy).append(endpoint)
    return json_response({"healthy_endpoints": healthy, "unhealthy_endpoints": unhealthy,
                          "healthy_count": len(healthy), "unhealthy_count": len(unhealthy)})


def _endpoint(deployment: Deployment, recorded: dict[str, Any], cooling_until: float | None) -> dict[str, Any]:
    endpoint: dict[str, Any] = {"model": deployment.label, "model_name": deployment.model_name,
                                "model_id": deployment.id, "api_base": deployment.api_base}
    endpoint.update({name: recorded.get(name) for name in _VIEW_FIELDS})
    if cooling_until is not None:
        until = datetime.fromtimestamp(cooling_until, timezone.utc).isoformat()
        endpoint["cooldown_until"] = until
        endpoint["error"] = f"cooling down until {until}: {recorded.get('last_cooldown_reason') or 'recent failures'}"
    return endpoint
