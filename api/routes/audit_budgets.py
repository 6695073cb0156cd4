"""`GET /audit/budgets?scope=S&at=ISO`: a scope's budget (every scope's without `scope`) as it stood
at `at` (default now), computed from the ledger's events up to then (application/audit_budgets.py).
Money is a number plus its exact `<name>_exact` text.

Auth is the including app's business (a proxy admin or viewer).
"""
from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from moneta.api.responses import json_response, jsonable
from moneta.application.audit_budgets import EVENT_TYPES, budgets_at
from moneta.application.audit_window import parse_moment
from moneta.bootstrap import ledger_scan

router = APIRouter(tags=["audit"])


@router.get("/audit/budgets")
async def audit_budgets(request: Request, scope: str | None = None, at: str | None = None) -> Response:
    container = request.app.state.container
    moment = parse_moment(at, "at") if at else datetime.now(UTC)
    scan = ledger_scan(container.event_store, container.location)
    answer = await run_in_threadpool(budgets_at, scan.events(types=EVENT_TYPES), container.budgets.settings, scope,
                                     moment)
    return json_response(jsonable(answer))
