"""LiteLLM's management routes: keys, teams, users, organizations, customers, budgets.

Thin: each route authenticates, reads the body or query, runs the command in a thread (it writes
to the ledger and may wait for the access view) and answers with the result as JSON.
"""
from __future__ import annotations

from typing import Any, Callable

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from moneta.api.auth import manager
from moneta.api.body import parse_json, read_body
from moneta.api.responses import json_response, jsonable
from moneta.application.json_limits import refuse_nul
from moneta.application.management import budgets, customers, keys, organizations, teams, users
from moneta.domain.errors import BadRequestError

router = APIRouter(tags=["management"])


async def _run(request: Request, command: Callable[..., Any], *args: Any, **kwargs: Any) -> Response:
    return json_response(jsonable(await _result(request, command, *args, **kwargs)))


async def _result(request: Request, command: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    principal = await manager(request)
    return await run_in_threadpool(command, request.app.state.container.access, principal, *args, **kwargs)


async def _with_budget(request: Request, shown: dict[str, Any], scope: str, kind: str, name: str) -> None:
    """Adds the entity's budget now: limit, period, spend in it, held by calls in flight, reset."""
    container = request.app.state.container
    status = await container.budgets.status(scope, name, container.directory.get(kind, name))
    shown["budget"] = status
    shown["budget_reset_at"] = status["budget_reset_at"] if status else None


async def _info(request: Request, command: Callable[..., Any], value: Any, part: str | None, scope: str, kind: str,
                name_field: str) -> Response:
    result = await _result(request, command, value)
    shown = result[part] if part else result
    await _with_budget(request, shown, scope, kind, shown[name_field])
    return json_response(jsonable(result))


async def _body(request: Request) -> Any:
    return parse_json(await read_body(request))


def _query(request: Request) -> dict[str, str]:
    query = dict(request.query_params)
    refuse_nul(query)
    return query


def _whole(query: dict[str, str], name: str, default: int) -> int:
    value = query.get(name)
    if value is None:
        return default
    if not value.isdigit() or len(value) > 9:
        raise BadRequestError(f"'{name}' must be a whole number.", param=name)
    return int(value)


def _flag(query: dict[str, str], name: str) -> bool:
    return query.get(name, "false").lower() == "true"


# -- keys -------------------------------------------------------------------------------------------

@router.post("/key/generate")
async def key_generate(request: Request) -> Response:
    return await _run(request, keys.generate, await _body(request))


@router.post("/key/update")
async def key_update(request: Request) -> Response:
    return await _run(request, keys.update, await _body(request))


@router.post("/key/regenerate")
async def key_regenerate(request: Request) -> Response:
    return await _run(request, keys.regenerate, await _body(request))


@router.post("/key/{key}/regenerate")
async def key_regenerate_in_path(request: Request, key: str) -> Response:
    raw = await read_body(request)
    return await _run(request, keys.regenerate, parse_json(raw) if raw.strip() else {}, key)


@router.post("/key/block")
async def key_block(request: Request) -> Response:
    return await _run(request, keys.set_blocked, await _body(request), True)


@router.post("/key/unblock")
async def key_unblock(request: Request) -> Response:
    return await _run(request, keys.set_blocked, await _body(request), False)


@router.post("/key/delete")
async def key_delete(request: Request) -> Response:
    return await _run(request, keys.delete, await _body(request))


@router.get("/key/info")
async def key_info(request: Request) -> Response:
    return await _info(request, keys.info, _query(request).get("key"), "info", "key", "key", "key_id")


@router.get("/key/list")
async def key_list(request: Request) -> Response:
    query = _query(request)
    return await _run(request, keys.listed, page=_whole(query, "page", 1), size=_whole(query, "size", 10),
                      user_id=query.get("user_id"), team_id=query.get("team_id"), key_alias=query.get("key_alias"),
                      full=_flag(query, "return_full_object"))


# -- teams ------------------------------------------------------------------------------------------

@router.post("/team/new")
async def team_new(request: Request) -> Response:
    return await _run(request, teams.new, await _body(request))


@router.post("/team/update")
async def team_update(request: Request) -> Response:
    return await _run(request, teams.update, await _body(request))


@router.post("/team/delete")
async def team_delete(request: Request) -> Response:
    return await _run(request, teams.delete, await _body(request))


@router.post("/team/block")
async def team_block(request: Request) -> Response:
    return await _run(request, teams.set_blocked, await _body(request), True)


@router.post("/team/unblock")
async def team_unblock(request: Request) -> Response:
    return await _run(request, teams.set_blocked, await _body(request), False)


@router.get("/team/info")
async def team_info(request: Request) -> Response:
    return await _info(request, teams.info, _query(request).get("team_id"), "team_info", "team", "team", "team_id")


@router.get("/team/list")
async def team_list(request: Request) -> Response:
    query = _query(request)
    return await _run(request, teams.listed, user_id=query.get("user_id"), organization_id=query.get("organization_id"))


@router.post("/team/member_add")
async def team_member_add(request: Request) -> Response:
    return await _run(request, teams.member_add, await _body(request))


@router.post("/team/member_update")
async def team_member_update(request: Request) -> Response:
    return await _run(request, teams.member_update, await _body(request))


@router.post("/team/member_delete")
async def team_member_delete(request: Request) -> Response:
    return await _run(request, teams.member_delete, await _body(request))


# -- users ------------------------------------------------------------------------------------------

@router.post("/user/new")
async def user_new(request: Request) -> Response:
    return await _run(request, users.new, await _body(request))


@router.post("/user/update")
async def user_update(request: Request) -> Response:
    return await _run(request, users.update, await _body(request))


@router.post("/user/delete")
async def user_delete(request: Request) -> Response:
    return await _run(request, users.delete, await _body(request))


@router.get("/user/info")
async def user_info(request: Request) -> Response:
    return await _info(request, users.info, _query(request).get("user_id"), "user_info", "user", "user", "user_id")


@router.get("/user/list")
async def user_list(request: Request) -> Response:
    query = _query(request)
    user_ids = [user_id for user_id in query.get("user_ids", "").split(",") if user_id] or None
    return await _run(request, users.listed, page=_whole(query, "page", 1), page_size=_whole(query, "page_size", 25),
                      role=query.get("role"), user_ids=user_ids)


# -- organizations ----------------------------------------------------------------------------------

@router.post("/organization/new")
async def organization_new(request: Request) -> Response:
    return await _run(request, organizations.new, await _body(request))


@router.api_route("/organization/update", methods=["POST", "PATCH"])
async def organization_update(request: Request) -> Response:
    return await _run(request, organizations.update, await _body(request))


@router.api_route("/organization/delete", methods=["POST", "DELETE"])
async def organization_delete(request: Request) -> Response:
    return await _run(request, organizations.delete, await _body(request))


@router.api_route("/organization/info", methods=["GET", "POST"])
async def organization_info(request: Request) -> Response:
    if request.method == "POST":
        body = await _body(request)
        org_id = body.get("organization_id")
    else:
        org_id = _query(request).get("organization_id")
    return await _info(request, organizations.info, org_id if isinstance(org_id, str) else None, None, "org",
                       "organization", "organization_id")


@router.get("/organization/list")
async def organization_list(request: Request) -> Response:
    return await _run(request, organizations.listed)


@router.post("/organization/member_add")
async def organization_member_add(request: Request) -> Response:
    return await _run(request, organizations.member_add, await _body(request))


@router.api_route("/organization/member_delete", methods=["POST", "DELETE"])
async def organization_member_delete(request: Request) -> Response:
    return await _run(request, organizations.member_delete, await _body(request))


# -- customers (end users) --------------------------------------------------------------------------

@router.post("/customer/new")
async def customer_new(request: Request) -> Response:
    return await _run(request, customers.new, await _body(request))


@router.post("/customer/update")
async def customer_update(request: Request) -> Response:
    return await _run(request, customers.update, await _body(request))


@router.post("/customer/delete")
async def customer_delete(request: Request) -> Response:
    return await _run(request, customers.delete, await _body(request))


@router.post("/customer/block")
async def customer_block(request: Request) -> Response:
    return await _run(request, customers.set_blocked, await _body(request), True)


@router.post("/customer/unblock")
async def customer_unblock(request: Request) -> Response:
    return await _run(request, customers.set_blocked, await _body(request), False)


@router.get("/customer/info")
async def customer_info(request: Request) -> Response:
    return await _info(request, customers.info, _query(request).get("end_user_id"), None, "customer", "customer",
                       "user_id")


@router.get("/customer/list")
async def customer_list(request: Request) -> Response:
    return await _run(request, customers.listed)


# -- reusable budgets -------------------------------------------------------------------------------

@router.post("/budget/new")
async def budget_new(request: Request) -> Response:
    return await _run(request, budgets.new, await _body(request))


@router.post("/budget/update")
async def budget_update(request: Request) -> Response:
    return await _run(request, budgets.update, await _body(request))


@router.post("/budget/info")
async def budget_info(request: Request) -> Response:
    return await _run(request, budgets.info, await _body(request))


@router.get("/budget/list")
async def budget_list(request: Request) -> Response:
    return await _run(request, budgets.listed)


@router.post("/budget/delete")
async def budget_delete(request: Request) -> Response:
    return await _run(request, budgets.delete, await _body(request))
