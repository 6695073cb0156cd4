"""LiteLLM's `GET /cache/ping`: is the response cache configured, and does its store answer?"""
from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response

from moneta.api.auth import require_admin
from moneta.api.responses import json_response
from moneta.application.response_cache import ResponseCache
from moneta.domain.errors import ServiceUnavailableError

router = APIRouter(tags=["caching"])


@router.get("/cache/ping", dependencies=[Depends(require_admin)])
async def cache_ping(request: Request) -> Response:
    cache: ResponseCache | None = request.app.state.container.cache
    if cache is None:
        raise ServiceUnavailableError("Cache not initialized. litellm.cache is None", param="cache_ping",
                                      code="cache_ping_error")
    settings = cache.settings
    if not await cache.store.ping():
        raise ServiceUnavailableError(f"Service Unhealthy: the {settings.kind} cache does not answer",
                                      param="cache_ping", code="cache_ping_error")
    answer = {"status": "healthy", "cache_type": settings.kind,
              "litellm_cache_params": {"type": settings.kind, "ttl": settings.ttl_s, "namespace": settings.namespace,
                                       "supported_call_types": sorted(settings.call_types)}}
    if settings.kind == "redis":
        answer["ping_response"] = True
    return json_response(answer)
