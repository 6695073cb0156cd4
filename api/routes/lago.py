"""Lago, for the proxy admin: the usage Lago refused (`GET /moneta/lago/parked`) and the ledger
reconciled with Lago's events (`GET /moneta/reconcile?from=&to=`, as `moneta reconcile lago --json`)."""
from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from starlette.concurrency import run_in_threadpool

from moneta.api.auth import require_admin
from moneta.api.responses import json_response
from moneta.application.config import LagoSettings
from moneta.application.lago_events import LagoUnavailable
from moneta.application.reconciliation import Report, moment
from moneta.bootstrap import Container, lago_reconciliation
from moneta.domain.errors import APIConnectionError, BadRequestError, NotFoundError, ServiceUnavailableError
from moneta.projections import tracking
from moneta.projections.lago_deliveries import LagoOutbox
from moneta.projections.runner import DEFAULT_NAME

router = APIRouter(tags=["lago"], dependencies=[Depends(require_admin)])
CATCH_UP_S = 10.0  # how long reconciliation waits for the views to reach the ledger as it stood


@router.get("/moneta/lago/parked")
async def parked(request: Request) -> Response:
    container: Container = request.app.state.container
    _settings(container)
    rows = await run_in_threadpool(LagoOutbox(container.views.store).parked)
    return json_response({"parked": [parked_json(row) for row in rows], "count": len(rows)})


@router.get("/moneta/reconcile")
async def reconcile(request: Request) -> Response:
    """`from` and `to`: ISO 8601 times (UTC unless they name a zone); `all=true` lists the equal calls too."""
    container: Container = request.app.state.container
    settings = _settings(container)
    start, end = _time(request, "from"), _time(request, "to")
    if end <= start:
        raise BadRequestError("the range is empty: `to` must come after `from`", param="to", code="invalid_range")
    report = await run_in_threadpool(_reconcile, container, settings, start, end)
    return json_response(report.as_json(with_equal=request.query_params.get("all", "").lower() == "true"))


def parked_json(row: dict[str, Any]) -> dict[str, Any]:
    call = row["call"]
    return {"request_id": call.request_id, "customer": call.customer, "subscription": call.subscription,
            "timestamp": call.completed_at.isoformat(), "precise_total_amount_cents": call.cents,
            "attempts": row["attempts"], "status": row["last_status"], "reason": row["last_error"]}


def _time(request: Request, name: str) -> datetime:
    try:
        return moment(request.query_params[name])
    except (KeyError, ValueError):
        raise BadRequestError(f"`{name}` must be an ISO 8601 time (2026-05-20 or 2026-05-20T14:03:00Z)",
                              param=name, code="invalid_time") from None


def _settings(container: Container) -> LagoSettings:
    settings = container.config.moneta.lago
    if settings is None:
        raise NotFoundError("Lago is not configured (moneta_settings.lago).", code="lago_not_configured")
    return settings


def _reconcile(container: Container, settings: LagoSettings, start: datetime, end: datetime) -> Report:
    """In a thread, with an event loop of its own: nothing here holds up the requests served."""
    store = container.views.store
    _wait_for_views(container)
    reconciliation = lago_reconciliation(settings, store, container.event_store)

    async def run() -> Report:
        try:
            return await reconciliation.report(start, end)
        finally:
            await reconciliation.lago.close()

    try:
        return asyncio.run(run())
    except LagoUnavailable as error:
        raise APIConnectionError(f"Lago could not be read: {error}", code="lago_unavailable") from None


def _wait_for_views(container: Container) -> None:
    head = container.reader.head()
    deadline = time.monotonic() + CATCH_UP_S
    while True:
        with container.views.store.reading() as cur:
            if tracking.read(cur, DEFAULT_NAME) >= head:
                return
        if time.monotonic() > deadline:
            raise ServiceUnavailableError("the read side has not caught up with the ledger: try again",
                                          code="views_behind")
        time.sleep(0.05)
