"""The usage report: per UTC day of the outcome, api key, end user and model, what was asked and spent.

It is derived from the spend log rows of the requests that ended in the page (`Page.ended_requests`),
so it must be applied after `spend_log` in the runner. Denied requests count as requests with
zero spend; the end user is part of the grain so that the report can group by customer. A cache
hit counts as a successful request and in `cache_hits`, without tokens (no provider served it).

A page costs one statement: the page's totals are summed per row of the report first, because
one upsert may not touch the same row twice.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from moneta.domain.request_record import RequestRecord
from moneta.projections.page import Page
from moneta.projections.view_store import ViewCursor, as_datetime, exact_sum, upsert_sql

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
        cache_hits BIGINT NOT NULL DEFAULT 0,
        prompt_tokens BIGINT NOT NULL,
        completion_tokens BIGINT NOT NULL,
        total_tokens BIGINT NOT NULL,
        spend {money} NOT NULL,
        PRIMARY KEY (day, api_key, end_user, model)
    )""",
)
EVENT_TYPES = (RequestRecord.Denied, RequestRecord.Completed, RequestRecord.Interrupted, RequestRecord.Failed,
               RequestRecord.Abandoned, RequestRecord.CacheHit)

COUNTERS = (
    "requests",
    "successful_requests",
    "failed_requests",
    "interrupted_requests",
    "denied_requests",
    "cache_hits",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
)
_STATUS_COUNTER = {
    "success": "successful_requests",
    "failure": "failed_requests",
    "client_disconnected": "interrupted_requests",
    "denied": "denied_requests",
    "abandoned": "failed_requests",  # its process died: a failure as the caller saw it
}
_KEY = ("day", "api_key", "end_user", "model")


def upgrade(cur: ViewCursor) -> None:
    """Brings a report made before cache hits were counted up to DDL."""
    if "cache_hits" not in cur.columns("usage_daily"):
        cur.execute("ALTER TABLE usage_daily ADD COLUMN cache_hits BIGINT NOT NULL DEFAULT 0")


def apply_page(cur: ViewCursor, page: Page) -> None:
    counts: dict[tuple[str, ...], Counter[str]] = defaultdict(Counter)
    spends: dict[tuple[str, ...], list[Any]] = defaultdict(list)
    for row in page.ended_requests:
        key = (as_datetime(row["end_time"]).date().isoformat(), row["api_key"], row["end_user"], row["model"])
        counts[key].update(_counts(row))
        spends[key].append(row["spend"])
    if counts:
        cur.executemany(_upsert(cur), [
            (*key, *(counts[key][name] for name in COUNTERS), exact_sum(spends[key])) for key in counts])


def _counts(row: dict[str, Any]) -> dict[str, int]:
    counts = dict.fromkeys(COUNTERS, 0)
    counts.update(requests=1)
    counts[_STATUS_COUNTER[row["status"]]] = 1
    if row["metadata"].get("cache_hit"):
        counts.update(cache_hits=1)
    else:
        counts.update(prompt_tokens=row["prompt_tokens"], completion_tokens=row["completion_tokens"],
                      total_tokens=row["total_tokens"])
    return counts


def _upsert(cur: ViewCursor) -> str:
    added = [f"{name} = usage_daily.{name} + excluded.{name}" for name in COUNTERS]
    added.append(f"spend = {cur.money_add('usage_daily.spend', 'excluded.spend')}")
    return upsert_sql("usage_daily", (*_KEY, *COUNTERS, "spend"), key=_KEY, updates=added)
