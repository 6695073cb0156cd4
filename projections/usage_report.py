"""The usage report: per UTC day of the outcome, api key, end user and model, what was asked and spent.

It is derived from the spend log row the same page has just completed, so it must be applied
after `spend_log` in the runner. Denied requests count as requests with zero spend; the end
user is part of the grain so that the report can group by customer.
"""
from __future__ import annotations

from typing import Any

from moneta.domain.request_record import RequestRecord
from moneta.projections.view_store import ViewCursor, as_datetime

TABLES = ("usage_daily",)
DDL = (
    """CREATE TABLE IF NOT EXISTS usage_daily (
        day TEXT NOT NULL,
        api_key TEXT NOT NULL,
        end_user TEXT NOT NULL,
        model TEXT NOT NULL,
        requests BIGINT NOT NULL,
        successful_requests BIGINT NOT NULL,
        failed_requests BIGINT NOT NULL,
        interrupted_requests BIGINT NOT NULL,
        denied_requests BIGINT NOT NULL,
        prompt_tokens BIGINT NOT NULL,
        completion_tokens BIGINT NOT NULL,
        total_tokens BIGINT NOT NULL,
        spend {money} NOT NULL,
        PRIMARY KEY (day, api_key, end_user, model)
    )""",
)
EVENT_TYPES = (RequestRecord.Denied, RequestRecord.Completed, RequestRecord.Interrupted, RequestRecord.Failed)

COUNTERS = (
    "requests",
    "successful_requests",
    "failed_requests",
    "interrupted_requests",
    "denied_requests",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
)
_STATUS_COUNTER = {
    "success": "successful_requests",
    "failure": "failed_requests",
    "client_disconnected": "interrupted_requests",
    "denied": "denied_requests",
}


def apply(cur: ViewCursor, event: Any) -> None:
    if not isinstance(event, EVENT_TYPES):
        return
    row = cur.execute(
        "SELECT api_key, end_user, model, end_time, status, prompt_tokens, completion_tokens,"
        " total_tokens, spend FROM spend_logs WHERE request_id = ?",
        (str(event.originator_id),),
    ).one()
    _add(cur, row)


def _add(cur: ViewCursor, row: dict[str, Any]) -> None:
    counts = {name: 0 for name in COUNTERS}
    counts.update(requests=1, prompt_tokens=row["prompt_tokens"], completion_tokens=row["completion_tokens"])
    counts["total_tokens"] = row["total_tokens"]
    counts[_STATUS_COUNTER[row["status"]]] = 1
    updates = ", ".join(f"{name} = usage_daily.{name} + excluded.{name}" for name in COUNTERS)
    cur.execute(
        f"INSERT INTO usage_daily (day, api_key, end_user, model, {', '.join(COUNTERS)}, spend)"
        f" VALUES (?, ?, ?, ?, {', '.join('?' for _ in COUNTERS)}, ?)"
        f" ON CONFLICT (day, api_key, end_user, model) DO UPDATE SET {updates},"
        f" spend = {cur.money_add('usage_daily.spend', 'excluded.spend')}",
        (
            as_datetime(row["end_time"]).date().isoformat(),
            row["api_key"],
            row["end_user"],
            row["model"],
            *counts.values(),
            row["spend"],
        ),
    )
