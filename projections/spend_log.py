"""The spend log view: one row per request, in LiteLLM's spend-log vocabulary.

Admitted opens the row as 'pending' (in flight; queries leave those out), each AttemptFailed
counts an attempt and names the deployment tried, and the outcome event completes the row.
A Denied request is a whole row at once. A CacheHit is a success at zero spend, with the cached
answer's tokens and `cache_hit` in its metadata (as LiteLLM's spend log has a cache_hit column).

A page costs two statements: one read of the rows its events touch, then one upsert of those
rows, brought up to date in memory event by event.
"""
from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal
from typing import Any

from moneta.domain.request_record import RequestRecord
from moneta.projections.page import Page
from moneta.projections.view_store import ViewCursor, as_datetime, upsert_sql

TABLES = ("spend_logs",)
DDL = (
    """CREATE TABLE IF NOT EXISTS spend_logs (
        request_id TEXT PRIMARY KEY,
        call_type TEXT NOT NULL,
        api_key TEXT NOT NULL,
        end_user TEXT NOT NULL,
        model TEXT NOT NULL,
        model_group TEXT NOT NULL,
        model_id TEXT,
        custom_llm_provider TEXT,
        provider_model TEXT,
        start_time {timestamp} NOT NULL,
        end_time {timestamp},
        completion_start_time {timestamp},
        prompt_tokens BIGINT NOT NULL DEFAULT 0,
        completion_tokens BIGINT NOT NULL DEFAULT 0,
        total_tokens BIGINT NOT NULL DEFAULT 0,
        spend {money} NOT NULL DEFAULT 0,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        error_type TEXT,
        status_code INTEGER,
        price_source TEXT,
        metadata {json} NOT NULL,
        team_id TEXT,
        user_id TEXT,
        askii {money}
    )""",
    "CREATE INDEX IF NOT EXISTS spend_logs_start_time ON spend_logs (start_time)",
    "CREATE INDEX IF NOT EXISTS spend_logs_api_key ON spend_logs (api_key, start_time)",
)
EVENT_TYPES = (
    RequestRecord.Admitted,
    RequestRecord.Denied,
    RequestRecord.AttemptFailed,
    RequestRecord.Completed,
    RequestRecord.Interrupted,
    RequestRecord.Failed,
    RequestRecord.Abandoned,
    RequestRecord.CacheHit,
)

COLUMNS = (
    "request_id", "call_type", "api_key", "end_user", "model", "model_group", "model_id", "custom_llm_provider",
    "provider_model", "start_time", "end_time", "completion_start_time", "prompt_tokens", "completion_tokens",
    "total_tokens", "spend", "status", "attempts", "error_type", "status_code", "price_source", "metadata",
    "team_id", "user_id", "askii",
)
_METADATA = COLUMNS.index("metadata")
# Absent from spend logs made by older versions: team_id and user_id before virtual keys, askii before askii.
_ADDED_COLUMNS = {"team_id": "TEXT", "user_id": "TEXT", "askii": "{money}"}


def upgrade(cur: ViewCursor) -> None:
    """Brings a spend log made by an older version up to DDL."""
    present = cur.columns("spend_logs")
    for column, kind in _ADDED_COLUMNS.items():
        if column not in present:
            cur.execute(cur.ddl(f"ALTER TABLE spend_logs ADD COLUMN {column} {kind}"))
    cur.execute("CREATE INDEX IF NOT EXISTS spend_logs_team ON spend_logs (team_id, start_time)")


_UPSERT = upsert_sql("spend_logs", COLUMNS, key=("request_id",))
_OUTCOMES = (RequestRecord.Denied, RequestRecord.Completed, RequestRecord.Failed, RequestRecord.Abandoned,
             RequestRecord.CacheHit)


def apply_page(cur: ViewCursor, page: Page) -> None:
    events = page.of(EVENT_TYPES)
    if not events:
        return
    rows = _read(cur, sorted({page.stream_id(event) for event in events}))
    for event in events:
        _apply(rows, event, page.stream_id(event))
    cur.executemany(_UPSERT, [_stored(row) for row in rows.values()])
    ended = [page.stream_id(event) for event in events if isinstance(event, _OUTCOMES)]
    page.ended_requests = [rows[request_id] for request_id in ended if request_id in rows]


def _read(cur: ViewCursor, request_ids: list[str]) -> dict[str, dict[str, Any]]:
    found = cur.execute(f"SELECT {', '.join(COLUMNS)} FROM spend_logs WHERE {cur.any_of('request_id')}",
                        (request_ids,)).all()
    for row in found:
        if isinstance(row["metadata"], str):  # SQLite keeps JSON as text
            row["metadata"] = json.loads(row["metadata"])
    return {row["request_id"]: row for row in found}


def _stored(row: dict[str, Any]) -> list[Any]:
    values = [row[column] for column in COLUMNS]
    values[_METADATA] = json.dumps(values[_METADATA])
    return values


def _apply(rows: dict[str, dict[str, Any]], event: Any, request_id: str) -> None:
    if isinstance(event, RequestRecord.Admitted):
        rows[request_id] = _opened(event, request_id, status="pending", metadata={})
        return
    if isinstance(event, RequestRecord.Denied):
        rows[request_id] = _opened(event, request_id, status="denied",
                                   metadata={"code": event.code, "reason": event.reason})
        rows[request_id].update(end_time=event.timestamp, error_type=event.error_type, status_code=event.status_code)
        return
    row = rows.get(request_id)
    if row is None:  # never opened: nothing to update
        return
    if isinstance(event, RequestRecord.AttemptFailed):
        row.update(attempts=row["attempts"] + 1, model_id=event.deployment_id, custom_llm_provider=event.provider,
                   provider_model=event.provider_model)
    elif isinstance(event, RequestRecord.Completed):  # Interrupted too: it is a subclass
        row.update(_completed(event, row["start_time"]))
    elif isinstance(event, RequestRecord.Failed):
        row.update(end_time=event.timestamp, status="failure", error_type=event.error_type,
                   status_code=event.status_code, metadata={"reason": event.reason})
    elif isinstance(event, RequestRecord.CacheHit):
        row.update(_cache_hit(event))
    elif isinstance(event, RequestRecord.Abandoned):
        row.update(end_time=event.timestamp, status="abandoned", model_id=event.deployment_id or row["model_id"],
                   metadata={"reason": event.reason, "instance": event.instance})


def _outcome(event: Any) -> dict[str, Any]:
    """A stream the provider broke off counts as a failure (with what it streamed until then)."""
    if not isinstance(event, RequestRecord.Interrupted):
        return {"status": "success"}
    if event.cause == "upstream_error":
        return {"status": "failure", "error_type": event.error_type, "status_code": event.status_code}
    return {"status": "client_disconnected"}


def _cache_hit(event: Any) -> dict[str, Any]:
    prompt, completion = event.usage.get("prompt_tokens", 0), event.usage.get("completion_tokens", 0)
    return {
        "end_time": event.timestamp,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "spend": event.cost,
        "status": "success",
        "metadata": {"cache_hit": True, "cache_key": event.cache_key, "filled_by": event.filled_by,
                     "finish_reason": event.finish_reason, "latency_ms": event.latency_ms},
    }


def _opened(event: Any, request_id: str, *, status: str, metadata: dict[str, Any]) -> dict[str, Any]:
    row = dict.fromkeys(COLUMNS)
    row.update(
        request_id=request_id,
        call_type=event.call_type,
        api_key=event.key_hash,
        end_user=event.end_user,
        model=event.model_group,
        model_group=event.model_group,
        start_time=event.timestamp,
        team_id=(event.principal or {}).get("team_id") or None,
        user_id=(event.principal or {}).get("user_id") or None,
        prompt_tokens=0,
        completion_tokens=0,
        total_tokens=0,
        spend=Decimal(0),
        status=status,
        attempts=0,
        metadata=metadata,
    )
    return row


def _completed(event: Any, start_time: Any) -> dict[str, Any]:
    usage = event.usage
    prompt, completion = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
    first_token = None
    if event.first_token_ms is not None:
        first_token = as_datetime(start_time) + timedelta(milliseconds=event.first_token_ms)
    return {
        "model_id": event.deployment_id,
        "custom_llm_provider": event.provider,
        "provider_model": event.provider_model,
        "end_time": event.timestamp,
        "completion_start_time": first_token,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "spend": event.cost,
        "askii": event.askii,  # None for calls settled before askii
        **_outcome(event),
        "price_source": event.price_source,
        "metadata": {
            "usage_estimated": bool(getattr(event, "usage_estimated", False)),
            "finish_reason": event.finish_reason,
            "latency_ms": event.latency_ms,
            "first_token_ms": event.first_token_ms,
            "cached_tokens": usage.get("cached_tokens", 0),
            "reasoning_tokens": usage.get("reasoning_tokens", 0),
        },
    }
