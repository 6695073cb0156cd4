"""The spend log view: one row per request, in LiteLLM's spend-log vocabulary.

Admitted opens the row as 'pending' (in flight; queries leave those out), each AttemptFailed
counts an attempt and names the deployment tried, and the outcome event completes the row.
A Denied request is a whole row at once.
"""
from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from moneta.domain.request_record import RequestRecord
from moneta.projections.view_store import ViewCursor, as_datetime

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
        metadata {json} NOT NULL
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
)

_OPEN_COLUMNS = "request_id, call_type, api_key, end_user, model, model_group, start_time"


def apply(cur: ViewCursor, event: Any) -> None:
    if isinstance(event, RequestRecord.Admitted):
        _open(cur, event, status="pending", metadata={})
    elif isinstance(event, RequestRecord.Denied):
        _deny(cur, event)
    elif isinstance(event, RequestRecord.AttemptFailed):
        _count_attempt(cur, event)
    elif isinstance(event, RequestRecord.Completed):  # Interrupted too: it is a subclass
        _complete(cur, event)
    elif isinstance(event, RequestRecord.Failed):
        _fail(cur, event)


def _open(cur: ViewCursor, event: Any, *, status: str, metadata: dict[str, Any]) -> None:
    cur.execute(
        f"INSERT INTO spend_logs ({_OPEN_COLUMNS}, status, metadata) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            str(event.originator_id),
            event.call_type,
            event.key_hash,
            event.end_user,
            event.model_group,
            event.model_group,
            event.timestamp,
            status,
            json.dumps(metadata),
        ),
    )


def _deny(cur: ViewCursor, event: Any) -> None:
    _open(cur, event, status="denied", metadata={"code": event.code, "reason": event.reason})
    cur.execute(
        "UPDATE spend_logs SET end_time = ?, error_type = ?, status_code = ? WHERE request_id = ?",
        (event.timestamp, event.error_type, event.status_code, str(event.originator_id)),
    )


def _count_attempt(cur: ViewCursor, event: Any) -> None:
    cur.execute(
        "UPDATE spend_logs SET attempts = attempts + 1, model_id = ?, custom_llm_provider = ?,"
        " provider_model = ? WHERE request_id = ?",
        (event.deployment_id, event.provider, event.provider_model, str(event.originator_id)),
    )


def _complete(cur: ViewCursor, event: Any) -> None:
    interrupted = isinstance(event, RequestRecord.Interrupted)
    usage = event.usage
    prompt, completion = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
    metadata = {
        "usage_estimated": bool(getattr(event, "usage_estimated", False)),
        "finish_reason": event.finish_reason,
        "latency_ms": event.latency_ms,
        "first_token_ms": event.first_token_ms,
        "cached_tokens": usage.get("cached_tokens", 0),
        "reasoning_tokens": usage.get("reasoning_tokens", 0),
    }
    cur.execute(
        "UPDATE spend_logs SET model_id = ?, custom_llm_provider = ?, provider_model = ?,"
        " end_time = ?, completion_start_time = ?, prompt_tokens = ?, completion_tokens = ?,"
        " total_tokens = ?, spend = ?, status = ?, price_source = ?, metadata = ? WHERE request_id = ?",
        (
            event.deployment_id,
            event.provider,
            event.provider_model,
            event.timestamp,
            _first_token_time(cur, event),
            prompt,
            completion,
            prompt + completion,
            event.cost,
            "client_disconnected" if interrupted else "success",
            event.price_source,
            json.dumps(metadata),
            str(event.originator_id),
        ),
    )


def _fail(cur: ViewCursor, event: Any) -> None:
    cur.execute(
        "UPDATE spend_logs SET end_time = ?, status = 'failure', error_type = ?, status_code = ?,"
        " metadata = ? WHERE request_id = ?",
        (
            event.timestamp,
            event.error_type,
            event.status_code,
            json.dumps({"reason": event.reason}),
            str(event.originator_id),
        ),
    )


def _first_token_time(cur: ViewCursor, event: Any) -> Any:
    if event.first_token_ms is None:
        return None
    row = cur.execute("SELECT start_time FROM spend_logs WHERE request_id = ?", (str(event.originator_id),)).one()
    return as_datetime(row["start_time"]) + timedelta(milliseconds=event.first_token_ms)
