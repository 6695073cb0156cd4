"""What the spend API asks of the views. Money comes back as Decimal; JSON is the caller's business."""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from moneta.domain.redaction import key_hash
from moneta.projections.usage_report import COUNTERS
from moneta.projections.view_store import ViewStore, as_datetime, as_decimal

MAX_PAGE_SIZE = 1000
_TOTAL_COLUMNS = ("api_key", "team_id", "user_id", "end_user")
REPORT_GROUPS = {"model": ("models", "model"), "api_key": ("api_keys", "api_key"), "customer": ("customers", "end_user")}
_LOG_COLUMNS = (
    "request_id, call_type, api_key, end_user, model, model_group, model_id, custom_llm_provider,"
    " provider_model, start_time, end_time, completion_start_time, prompt_tokens, completion_tokens,"
    " total_tokens, spend, status, attempts, error_type, status_code, price_source, metadata, askii"
)


@dataclass(frozen=True)
class SpendLogPage:
    rows: list[dict[str, Any]]
    total: int
    page: int
    page_size: int

    @property
    def total_pages(self) -> int:
        return -(-self.total // self.page_size)


class SpendQueries:
    def __init__(self, store: ViewStore) -> None:
        self.store = store

    def spend_logs(
        self,
        *,
        start_date: str | None = None,
        end_date: str | None = None,
        api_key: str | None = None,
        model: str | None = None,
        request_id: str | None = None,
        user: str | None = None,
        page: int = 1,
        page_size: int = 50,
    ) -> SpendLogPage:
        """Ended requests, newest first. `api_key` may be the raw key or its sha256 hash."""
        if page < 1 or not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page must be >= 1 and page_size between 1 and {MAX_PAGE_SIZE}")
        where, params = _time_filter("start_time", start_date, end_date)
        where.append("status <> 'pending'")
        if api_key:
            where.append("api_key IN (?, ?)")
            params += [api_key, key_hash(api_key)]
        for column, value in (("model", model), ("request_id", request_id), ("end_user", user)):
            if value:
                where.append(f"{column} = ?")
                params.append(value)
        condition = " AND ".join(where)
        with self.store.reading() as cur:
            total = cur.execute(f"SELECT COUNT(*) AS n FROM spend_logs WHERE {condition}", params).one()["n"]
            rows = cur.execute(
                f"SELECT {_LOG_COLUMNS} FROM spend_logs WHERE {condition}"
                " ORDER BY start_time DESC, request_id DESC LIMIT ? OFFSET ?",
                [*params, page_size, (page - 1) * page_size],
            ).all()
        return SpendLogPage([_log_row(row) for row in rows], int(total), page, page_size)

    def total_spend(self, column: str, value: str) -> Decimal:
        """All the spend of one key (`api_key`, its hash), team, user or end user, in USD."""
        if column not in _TOTAL_COLUMNS:
            raise ValueError(f"no spend total by {column!r}")
        with self.store.reading() as cur:
            row = cur.execute(f"SELECT {cur.money_sum('spend')} AS spend FROM spend_logs WHERE {column} = ?",
                              (value,)).one()
        return as_decimal((row or {}).get("spend") or 0)

    def spend_report(
        self, *, start_date: str | None = None, end_date: str | None = None, group_by: str = "model"
    ) -> list[dict[str, Any]]:
        """Spend per UTC day (of the outcome), broken down by model, api key or customer (end user)."""
        if group_by == "team":
            raise ValueError("spend by team is not available: the ledger does not record teams on requests yet")
        if group_by not in REPORT_GROUPS:
            raise ValueError(f"group_by must be one of {', '.join(REPORT_GROUPS)}")
        plural, column = REPORT_GROUPS[group_by]
        where, params = _day_filter(start_date, end_date)
        sums = ", ".join(f"SUM({name}) AS {name}" for name in COUNTERS)
        with self.store.reading() as cur:
            spend = cur.money_sum("spend")
            rows = cur.execute(
                f"SELECT day, {column} AS grp, {sums}, {spend} AS spend FROM usage_daily"
                f" WHERE {' AND '.join(where)} GROUP BY day, {column} ORDER BY day, {column}",
                params,
            ).all()
        return _by_day(rows, plural, group_by)


def _log_row(row: dict[str, Any]) -> dict[str, Any]:
    metadata = json.loads(row["metadata"]) if isinstance(row["metadata"], str) else row["metadata"]
    return {
        "request_id": row["request_id"],
        "call_type": row["call_type"],
        "api_key": row["api_key"],
        "user": row["end_user"],
        "model": row["model"],
        "model_group": row["model_group"],
        "model_id": row["model_id"],
        "custom_llm_provider": row["custom_llm_provider"],
        "provider_model": row["provider_model"],
        "startTime": as_datetime(row["start_time"]),
        "endTime": as_datetime(row["end_time"]),
        "completionStartTime": as_datetime(row["completion_start_time"]),
        "prompt_tokens": int(row["prompt_tokens"]),
        "completion_tokens": int(row["completion_tokens"]),
        "total_tokens": int(row["total_tokens"]),
        "spend": as_decimal(row["spend"]),
        "askii": None if row["askii"] is None else str(as_decimal(row["askii"])),  # exact text, 6 places
        "status": row["status"],
        "attempts": int(row["attempts"]),
        "error_type": row["error_type"],
        "status_code": row["status_code"],
        "price_source": row["price_source"],
        "cache_hit": bool(metadata.get("cache_hit")),
        "metadata": metadata,
    }


def _by_day(rows: list[dict[str, Any]], plural: str, group_by: str) -> list[dict[str, Any]]:
    days: dict[str, dict[str, Any]] = {}
    for row in rows:
        day = days.setdefault(row["day"], {"group_by_day": row["day"], "total_spend": as_decimal(0), plural: []})
        entry = {group_by: row["grp"], "total_spend": as_decimal(row["spend"])}
        entry.update((name, int(row[name])) for name in COUNTERS)
        day[plural].append(entry)
        day["total_spend"] += entry["total_spend"]
    return list(days.values())


def _time_filter(column: str, start: str | None, end: str | None) -> tuple[list[str], list[Any]]:
    """A date alone covers its whole UTC day; a full ISO time is an inclusive bound."""
    where: list[str] = ["1 = 1"]
    params: list[Any] = []
    if start:
        where.append(f"{column} >= ?")
        params.append(_parse(start, "start_date"))
    if end:
        bound = _parse(end, "end_date")
        if _is_date(end):
            where.append(f"{column} < ?")
            params.append(bound + timedelta(days=1))
        else:
            where.append(f"{column} <= ?")
            params.append(bound)
    return where, params


def _day_filter(start: str | None, end: str | None) -> tuple[list[str], list[Any]]:
    where: list[str] = ["1 = 1"]
    params: list[Any] = []
    if start:
        where.append("day >= ?")
        params.append(_parse(start, "start_date").date().isoformat())
    if end:
        where.append("day <= ?")
        params.append(_parse(end, "end_date").date().isoformat())
    return where, params


def _is_date(value: str) -> bool:
    return len(value) == 10


def _parse(value: str, name: str) -> datetime:
    try:
        if _is_date(value):
            return datetime.combine(date.fromisoformat(value), time(), tzinfo=UTC)
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{name} must be YYYY-MM-DD or an ISO 8601 time, got {value!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
