"""How far behind the ledger each projection is, and whether its runner is alive."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from eventsourcing.application import Application

from moneta.projections import quarantine, tracking
from moneta.projections.view_store import ViewStore


@dataclass(frozen=True)
class ProjectionStatus:
    name: str  # the tracking name ("spend" today)
    position: int  # last notification id applied
    head: int  # the ledger's max notification id
    lag_events: int  # head - position (>= 0)
    lag_s: float  # 0.0 when caught up, else seconds since the first unapplied event was recorded
    heartbeat_age_s: float | None  # seconds since the runner last proved alive (None: never ran)
    quarantined: int = 0  # events set aside because they could not be applied


def read_status(app: Application, store: ViewStore, now: datetime | None = None) -> list[ProjectionStatus]:
    now = now or datetime.now(UTC)
    with store.reading() as cur:
        rows = tracking.read_all(cur)
        quarantined = quarantine.counts(cur)
    head = app.recorder.max_notification_id() or 0
    return [_status(app, row, head, now, quarantined.get(row["name"], 0)) for row in rows]


def _status(app: Application, row: dict[str, Any], head: int, now: datetime, quarantined: int) -> ProjectionStatus:
    position, heartbeat_at = row["position"], row["heartbeat_at"]
    lag_events = max(head - position, 0)
    return ProjectionStatus(
        name=row["name"],
        position=position,
        head=head,
        lag_events=lag_events,
        lag_s=_seconds_behind(app, position, now) if lag_events else 0.0,
        heartbeat_age_s=None if heartbeat_at is None else max((now - heartbeat_at).total_seconds(), 0.0),
        quarantined=quarantined,
    )


def _seconds_behind(app: Application, position: int, now: datetime) -> float:
    """Since the first event after `position` was recorded."""
    (first,) = app.recorder.select_notifications(position, 1, inclusive_of_start=False)
    return max((now - app.mapper.to_domain_event(first).timestamp).total_seconds(), 0.0)
