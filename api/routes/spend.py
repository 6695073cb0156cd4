"""LiteLLM's spend routes, read from the projections (`request.app.state.views`, a SpendQueries).

Money in JSON: each Decimal is rendered as a JSON number, as LiteLLM does, and also as an exact
decimal string under the same name with `_exact` appended (`spend` and `spend_exact`). Auth is
the including app's business.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from starlette.concurrency import run_in_threadpool

from moneta.projections.queries import MAX_PAGE_SIZE, SpendLogPage, SpendQueries

router = APIRouter(tags=["spend"])


@dataclass
class SpendLogFilters:
    """LiteLLM's query parameters of the spend-log routes."""

    start_date: str | None = None
    end_date: str | None = None
    api_key: str | None = None
    request_id: str | None = None
    user_id: str | None = None
    model: str | None = None
    page: int = Query(1, ge=1)
    page_size: int = Query(50, ge=1, le=MAX_PAGE_SIZE)


@router.get("/spend/logs")
async def spend_logs(request: Request, filters: SpendLogFilters = Depends()) -> list[dict[str, Any]]:
    return _jsonable((await _query_logs(request, filters)).rows)


@router.get("/spend/logs/v2")
async def spend_logs_v2(request: Request, filters: SpendLogFilters = Depends()) -> dict[str, Any]:
    result = await _query_logs(request, filters)
    return {
        "data": _jsonable(result.rows),
        "total": result.total,
        "page": result.page,
        "page_size": result.page_size,
        "total_pages": result.total_pages,
    }


@router.get("/global/spend/report")
async def global_spend_report(
    request: Request,
    start_date: str | None = None,
    end_date: str | None = None,
    group_by: Literal["team", "customer", "api_key", "model"] = "model",
) -> list[dict[str, Any]]:
    views: SpendQueries = request.app.state.views
    try:
        report = await run_in_threadpool(
            views.spend_report, start_date=start_date, end_date=end_date, group_by=group_by
        )
    except ValueError as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from None
    return _jsonable(report)


async def _query_logs(request: Request, filters: SpendLogFilters) -> SpendLogPage:
    views: SpendQueries = request.app.state.views
    query = {**asdict(filters), "user": filters.user_id}
    del query["user_id"]
    try:
        return await run_in_threadpool(views.spend_logs, **query)
    except ValueError as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from None


def _jsonable(value: Any) -> Any:
    if isinstance(value, list):
        return [_jsonable(item) for item in value]
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out[key] = _jsonable(item)
            if isinstance(item, Decimal):
                out[f"{key}_exact"] = str(item)
        return out
    if isinstance(value, Decimal):
        return float(value)  # the JSON boundary: LiteLLM clients expect a number
    if isinstance(value, datetime):
        return value.isoformat()
    return value
