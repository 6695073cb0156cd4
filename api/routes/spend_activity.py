"""LiteLLM's global spend and daily activity routes: `/global/spend/keys|teams|end_users|models`,
`/user/daily/activity`, `/team/daily/activity`, read from the projections (`app.state.activity`).
Who may read what: application/spend_activity.py. Money as in api/routes/spend.py.
"""
from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, Any, Callable

from fastapi import APIRouter, Request
from pydantic import AfterValidator, Field
from pydantic_core import PydanticCustomError
from starlette.concurrency import run_in_threadpool
from typing_extensions import NotRequired

from moneta.api.auth import request_principal
from moneta.api.body import parse_json, read_body
from moneta.api.responses import jsonable
from moneta.api.routes.spend import Moment
from moneta.application import spend_activity
from moneta.application.json_limits import refuse_nul
from moneta.application.schema import Open, OpenText, Shape
from moneta.projections.queries import MAX_PAGE_SIZE

router = APIRouter(tags=["spend"])
_MAX_PAGE = 1_000_000
_MAX_LIMIT = 100_000


def _day(value: str) -> str:
    try:
        date.fromisoformat(value)
    except ValueError:
        raise PydanticCustomError("invalid_date", "must be a date, YYYY-MM-DD") from None
    if len(value) != 10:
        raise PydanticCustomError("invalid_date", "must be a date, YYYY-MM-DD")
    return value


Day = Annotated[str, AfterValidator(_day)]


class TopQuery(OpenText):
    limit: NotRequired[Annotated[int, Field(ge=1, le=_MAX_LIMIT)]]


class ActivityQuery(OpenText):
    """LiteLLM's daily activity parameters: both dates are required, as there."""

    start_date: Day
    end_date: Day
    model: NotRequired[str]
    api_key: NotRequired[str]
    page: NotRequired[Annotated[int, Field(ge=1, le=_MAX_PAGE)]]
    page_size: NotRequired[Annotated[int, Field(ge=1, le=MAX_PAGE_SIZE)]]


class UserActivityQuery(ActivityQuery):
    user_id: NotRequired[str]


class TeamActivityQuery(ActivityQuery):
    team_ids: NotRequired[str]
    exclude_team_ids: NotRequired[str]


class EndUsersBody(Open):
    api_key: NotRequired[str]
    startTime: NotRequired[Moment]
    endTime: NotRequired[Moment]


_TOP, _END_USERS = Shape(TopQuery), Shape(EndUsersBody)
_USER, _TEAM = Shape(UserActivityQuery), Shape(TeamActivityQuery)


@router.get("/global/spend/keys")
async def global_spend_keys(request: Request) -> list[dict[str, Any]]:
    return jsonable(await _ask(request, spend_activity.top_keys, _query(request, _TOP).get("limit")))


@router.get("/global/spend/models")
async def global_spend_models(request: Request) -> list[dict[str, Any]]:
    return jsonable(await _ask(request, spend_activity.top_models, _query(request, _TOP).get("limit", 10)))


@router.get("/global/spend/teams")
async def global_spend_teams(request: Request) -> dict[str, Any]:
    return jsonable(await _ask(request, spend_activity.team_spend))


@router.post("/global/spend/end_users")
async def global_spend_end_users(request: Request) -> list[dict[str, Any]]:
    raw = await read_body(request)
    body = _END_USERS.check(parse_json(raw) if raw.strip() else {})
    return jsonable(await _ask(request, spend_activity.end_users, start=_moment(body.get("startTime")),
                               end=_moment(body.get("endTime")), api_key=body.get("api_key")))


@router.get("/user/daily/activity")
async def user_daily_activity(request: Request) -> dict[str, Any]:
    query = _query(request, _USER)
    return jsonable(await _ask(request, spend_activity.user_activity, user_id=query.get("user_id"),
                               **_filters(query, page_size=50)))


@router.get("/team/daily/activity")
async def team_daily_activity(request: Request) -> dict[str, Any]:
    query = _query(request, _TEAM)
    return jsonable(await _ask(request, spend_activity.team_activity, team_ids=_ids(query.get("team_ids")),
                               exclude=_ids(query.get("exclude_team_ids")) or (), **_filters(query, page_size=10)))


def _query(request: Request, shape: Shape) -> dict[str, Any]:
    query = dict(request.query_params)
    refuse_nul(query)
    return shape.check(query)


def _filters(query: dict[str, Any], *, page_size: int) -> dict[str, Any]:
    """The common parameters, with LiteLLM's default page size for the route."""
    return {"start_date": query["start_date"], "end_date": query["end_date"], "model": query.get("model"),
            "api_key": query.get("api_key"), "page": query.get("page", 1),
            "page_size": query.get("page_size", page_size)}


def _ids(value: str | None) -> list[str] | None:
    """LiteLLM's comma-separated ids."""
    return [part.strip() for part in value.split(",") if part.strip()] if value else None


def _moment(value: str | None) -> datetime | None:
    if value is None:
        return None
    moment = datetime.fromisoformat(value)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


async def _ask(request: Request, answer: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    principal = await request_principal(request)
    directory = request.app.state.container.directory
    return await run_in_threadpool(answer, request.app.state.activity, directory, principal, *args, **kwargs)
