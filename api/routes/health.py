"""LiteLLM's health routes: liveliness (the process answers) and readiness (its stores do, and
the read side keeps up with the ledger)."""
from __future__ import annotations

from typing import Any

from eventsourcing.application import Application
from fastapi import APIRouter, Request, Response
from fastapi.responses import PlainTextResponse
from starlette.concurrency import run_in_threadpool

from moneta.api.responses import json_response
from moneta.bootstrap import Container
from moneta.projections.runner import DEFAULT_NAME
from moneta.projections.status import read_status
from moneta.projections.view_store import ViewStore

router = APIRouter()
READ_SIDE_DOWN_AFTER_S = 5.0  # without a heartbeat (the runner beats about once a second)
READ_SIDE_LAGGING_AFTER_S = 1.0


@router.get("/health/liveliness")
@router.get("/health/liveness")
async def liveliness() -> PlainTextResponse:
    return PlainTextResponse("I'm alive!")


@router.get("/health/readiness")
async def readiness(request: Request) -> Response:
    container = request.app.state.container
    checks: dict[str, Any] = {"db": await run_in_threadpool(_ledger_status, container)}
    probes_pass = True
    for probe in container.probes:
        passed = await probe()
        checks[probe.field] = probe.label if passed else "unreachable"
        probes_pass = probes_pass and passed
    if container.views is not None:
        checks["read_side"] = await run_in_threadpool(_read_side_status, container.event_store, container.views.store)
    read_side = checks.get("read_side", {}).get("status")
    healthy = checks["db"] == "connected" and probes_pass and read_side != "down"
    # Degraded: serving, but some events are quarantined and missing from the views.
    overall = "unhealthy" if not healthy else "degraded" if read_side == "degraded" else "healthy"
    body = {"status": overall, **checks,
            "ledger": container.location.kind, "litellm_version": None, "moneta_version": request.app.version}
    return json_response(body, status_code=200 if healthy else 503)


def _ledger_status(container: Container) -> str:
    try:
        container.reader.head()
    except Exception:  # any failure to read the store means not ready
        return "unreachable"
    return "connected" if container.ledger.is_healthy() else "write failing"


def _read_side_status(app: Application, store: ViewStore) -> dict[str, Any]:
    """Down when no heartbeat proves the projection runner alive; degraded when events are
    quarantined; lagging (still serving) when behind."""
    try:
        status = next(status for status in read_status(app, store) if status.name == DEFAULT_NAME)
    except Exception:  # no tracking row, or the views unreachable: nothing proves the read side alive
        return {"status": "down", "lag_events": None, "lag_s": None, "heartbeat_age_s": None, "quarantined": None}
    age = status.heartbeat_age_s
    if age is None or age > READ_SIDE_DOWN_AFTER_S:
        state = "down"
    elif status.quarantined:
        state = "degraded"
    else:
        state = "lagging" if status.lag_s > READ_SIDE_LAGGING_AFTER_S else "ok"
    return {"status": state, "lag_events": status.lag_events, "lag_s": round(status.lag_s, 3),
            "heartbeat_age_s": None if age is None else round(age, 3), "quarantined": status.quarantined}
