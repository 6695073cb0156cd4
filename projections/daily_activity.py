"""Daily activity: per UTC day of the request's start, team, user, api key, model group, model and
provider, LiteLLM's daily spend counters (the grain of its DailyUserSpend and DailyTeamSpend tables).

Derived from the spend log rows of the requests that ended in the page (`Page.ended_requests`),
so it must be applied after `spend_log` in the runner. `model` is what the provider served
(`provider_model`), or the model group when no provider was reached. A request that did not
succeed (failed, denied, abandoned, broken off) counts as failed. A cache hit is a successful
request without tokens (no provider served it), as in the usage report. Cache-read tokens are the
`cached_tokens` of the provider's usage.

A page costs one statement: the page's totals are summed per row first, as one upsert may not
touch the same row twice.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from moneta.domain.request_record import RequestRecord
from moneta.projections.page import Page
from moneta.projections.view_store import ViewCursor, as_datetime, exact_sum, upsert_sql

TABLES = ("activity_daily",)
DDL = (
    """CREATE TABLE IF NOT EXISTS activity_daily (
        day TEXT NOT NULL,
        team_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        api_key TEXT NOT NULL,
        model_group TEXT NOT NULL,
        model TEXT NOT NULL,
        provider TEXT NOT NULL,
        api_requests BIGINT NOT NULL,
        successful_requests BIGINT NOT NULL,
        failed_requests BIGINT NOT NULL,
        prompt_tokens BIGINT NOT NULL,
        completion_tokens BIGINT NOT NULL,
        total_tokens BIGINT NOT NULL,
        cache_read_input_tokens BIGINT NOT NULL,
        spend {money} NOT NULL,
        PRIMARY KEY (day, team_id, user_id, api_key, model_group, model, provider)
    )""",
    "CREATE INDEX IF NOT EXISTS activity_daily_user ON activity_daily (user_id, day)",
    "CREATE INDEX IF NOT EXISTS activity_daily_team ON activity_daily (team_id, day)",
)
EVENT_TYPES = (RequestRecord.Denied, RequestRecord.Completed, RequestRecord.Interrupted, RequestRecord.Failed,
               RequestRecord.Abandoned, RequestRecord.CacheHit)

GRAIN = ("day", "team_id", "user_id", "api_key", "model_group", "model", "provider")
COUNTERS = ("api_requests", "successful_requests", "failed_requests", "prompt_tokens", "completion_tokens",
            "total_tokens", "cache_read_input_tokens")


def apply_page(cur: ViewCursor, page: Page) -> None:
    counts: dict[tuple[str, ...], Counter[str]] = defaultdict(Counter)
    spends: dict[tuple[str, ...], list[Any]] = defaultdict(list)
    for row in page.ended_requests:
        key = _grain(row)
        counts[key].update(_counts(row))
        spends[key].append(row["spend"])
    if counts:
        cur.executemany(_upsert(cur), [
            (*key, *(counts[key][name] for name in COUNTERS), exact_sum(spends[key])) for key in counts])


def _grain(row: dict[str, Any]) -> tuple[str, ...]:
    return (as_datetime(row["start_time"]).date().isoformat(), row["team_id"] or "", row["user_id"] or "",
            row["api_key"], row["model_group"], row["provider_model"] or row["model_group"],
            row["custom_llm_provider"] or "")


def _counts(row: dict[str, Any]) -> dict[str, int]:
    succeeded = row["status"] == "success"
    counts = {"api_requests": 1, "successful_requests": int(succeeded), "failed_requests": int(not succeeded)}
    if not row["metadata"].get("cache_hit"):
        counts.update(prompt_tokens=row["prompt_tokens"], completion_tokens=row["completion_tokens"],
                      total_tokens=row["total_tokens"],
                      cache_read_input_tokens=row["metadata"].get("cached_tokens") or 0)
    return counts


def _upsert(cur: ViewCursor) -> str:
    added = [f"{name} = activity_daily.{name} + excluded.{name}" for name in COUNTERS]
    added.append(f"spend = {cur.money_add('activity_daily.spend', 'excluded.spend')}")
    return upsert_sql("activity_daily", (*GRAIN, *COUNTERS, "spend"), key=GRAIN, updates=added)
