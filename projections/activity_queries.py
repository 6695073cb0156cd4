"""What LiteLLM's global spend and daily activity routes ask of the views, limited to what the
reader may see (a `Visibility`). Money comes back as Decimal, keys as their sha256 hash.

Totals are sorted in Python: SQLite keeps money as text, which SQL would sort as text.
"""
from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any

from moneta.domain.redaction import key_hash
from moneta.domain.spend_visibility import Visibility
from moneta.projections.daily_activity import COUNTERS, GRAIN
from moneta.projections.view_store import ViewStore, as_decimal

END_USERS_LIMIT = 100  # LiteLLM's top end users
METRICS = ("spend", "prompt_tokens", "completion_tokens", "cache_read_input_tokens", "total_tokens",
           "successful_requests", "failed_requests", "api_requests")
_BY = {"user_id": "user_id", "team_id": "team_id"}


class ActivityQueries:
    def __init__(self, store: ViewStore) -> None:
        self.store = store

    def top_keys(self, visibility: Visibility, since: str, limit: int | None) -> list[dict[str, Any]]:
        """Spend per api key from the day `since` on, highest first."""
        return _top(self._totals("api_key", visibility, since), "api_key", limit)

    def top_models(self, visibility: Visibility, since: str, limit: int | None) -> list[dict[str, Any]]:
        """Spend per model group (the spend log's `model`) from the day `since` on, highest first."""
        return _top(self._totals("model_group", visibility, since), "model", limit)

    def team_days(self, visibility: Visibility, since: str) -> list[dict[str, Any]]:
        """Spend per day and team ('' for none) from the day `since` on, oldest day first."""
        where, params = _visible(self.store, visibility)
        with self.store.reading() as cur:
            rows = cur.execute(
                f"SELECT day, team_id, {cur.money_sum('spend')} AS spend FROM activity_daily"
                f" WHERE day >= ? AND ({where}) GROUP BY day, team_id ORDER BY day, team_id", [since, *params]).all()
        return [{"day": row["day"], "team_id": row["team_id"], "spend": as_decimal(row["spend"])} for row in rows]

    def end_users(self, visibility: Visibility, start: datetime, end: datetime,
                  api_key: str | None) -> list[dict[str, Any]]:
        """The end users who spent most in [start, end), with their request counts."""
        where, params = _visible(self.store, visibility)
        condition = f"start_time >= ? AND start_time < ? AND status <> 'pending' AND ({where})"
        params = [start, end, *params]
        if api_key:
            condition += " AND api_key IN (?, ?)"
            params += [api_key, key_hash(api_key)]
        with self.store.reading() as cur:
            rows = cur.execute(f"SELECT end_user, COUNT(*) AS total_count, {cur.money_sum('spend')} AS total_spend"
                               f" FROM spend_logs WHERE {condition} GROUP BY end_user", params).all()
        found = [{"end_user": row["end_user"], "total_count": int(row["total_count"]),
                  "total_spend": as_decimal(row["total_spend"])} for row in rows]
        return sorted(found, key=lambda row: (-row["total_spend"], row["end_user"]))[:END_USERS_LIMIT]

    def daily_activity(self, by: str, visibility: Visibility, *, start_date: str, end_date: str,
                       entities: Iterable[str] | None = None, exclude: Iterable[str] = (), model: str | None = None,
                       api_key: str | None = None, page: int = 1, page_size: int = 50) -> dict[str, Any]:
        """LiteLLM's SpendAnalyticsPaginatedResponse, by user (`user_id`) or team (`team_id`): its rows
        (one per day, entity, key, model and provider) paged newest day first, as LiteLLM pages them,
        grouped by day; the metadata totals are those of the page."""
        column = _BY[by]
        where, params = _visible(self.store, visibility)
        where = f"day >= ? AND day <= ? AND ({where})"
        params = [start_date, end_date, *params]
        where, params = _filters(self.store, where, params, column, entities, exclude, model, api_key)
        with self.store.reading() as cur:
            total = int(cur.execute(f"SELECT COUNT(*) AS n FROM activity_daily WHERE {where}", params).one()["n"])
            rows = cur.execute(
                f"SELECT {', '.join((*GRAIN, *COUNTERS, 'spend'))} FROM activity_daily WHERE {where}"
                f" ORDER BY day DESC, {', '.join(GRAIN[1:])} LIMIT ? OFFSET ?",
                [*params, page_size, (page - 1) * page_size]).all()
        return _paginated(rows, column, total, page, page_size)

    def _totals(self, column: str, visibility: Visibility, since: str) -> list[dict[str, Any]]:
        where, params = _visible(self.store, visibility)
        with self.store.reading() as cur:
            return cur.execute(
                f"SELECT {column} AS name, {cur.money_sum('spend')} AS total_spend FROM activity_daily"
                f" WHERE day >= ? AND ({where}) GROUP BY {column}", [since, *params]).all()


def _visible(store: ViewStore, visibility: Visibility) -> tuple[str, list[Any]]:
    """A condition on rows with api_key, user_id and team_id columns, and its parameters."""
    if visibility.everything:
        return "1 = 1", []
    listed = [(column, list(values)) for column, values in (
        ("api_key", visibility.api_keys), ("user_id", visibility.user_ids), ("team_id", visibility.team_ids))
        if values]
    if not listed:
        return "1 = 0", []
    return " OR ".join(store.any_of(column) for column, _ in listed), [values for _, values in listed]


def _filters(store: ViewStore, where: str, params: list[Any], column: str, entities: Iterable[str] | None,
             exclude: Iterable[str], model: str | None, api_key: str | None) -> tuple[str, list[Any]]:
    if column == "team_id":
        where += " AND team_id <> ''"
    if entities is not None:
        where += f" AND {store.any_of(column)}"
        params.append(list(entities))
    for excluded in exclude:
        where += f" AND {column} <> ?"
        params.append(excluded)
    if model:
        where += " AND (model = ? OR model_group = ?)"
        params += [model, model]
    if api_key:
        where += " AND api_key IN (?, ?)"
        params += [api_key, key_hash(api_key)]
    return where, params


def _top(rows: list[dict[str, Any]], name: str, limit: int | None) -> list[dict[str, Any]]:
    found = [{name: row["name"], "total_spend": as_decimal(row["total_spend"])} for row in rows]
    found.sort(key=lambda row: (-row["total_spend"], row[name]))
    return found if limit is None else found[:limit]


def _metrics(row: dict[str, Any] | None = None) -> dict[str, Any]:
    if row is None:
        return {name: Decimal(0) if name == "spend" else 0 for name in METRICS}
    return {name: as_decimal(row["spend"]) if name == "spend" else int(row[name]) for name in METRICS}


def _add(total: dict[str, Any], row: dict[str, Any]) -> None:
    for name, value in row.items():
        total[name] += value


def _paginated(rows: list[dict[str, Any]], column: str, total: int, page: int, page_size: int) -> dict[str, Any]:
    days: dict[str, dict[str, Any]] = {}
    totals = _metrics()
    for row in rows:
        metrics = _metrics(row)
        day = days.setdefault(row["day"], _empty_day(row["day"]))
        _add(day["metrics"], metrics)
        _add(totals, metrics)
        _breakdown(day["breakdown"], row, column, metrics)
    metadata = {f"total_{name}" if name != "total_tokens" else name: value for name, value in totals.items()}
    metadata.update(page=page, total_pages=-(-total // page_size), has_more=page * page_size < total)
    return {"results": list(days.values()), "metadata": metadata}


def _empty_day(day: str) -> dict[str, Any]:
    return {"date": day, "metrics": _metrics(),
            "breakdown": {"models": {}, "model_groups": {}, "providers": {}, "api_keys": {}, "entities": {}}}


def _breakdown(breakdown: dict[str, Any], row: dict[str, Any], column: str, metrics: dict[str, Any]) -> None:
    key = row["api_key"]
    for part, name in (("models", row["model"]), ("model_groups", row["model_group"]),
                       ("providers", row["provider"] or "unknown"), ("entities", row[column] or "Unassigned")):
        entry = breakdown[part].setdefault(name, {"metrics": _metrics(), "metadata": {}, "api_key_breakdown": {}})
        _add(entry["metrics"], metrics)
        _add(entry["api_key_breakdown"].setdefault(key, _key_entry(row))["metrics"], metrics)
    _add(breakdown["api_keys"].setdefault(key, _key_entry(row))["metrics"], metrics)


def _key_entry(row: dict[str, Any]) -> dict[str, Any]:
    return {"metrics": _metrics(), "metadata": {"team_id": row["team_id"] or None}}
