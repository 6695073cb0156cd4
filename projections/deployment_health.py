"""The deployment health view: per deployment, successes and failures, latency percentiles, and
the cooldown in force, from the requests' streams and the deployments' own health streams.

Latencies are counted in buckets a quarter of a doubling wide (about 19%), so the view stays
small however long it runs and a percentile is known to within one bucket.

A page costs at most three statements: one read of the deployments its events touch, one upsert
of those rows brought up to date in memory, and one upsert adding the page's latency counts.
"""
from __future__ import annotations

import math
from collections import Counter
from typing import Any

from moneta.domain.deployment_health import DeploymentHealth
from moneta.domain.request_record import RequestRecord
from moneta.projections.page import Page
from moneta.projections.view_store import ViewCursor, ViewStore, as_datetime, upsert_sql

PERCENTILES = (50, 90, 99)
_BUCKETS_PER_DOUBLING = 4
TABLES = ("deployment_health", "deployment_latency_buckets")
DDL = (
    """CREATE TABLE IF NOT EXISTS deployment_health (
        deployment_id TEXT PRIMARY KEY,
        stream_id TEXT UNIQUE,
        model_group TEXT,
        success_count BIGINT NOT NULL DEFAULT 0,
        failure_count BIGINT NOT NULL DEFAULT 0,
        cooldown_count BIGINT NOT NULL DEFAULT 0,
        cooling_until {timestamp},
        last_error_type TEXT,
        last_status_code INTEGER,
        last_cooldown_reason TEXT,
        updated_at {timestamp}
    )""",
    """CREATE TABLE IF NOT EXISTS deployment_latency_buckets (
        deployment_id TEXT NOT NULL,
        bucket INTEGER NOT NULL,
        requests BIGINT NOT NULL,
        PRIMARY KEY (deployment_id, bucket)
    )""",
)
EVENT_TYPES = (
    RequestRecord.Completed,
    RequestRecord.Interrupted,
    RequestRecord.AttemptFailed,
    DeploymentHealth.Registered,
    DeploymentHealth.CooledDown,
    DeploymentHealth.Recovered,
)
COLUMNS = (
    "deployment_id", "stream_id", "model_group", "success_count", "failure_count", "cooldown_count",
    "cooling_until", "last_error_type", "last_status_code", "last_cooldown_reason", "updated_at",
)
_UPSERT = upsert_sql("deployment_health", COLUMNS, key=("deployment_id",))
_ADD_LATENCIES = upsert_sql("deployment_latency_buckets", ("deployment_id", "bucket", "requests"),
                            key=("deployment_id", "bucket"),
                            updates=["requests = deployment_latency_buckets.requests + excluded.requests"])
_HEALTH_CHANGES = (DeploymentHealth.CooledDown, DeploymentHealth.Recovered)  # they name the stream only


def apply_page(cur: ViewCursor, page: Page) -> None:
    events = page.of(EVENT_TYPES)
    if not events:
        return
    rows = _read(cur, events)
    latencies: Counter[tuple[str, int]] = Counter()
    for event in events:
        _apply(rows, event)
        if isinstance(event, RequestRecord.Completed):  # Interrupted too: it is a subclass
            latencies[event.deployment_id, bucket_of(event.latency_ms)] += 1
    cur.executemany(_UPSERT, [[row[column] for column in COLUMNS] for row in rows.values()])
    if latencies:
        cur.executemany(_ADD_LATENCIES, [(*key, n) for key, n in latencies.items()])


def _read(cur: ViewCursor, events: list[Any]) -> dict[str, dict[str, Any]]:
    """The rows the events name, by deployment id (request events) or by stream (the health events)."""
    deployments = {event.deployment_id for event in events if not isinstance(event, _HEALTH_CHANGES)}
    streams = {str(event.originator_id) for event in events if isinstance(event, _HEALTH_CHANGES)}
    found = cur.execute(
        f"SELECT {', '.join(COLUMNS)} FROM deployment_health"
        f" WHERE {cur.any_of('deployment_id')} OR {cur.any_of('stream_id')}",
        (sorted(deployments), sorted(streams)),
    ).all()
    return {row["deployment_id"]: row for row in found}


def _apply(rows: dict[str, dict[str, Any]], event: Any) -> None:
    if isinstance(event, _HEALTH_CHANGES):
        row = _of_stream(rows, str(event.originator_id))
        if row is not None:  # else the deployment was never registered: nothing to update
            _change_health(row, event)
        return
    row = _ensure(rows, event.deployment_id)
    if isinstance(event, RequestRecord.Completed):
        row.update(success_count=row["success_count"] + 1, updated_at=event.timestamp)
    elif isinstance(event, RequestRecord.AttemptFailed):
        row.update(failure_count=row["failure_count"] + 1, last_error_type=event.error_type,
                   last_status_code=event.status_code, updated_at=event.timestamp)
    elif isinstance(event, DeploymentHealth.Registered):
        row.update(stream_id=str(event.originator_id), model_group=event.model_group)


def _change_health(row: dict[str, Any], event: Any) -> None:
    if isinstance(event, DeploymentHealth.CooledDown):
        row.update(cooldown_count=row["cooldown_count"] + 1, cooling_until=event.until,
                   last_cooldown_reason=event.reason, updated_at=event.timestamp)
    else:
        row.update(cooling_until=None, updated_at=event.timestamp)


def deployment_health(store: ViewStore) -> dict[str, dict[str, Any]]:
    """Each deployment's row, by deployment id, with `latency_p50_ms`, `latency_p90_ms`, `latency_p99_ms`."""
    with store.reading() as cur:
        rows = cur.execute("SELECT * FROM deployment_health").all()
        buckets = cur.execute("SELECT deployment_id, bucket, requests FROM deployment_latency_buckets"
                              " ORDER BY deployment_id, bucket").all()
    by_deployment: dict[str, list[tuple[int, int]]] = {}
    for bucket in buckets:
        by_deployment.setdefault(bucket["deployment_id"], []).append((bucket["bucket"], bucket["requests"]))
    health = {}
    for row in rows:
        row["cooling_until"] = as_datetime(row["cooling_until"])
        row["updated_at"] = as_datetime(row["updated_at"])
        counts = by_deployment.get(row["deployment_id"], [])
        for p in PERCENTILES:
            row[f"latency_p{p}_ms"] = percentile(counts, p)
        health[row["deployment_id"]] = row
    return health


def bucket_of(latency_ms: float) -> int:
    return max(0, math.ceil(_BUCKETS_PER_DOUBLING * math.log2(max(latency_ms, 1.0))))


def percentile(counts: list[tuple[int, int]], p: float) -> float | None:
    """The upper bound (ms) of the bucket holding the p-th percentile; counts are (bucket, n) in bucket order."""
    total = sum(n for _, n in counts)
    if not total:
        return None
    seen = 0
    for bucket, n in counts:
        seen += n
        if seen * 100 >= p * total:
            break
    return round(2 ** (bucket / _BUCKETS_PER_DOUBLING), 1)


def _ensure(rows: dict[str, dict[str, Any]], deployment_id: str) -> dict[str, Any]:
    if deployment_id not in rows:
        rows[deployment_id] = dict.fromkeys(COLUMNS)
        rows[deployment_id].update(deployment_id=deployment_id, success_count=0, failure_count=0, cooldown_count=0)
    return rows[deployment_id]


def _of_stream(rows: dict[str, dict[str, Any]], stream_id: str) -> dict[str, Any] | None:
    return next((row for row in rows.values() if row["stream_id"] == stream_id), None)
