"""LiteLLM's global spend and daily activity answers: who may read which spend, and the names
(key alias, team alias) the views do not hold.

A proxy admin or viewer (or anyone, on an open gateway) reads everything; a user reads their own
spend and, as a team admin, their teams'; a key of no user reads its own. `/global/spend/*` shows
each reader what they may see; asking for another user's or a team one does not administer is a 403.
"""
from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Iterable, Protocol

from moneta.application.access_directory import Directory
from moneta.application.management.context import is_team_admin
from moneta.application.principal import Principal
from moneta.domain.errors import PermissionDeniedError
from moneta.domain.spend_visibility import EVERYTHING, Visibility

WINDOW_DAYS = 30  # LiteLLM's top keys, models and teams cover the last 30 days
TOP_TEAMS = 10
UNASSIGNED = "Unassigned"


class ActivityViews(Protocol):
    def top_keys(self, visibility: Visibility, since: str, limit: int | None) -> list[dict[str, Any]]: ...

    def top_models(self, visibility: Visibility, since: str, limit: int | None) -> list[dict[str, Any]]: ...

    def team_days(self, visibility: Visibility, since: str) -> list[dict[str, Any]]: ...

    def end_users(self, visibility: Visibility, start: datetime, end: datetime,
                  api_key: str | None) -> list[dict[str, Any]]: ...

    def daily_activity(self, by: str, visibility: Visibility, **filters: Any) -> dict[str, Any]: ...


def visibility(principal: Principal | None, directory: Directory) -> Visibility:
    if principal is None or principal.reads_everything:
        return EVERYTHING
    if not principal.user_id:
        return Visibility(api_keys=(principal.key_hash,))
    return Visibility(user_ids=(principal.user_id,), team_ids=tuple(admin_teams(principal, directory)))


def admin_teams(principal: Principal, directory: Directory) -> list[str]:
    return [team["team_id"] for team in directory.teams_of(principal.user_id) if is_team_admin(principal, team)]


def since(now: datetime | None = None) -> str:
    return ((now or datetime.now(UTC)) - timedelta(days=WINDOW_DAYS)).date().isoformat()


def top_keys(views: ActivityViews, directory: Directory, principal: Principal | None,
             limit: int | None) -> list[dict[str, Any]]:
    rows = views.top_keys(visibility(principal, directory), since(), limit)
    for row in rows:
        key = directory.key_by_token(row["api_key"]) or {}
        row.update(key_alias=key.get("key_alias"), key_name=key.get("key_name"))
    return rows


def top_models(views: ActivityViews, directory: Directory, principal: Principal | None,
               limit: int | None) -> list[dict[str, Any]]:
    return views.top_models(visibility(principal, directory), since(), limit)


def end_users(views: ActivityViews, directory: Directory, principal: Principal | None, *, start: datetime | None,
              end: datetime | None, api_key: str | None) -> list[dict[str, Any]]:
    """LiteLLM's defaults: the last 30 days up to now."""
    end = end or datetime.now(UTC)
    start = start or end - timedelta(days=WINDOW_DAYS)
    return views.end_users(visibility(principal, directory), start, end, api_key)


def team_spend(views: ActivityViews, directory: Directory, principal: Principal | None) -> dict[str, Any]:
    """LiteLLM's `/global/spend/teams`: spend per day and team (named by alias, else id), the teams,
    and the ten that spent most."""
    rows = views.team_days(_team_visibility(principal, directory), since())
    days: dict[str, dict[str, Any]] = {}
    totals: dict[str, Decimal] = defaultdict(Decimal)
    for row in rows:
        label = _team_label(directory, row["team_id"])
        day = days.setdefault(row["day"], {"date": row["day"]})
        day[label] = day.get(label, Decimal(0)) + row["spend"]
        totals[label] += row["spend"]
    ranked = sorted(totals.items(), key=lambda item: (-item[1], item[0]))[:TOP_TEAMS]
    return {"daily_spend": list(days.values()), "teams": sorted(totals),
            "total_spend_per_team": [{"team_id": label, "total_spend": spend} for label, spend in ranked]}


def user_activity(views: ActivityViews, directory: Directory, principal: Principal | None, *,
                  user_id: str | None, **filters: Any) -> dict[str, Any]:
    if principal is None or principal.reads_everything:
        seen, users = EVERYTHING, [user_id] if user_id else None
    elif principal.user_id:
        if user_id and user_id != principal.user_id:
            raise PermissionDeniedError("A user may read only their own daily activity.", code="not_allowed")
        seen, users = EVERYTHING, [principal.user_id]
    else:
        if user_id:
            raise PermissionDeniedError("A key of no user may read only its own daily activity.", code="not_allowed")
        seen, users = Visibility(api_keys=(principal.key_hash,)), None
    answer = views.daily_activity("user_id", seen, entities=users, **filters)
    return _named(answer, directory, "user")


def team_activity(views: ActivityViews, directory: Directory, principal: Principal | None, *,
                  team_ids: list[str] | None, **filters: Any) -> dict[str, Any]:
    if principal is not None and not principal.reads_everything:
        team_ids = _administered(principal, directory, team_ids)
    answer = views.daily_activity("team_id", EVERYTHING, entities=team_ids, **filters)
    return _named(answer, directory, "team")


def _administered(principal: Principal, directory: Directory, team_ids: list[str] | None) -> list[str]:
    """The teams asked for (all the principal's when none is), each administered by the principal."""
    mine = admin_teams(principal, directory)
    if not mine:
        raise PermissionDeniedError("Only a proxy admin, a viewer or a team admin can read team activity.",
                                    code="not_allowed")
    foreign = [team_id for team_id in team_ids or () if team_id not in mine]
    if foreign:
        raise PermissionDeniedError(f"Only a proxy admin or an admin of team {foreign[0]!r} can read its"
                                    " daily activity.", code="not_allowed")
    return team_ids or mine


def _team_visibility(principal: Principal | None, directory: Directory) -> Visibility:
    if principal is None or principal.reads_everything:
        return EVERYTHING
    mine = admin_teams(principal, directory)
    if not mine:
        raise PermissionDeniedError("Only a proxy admin, a viewer or a team admin can read spend per team.",
                                    code="not_allowed")
    return Visibility(team_ids=tuple(mine))


def _team_label(directory: Directory, team_id: str) -> str:
    if not team_id:
        return UNASSIGNED
    return (directory.get("team", team_id) or {}).get("team_alias") or team_id


def _named(answer: dict[str, Any], directory: Directory, kind: str) -> dict[str, Any]:
    """Adds the key aliases, and the team aliases of a team's activity, as LiteLLM's metadata."""
    for day in answer["results"]:
        breakdown = day["breakdown"]
        for entry, token in _key_entries(breakdown):
            entry["metadata"]["key_alias"] = (directory.key_by_token(token) or {}).get("key_alias")
        if kind == "team":
            for team_id, entry in breakdown["entities"].items():
                entry["metadata"]["team_alias"] = (directory.get("team", team_id) or {}).get("team_alias")
    return answer


def _key_entries(breakdown: dict[str, Any]) -> Iterable[tuple[dict[str, Any], str]]:
    yield from ((entry, token) for token, entry in breakdown["api_keys"].items())
    for part in ("models", "model_groups", "providers", "entities"):
        for group in breakdown[part].values():
            yield from ((entry, token) for token, entry in group["api_key_breakdown"].items())
