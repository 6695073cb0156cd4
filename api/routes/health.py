"""LiteLLM's health routes: liveliness (the process answers) and readiness (its stores do)."""
from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import PlainTextResponse
from starlette.concurrency import run_in_threadpool

from moneta.api.responses import json_response
from moneta.bootstrap import Container

router = APIRouter()


@router.get("/health/liveliness")
@router.get("/health/liveness")
async def liveliness() -> PlainTextResponse:
    return PlainTextResponse("I'm alive!")


@router.get("/health/readiness")
async def readiness(request: Request) -> Response:
    container = request.app.state.container
    checks = {"db": await run_in_threadpool(_ledger_status, container)}
    probes_pass = True
    for probe in container.probes:
        passed = await probe()
        checks[probe.field] = probe.label if passed else "unreachable"
        probes_pass = probes_pass and passed
    healthy = checks["db"] == "connected" and probes_pass
    body = {"status": "healthy" if healthy else "unhealthy", **checks,
            "ledger": container.location.kind, "litellm_version": None, "moneta_version": request.app.version}
    return json_response(body, status_code=200 if healthy else 503)


def _ledger_status(container: Container) -> str:
    try:
        container.reader.head()
    except Exception:  # any failure to read the store means not ready
        return "unreachable"
    return "connected" if container.ledger.is_healthy() else "write failing"
