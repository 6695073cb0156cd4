"""`GET /metrics` (Prometheus text format) and the middleware that times every HTTP call.

Open by default, as in LiteLLM; `general_settings.require_auth_for_metrics_endpoint: true` asks
for the master key.
"""
from __future__ import annotations

import time
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from moneta.api.auth import require_admin
from moneta.infrastructure.call_metrics import UNMATCHED, CallMetrics


def install(app: FastAPI, calls: CallMetrics, require_auth: bool) -> None:
    # A plain `def`: FastAPI runs it in a thread, where the projections' lag is read from the views.
    def metrics() -> Response:
        return Response(calls.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    app.add_api_route("/metrics", metrics, methods=["GET"], include_in_schema=False,
                      dependencies=[Depends(require_admin)] if require_auth else [])
    app.add_middleware(MetricsMiddleware, calls=calls)


class MetricsMiddleware:
    """Times each HTTP call to the end of its response; labels it by route template (never the raw
    path) and status."""

    def __init__(self, app: Any, calls: CallMetrics) -> None:
        self.app = app
        self.calls = calls

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # unless a response starts

        async def send_noting_status(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_noting_status)
        finally:
            route = scope.get("route")
            state = scope.get("state") or {}
            self.calls.answered(UNMATCHED if route is None else route.path, status,
                                time.perf_counter() - started, state.get("request_id"))
