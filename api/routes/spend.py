"""LiteLLM's spend routes, read from the projections (`request.app.state.views`, a SpendQueries).

Money in JSON: each Decimal is rendered as a JSON number, as LiteLLM does, and also as an exact
decimal string under the same name with `_exact` appended (`spend` and `spend_exact`). A proxy admin
or viewer reads everything; any other key only its own spend logs, and no report.
"""
from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Callable, Literal

from fastapi import APIRouter, Request
from pydantic import AfterValidator, Field
from pydantic_core import PydanticCustomError
from starlette.concurrency import run_in_threadpool
from typing_extensions import NotRequired

from moneta.api.auth import request_principal, require_admin
from moneta.api.responses import jsonable
from moneta.application.management.keys import token_of
from moneta.application.json_limits import refuse_nul
from moneta.application.schema import OpenText, Shape
from moneta.domain.errors import BadRequestError, PermissionDeniedError
from moneta.projections.queries import MAX_PAGE_SIZE, SpendLogPage, SpendQueries

router = APIRouter(tags=["spend"])

# Spend exists from 1970 on; the day after the last date asked for must still be a date.
_YEARS = range(1970, 9999)
_MAX_PAGE = 1_000_000


def _moment(value: str) -> str:
    try:
        year = datetime.fromisoformat(value).year
    except ValueError:
        year = None
    if year not in _YEARS:
        raise PydanticCustomError("invalid_date", "must be YYYY-MM-DD or an ISO 8601 time, from 1970 to 9998")
    return value


Moment = Annotated[str, AfterValidator(_moment)]


class _Dates(OpenText):
    start_date: NotRequired[Moment]
    end_date: NotRequired[Moment]


class SpendLogQuery(_Dates):
    """LiteLLM's query parameters of the spend-log routes."""

    api_key: NotRequired[str]
    request_id: NotRequired[str]
    user_id: NotRequired[str]
    model: NotRequired[str]
    page: NotRequired[Annotated[int, Field(ge=1, le=_MAX_PAGE)]]
    page_size: NotRequired[Annotated[int, Field(ge=1, le=MAX_PAGE_SIZE)]]


class SpendReportQuery(_Dates):
    group_by: NotRequired[Literal["team", "customer", "api_key", "model"]]


_LOGS = Shape(SpendLogQuery)
_REPORT = Shape(SpendReportQuery)


@router.get("/spend/logs")
async def spend_logs(request: Request) -> list[dict[str, Any]]:
    return jsonable((await _query_logs(request)).rows)


@router.get("/spend/logs/v2")
async def spend_logs_v2(request: Request) -> dict[str, Any]:
    result = await _query_logs(request)
    return {
        "data": jsonable(result.rows),
        "total": result.total,
        "page": result.page,
        "page_size": result.page_size,
        "total_pages": result.total_pages,
    }


@router.get("/global/spend/report")
async def global_spend_report(request: Request) -> list[dict[str, Any]]:
    await require_admin(request)
    query = _query(request, _REPORT)
    views: SpendQueries = request.app.state.views
    report = await _ask(views.spend_report, start_date=query.get("start_date"), end_date=query.get("end_date"),
                        group_by=query.get("group_by", "model"))
    return jsonable(report)


async def _query_logs(request: Request) -> SpendLogPage:
    query = _query(request, _LOGS)
    views: SpendQueries = request.app.state.views
    filters = {name: query.get(name) for name in ("start_date", "end_date", "api_key", "request_id", "model")}
    own_key = await _own_key_only(request)
    if own_key is not None:
        if filters["api_key"] and token_of(filters["api_key"]) != own_key:
            raise PermissionDeniedError("A key may read only its own spend logs.", code="not_allowed")
        filters["api_key"] = own_key
    return await _ask(views.spend_logs, **filters, user=query.get("user_id"), page=query.get("page", 1),
                      page_size=query.get("page_size", 50))


async def _own_key_only(request: Request) -> str | None:
    """The hash of the caller's key when it may read only its own spend (it is no proxy admin or
    viewer); None when it reads everything (or the gateway is open)."""
    principal = await request_principal(request)
    return None if principal is None or principal.reads_everything else principal.key_hash


def _query(request: Request, shape: Shape) -> dict[str, Any]:
    """The query parameters (the last value of each), checked and read as their types."""
    query = dict(request.query_params)
    refuse_nul(query)
    return shape.check(query)


async def _ask(question: Callable[..., Any], **arguments: Any) -> Any:
    try:
        return await run_in_threadpool(question, **arguments)
    except ValueError as exc:
        raise BadRequestError(str(exc), code="invalid_value") from None
