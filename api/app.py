"""The FastAPI application: routers, error handlers, and the lifespan of what runs beside them."""
from __future__ import annotations

import contextlib
import gc
import logging
import time
import uuid
from typing import Any, AsyncIterator

from fastapi import Depends, FastAPI

from moneta.api.auth import require_admin
from moneta.api.errors import install_error_handlers
from moneta.api.limits import BodySizeLimit
from moneta.api.routes import askii as askii_routes
from moneta.api.routes import (
    anthropic, cache, deployment_cooldown, deployment_health, health, management, openai, provider_budgets, realtime,
    utils,
)
from moneta.api.routes import audit_requests
from moneta.bootstrap import Container
from moneta.infrastructure.http_session import close_session

log = logging.getLogger("moneta.api")
VERSION = "0.1.0"


class RequestIdMiddleware:
    """Every response carries `x-request-id` (the ledger stream id where the route set one) and
    the headers a route left in `request.state.response_headers` (the rate limits' headers, which
    go out with errors too)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_id(message: dict) -> None:
            if message["type"] == "http.response.start":
                headers = message.setdefault("headers", [])
                state = scope.get("state") or {}
                if not any(name == b"x-request-id" for name, _ in headers):
                    request_id = state.get("request_id") or str(uuid.uuid4())
                    headers.append((b"x-request-id", request_id.encode()))
                headers.extend(state.get("response_headers", ()))
            await send(message)

        await self.app(scope, receive, send_with_id)


def create_app(container: Container) -> FastAPI:
    tasks = container.background

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        for task in tasks:
            task.start()
        # What start-up built lives as long as the process: out of the collector's way, a full
        # collection no longer walks it (the directory, the config, the modules) on every run.
        gc.freeze()
        try:
            yield
        finally:
            for task in reversed(tasks):
                await task.stop()  # each waits for its work in flight: the stores close next
            await close_session()
            container.close()

    # No OpenTelemetry here: FastAPI would otherwise look its providers up on every request.
    app = FastAPI(title="Moneta Gateway", version=VERSION, lifespan=lifespan, docs_url=None, redoc_url=None,
                  telemetry={"tracing": False, "metrics": False, "logs": False})
    app.state.container = container
    app.state.started_at = time.time()
    app.state.views = container.views
    install_error_handlers(app, container.config.secrets())
    openai.router.install(app)
    app.include_router(anthropic.router)
    app.include_router(realtime.router)
    app.include_router(utils.router)
    app.include_router(health.router)
    app.include_router(cache.router)
    app.include_router(deployment_health.router, dependencies=[Depends(require_admin)])
    app.include_router(provider_budgets.router, dependencies=[Depends(require_admin)])
    app.include_router(audit_requests.router, dependencies=[Depends(require_admin)])
    app.include_router(deployment_cooldown.router)
    app.include_router(management.router)
    app.include_router(askii_routes.router)
    if container.lago_inbox is not None:
        from moneta.api.routes import lago_webhooks

        app.include_router(lago_webhooks.router)
    if container.views is not None:
        from moneta.api.routes import lago, spend, spend_activity
        from moneta.projections.activity_queries import ActivityQueries

        app.state.activity = ActivityQueries(container.views.store)
        app.include_router(spend.router)
        app.include_router(spend_activity.router)
        app.include_router(lago.router)
        from moneta.api.routes import audit_budgets, audit_chain

        app.include_router(audit_chain.router, dependencies=[Depends(require_admin)])
        app.include_router(audit_budgets.router, dependencies=[Depends(require_admin)])
    app.add_middleware(BodySizeLimit, max_bytes=container.config.max_request_body_bytes)
    app.add_middleware(RequestIdMiddleware)
    if container.metrics is not None:
        from moneta.api import metrics

        metrics.install(app, container.metrics, container.config.require_auth_for_metrics)
    return app
