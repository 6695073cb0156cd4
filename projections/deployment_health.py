"""The deployment health view: per deployment, successes and failures, latency percentiles, and
the cooldown in force, from the requests' streams and the deployments' own health streams.

Latencies are counted in buckets a quarter of a doubling wide (about 19%), so the view stays
small however long it runs and a percentile is known to within one bucket.
"""
from __future__ import annotations

import math
from typing import Any

from moneta.domain.deployment_health import DeploymentHealth
from moneta.domain.request_record import RequestRecord
from moneta.projections.view_store import ViewCursor, ViewStore, as_datetime

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


def apply(cur: ViewCursor, event: Any) -> None:
    if isinstance(event, RequestRecord.Completed):  # Interrupted too: it is a subclass
        _succeeded(cur, event)
    elif isinstance(event, RequestRecord.AttemptFailed):
        _ensure(cur, event.deployment_id)
        cur.execute("UPDATE deployment_health SET failure_count = failure_count + 1, last_error_type = ?,"
                    " last_status_code = ?, updated_at = ? WHERE deployment_id = ?",
                    (event.error_type, event.status_code, event.timestamp, event.deployment_id))
    elif isinstance(event, DeploymentHealth.Registered):
        _ensure(cur, event.deployment_id)
        cur.execute("UPDATE deployment_health SET stream_id = ?, model_group = ? WHERE deployment_id = ?",
                    (str(event.originator_id), event.model_group, event.deployment_id))
    elif isinstance(event, DeploymentHealth.CooledDown):
        cur.execute("UPDATE deployment_health SET cooldown_count = cooldown_count + 1, cooling_until = ?,"
                    " last_cooldown_reason = ?, updated_at = ? WHERE stream_id = ?",
                    (event.until, event.reason, event.timestamp, str(event.originator_id)))
    elif isinstance(event, DeploymentHealth.Recovered):
        cur.execute("UPDATE deployment_health SET cooling_until = NULL, updated_at = ? WHERE stream_id = ?",
                    (event.timestamp, str(event.originator_id)))


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


def _succeeded(cur: ViewCursor, event: Any) -> None:
    _ensure(cur, event.deployment_id)
    cur.execute("UPDATE deployment_health SET success_count = success_count + 1, updated_at = ?"
                " WHERE deployment_id = ?", (event.timestamp, event.deployment_id))
    cur.execute("INSERT INTO deployment_latency_buckets (deployment_id, bucket, requests) VALUES (?, ?, 1)"
                " ON CONFLICT (deployment_id, bucket) DO UPDATE"
                " SET requests = deployment_latency_buckets.requests + 1",
                (event.deployment_id, bucket_of(event.latency_ms)))


def _ensure(cur: ViewCursor, deployment_id: str) -> None:
    cur.execute("INSERT INTO deployment_health (deployment_id) VALUES (?) ON CONFLICT (deployment_id) DO NOTHING",
                (deployment_id,))
