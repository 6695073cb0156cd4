"""Keeps the views up to date with the ledger, exactly once, in one transaction per page.

Each page of the notification log is applied to every view and the projection's position is
advanced in the same transaction, after locking the tracking row (Postgres `FOR UPDATE`,
SQLite `BEGIN IMMEDIATE`) and re-reading the position under the lock: several runners, in
several processes, may run over the same log and each event is still applied once.

Each view applies a whole page at once (`apply_page`), in a few statements however many events
the page holds. Committed pages, and about once a second an idle runner, record a heartbeat in
the tracking row: `status.read_status` tells from it whether the read side is alive.

A page that fails for any reason but an unreachable store is applied again one event at a
time, and the event that fails alone is quarantined (see `quarantine`): the read side never
stalls on a poison event. `retry()` re-applies the quarantined events once the cause is fixed.
A runner made with `skips_poison=False` (the audit seals) never quarantines: it retries the page.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from types import ModuleType
from typing import Any

from eventsourcing.application import Application
from eventsourcing.utils import resolve_topic

from moneta.projections import (
    access, alert_deliveries, billing, budgets, daily_activity, deployment_health, in_flight, instances,
    lago_deliveries, lago_outbox, quarantine, spend_log, tracking, usage_report,
)
from moneta.projections.page import Page
from moneta.projections.view_store import ViewCursor, ViewStore

log = logging.getLogger("moneta.projections")

DEFAULT_NAME = "spend"
DEFAULT_VIEWS: tuple[ModuleType, ...] = (  # usage_report and daily_activity after spend_log
    spend_log, usage_report, daily_activity, deployment_health, in_flight, access, budgets, billing, lago_outbox)
_SCHEMA_LOCK_ID = 0x6D6F6E657461 + 1  # next to the ledger's migrate lock
_MIN_BACKOFF_S, _MAX_BACKOFF_S = 0.1, 10.0
HEARTBEAT_INTERVAL_S = 1.0  # at most; an idle runner beats once a poll (a second by default, NOTIFY or not)
BUSY_EVENTS = 20  # a catch-up that took in more (a few hundred events a second) makes the next wait `busy_interval_s`


class ProjectionRunner:
    def __init__(
        self,
        app: Application,
        store: ViewStore,
        *,
        name: str = DEFAULT_NAME,
        views: Sequence[ModuleType] = DEFAULT_VIEWS,
        page_size: int = 2000,
        listen_dsn: str | None = None,
        channel: str = "moneta_events",
        poll_interval_s: float | None = None,
        min_interval_s: float = 0.05,
        skips_poison: bool = True,
        busy_interval_s: float = 0.25,
    ) -> None:
        """`listen_dsn` (Postgres) wakes the runner on NOTIFY, polling every second as a fallback;
        without it the runner polls every 50 ms. Under load, wake-ups are batched: at most one
        catch-up every `min_interval_s`, so a busy ledger costs pages, not a query per commit; and
        after a catch-up of more than BUSY_EVENTS events, one every `busy_interval_s`: a page's
        statements are the same for 20 events or 1,000, so bigger pages cost a third less per
        event, for a lag still well under a second. `skips_poison=False`: a page that fails is
        retried whole until it commits, no event is ever quarantined (the audit seals, which must
        cover every event)."""
        self.app = app
        self.store = store
        self.name = name
        self.views = tuple(views)
        self.page_size = page_size
        self.skips_poison = skips_poison
        self._types = {cls for view in self.views for cls in view.EVENT_TYPES}
        self._stopping = threading.Event()
        interval = poll_interval_s or (1.0 if listen_dsn else 0.05)
        self._waker = _Listen(listen_dsn, channel, interval) if listen_dsn else _Poll(interval, self._stopping)
        self._known = 0  # the last position this runner saw committed
        self._advanced = threading.Condition()
        self._thread: threading.Thread | None = None
        self.min_interval_s = min_interval_s
        self.busy_interval_s = busy_interval_s
        self._last_beat = -HEARTBEAT_INTERVAL_S  # time.monotonic() of the last heartbeat written

    # -- schema --------------------------------------------------------------------------------

    def create_tables(self) -> None:
        """Idempotent; safe when several processes run it at once."""
        with self.store.transaction() as cur:
            if self.store.dialect == "postgres":
                cur.execute("SELECT pg_advisory_xact_lock(?)", (_SCHEMA_LOCK_ID,))
            schema = (*tracking.DDL, *quarantine.DDL, *instances.DDL, *alert_deliveries.DDL,
                      *lago_deliveries.DDL, *(ddl for view in self.views for ddl in view.DDL))
            for statement in schema:
                cur.execute(self.store.ddl(statement))
            tracking.upgrade(cur)
            for view in self.views:
                if hasattr(view, "upgrade"):
                    view.upgrade(cur)
            tracking.ensure(cur, self.name)

    def rebuild(self) -> int:
        """Empties the views and the quarantine and replays the whole log into them; returns the
        final position."""
        with self.store.transaction() as cur:
            tracking.lock(cur, self.name)
            for table in (table for view in self.views for table in view.TABLES):
                cur.execute(f"DELETE FROM {table}")
            quarantine.clear(cur, self.name)
            tracking.advance(cur, self.name, 0, datetime.now(UTC))
        self._set_known(0)
        return self.catch_up()

    # -- processing ----------------------------------------------------------------------------

    def catch_up(self) -> int:
        """Processes the log to its current end, synchronously; returns the position reached."""
        if (self.app.recorder.max_notification_id() or 0) > self._known:
            while self._process_page() == self.page_size:
                pass
        return self._known

    def position(self) -> int:
        with self.store.reading() as cur:
            return tracking.read(cur, self.name)

    def wait_until(self, position: int, timeout: float) -> bool:
        """Waits until this runner has seen `position` committed (by itself or another runner)."""
        with self._advanced:
            return self._advanced.wait_for(lambda: self._known >= position, timeout)

    def retry(self) -> tuple[int, int]:
        """Re-applies the quarantined events, oldest first, each in a transaction of its own; a
        stream stops at its first event that fails again. Returns (applied, still quarantined)."""
        with self.store.reading() as cur:
            rows = quarantine.listed(cur, self.name)
        failed: set[str] = set()
        for row in rows:
            if row["originator_id"] not in failed and not self._reapply(row["notification_id"]):
                failed.add(row["originator_id"])
        with self.store.reading() as cur:
            remaining = quarantine.count(cur, self.name)
        return len(rows) - remaining, remaining

    def _reapply(self, notification_id: int) -> bool:
        (notification,) = self.app.recorder.select_notifications(notification_id, 1)
        try:
            with self.store.transaction() as cur:
                tracking.lock(cur, self.name)
                self._apply(cur, [notification])
                quarantine.release(cur, self.name, notification_id)
        except Exception as error:
            if quarantine.is_transient(error):
                raise
            with self.store.transaction() as cur:
                quarantine.add(cur, self.name, notification, quarantine.describe(error), datetime.now(UTC))
            return False
        return True

    def _process_page(self) -> int:
        """Applies the next page; returns how many notifications it held."""
        if not self.skips_poison:
            return self._apply_next(self.page_size)
        try:
            return self._apply_next(self.page_size)
        except Exception as error:
            if quarantine.is_transient(error):
                raise
            log.warning("projection %r: a page failed (%s); applying it one event at a time",
                        self.name, quarantine.describe(error))
        return self._apply_one_at_a_time(self.page_size)

    def _apply_next(self, limit: int) -> int:
        with self.store.transaction() as cur:
            start = tracking.lock(cur, self.name)
            notifications = self.app.recorder.select_notifications(start, limit, inclusive_of_start=False)
            now = datetime.now(UTC)
            self._apply(cur, self._not_held_back(cur, notifications, now) if self.skips_poison else notifications)
            end = notifications[-1].id if notifications else start
            tracking.advance(cur, self.name, end, now)
        self._last_beat = time.monotonic()
        self._set_known(end)
        return len(notifications)

    def _not_held_back(self, cur: ViewCursor, notifications: Sequence[Any], now: datetime) -> Sequence[Any]:
        """The notifications to apply; those of a stream with an event in quarantine join it."""
        held = quarantine.held_streams(cur, self.name)
        if not held:  # the common case: no string made per event
            return notifications
        for notification in (n for n in notifications if str(n.originator_id) in held):
            quarantine.add(cur, self.name, notification, quarantine.HELD_BACK, now)
        return [n for n in notifications if str(n.originator_id) not in held]

    def _apply(self, cur: ViewCursor, notifications: Sequence[Any]) -> None:
        events = [self.app.mapper.to_domain_event(notification) for notification in notifications
                  if resolve_topic(notification.topic) in self._types] if self._types else []
        page = Page(events, notifications=notifications)
        for view in self.views:
            view.apply_page(cur, page)

    def _apply_one_at_a_time(self, limit: int) -> int:
        seen = 0
        while seen < limit:
            try:
                applied = self._apply_next(1)
            except Exception as error:
                if quarantine.is_transient(error):
                    raise
                applied = self._quarantine_next(error)
            if not applied:
                break
            seen += applied
        return seen

    def _quarantine_next(self, error: BaseException) -> int:
        with self.store.transaction() as cur:
            start = tracking.lock(cur, self.name)
            notifications = self.app.recorder.select_notifications(start, 1, inclusive_of_start=False)
            if not notifications:
                return 0
            (notification,) = notifications
            now = datetime.now(UTC)
            quarantine.add(cur, self.name, notification, quarantine.describe(error), now)
            tracking.advance(cur, self.name, notification.id, now)
        log.error("projection %r: event %d of stream %s quarantined: %s", self.name, notification.id,
                  notification.originator_id, quarantine.describe(error))
        self._set_known(notification.id)
        return 1

    def _beat_if_due(self) -> None:
        """An idle runner proves it is alive too, but writes no more than once an interval."""
        if time.monotonic() - self._last_beat < HEARTBEAT_INTERVAL_S:
            return
        with self.store.transaction() as cur:
            tracking.beat(cur, self.name, datetime.now(UTC))
        self._last_beat = time.monotonic()

    def _set_known(self, position: int) -> None:
        with self._advanced:
            self._known = position
            self._advanced.notify_all()

    # -- the background thread ---------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name=f"moneta-projection-{self.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def is_running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        backoff = _MIN_BACKOFF_S
        try:
            while not self._stopping.is_set():
                try:
                    self._waker.prepare()  # listen before reading, so no notification falls between
                    before = self._known
                    busy = self.catch_up() - before > BUSY_EVENTS
                    self._beat_if_due()
                    backoff = _MIN_BACKOFF_S
                    self._stopping.wait(self.busy_interval_s if busy else self.min_interval_s)
                    self._waker.wait()
                except Exception:
                    log.exception("projection %r failed; retrying in %.1fs", self.name, backoff)
                    self._waker.close()
                    self._stopping.wait(backoff)
                    backoff = min(backoff * 2, _MAX_BACKOFF_S)
        finally:
            self._waker.close()


class _Poll:
    def __init__(self, interval_s: float, stopping: threading.Event) -> None:
        self.interval_s = interval_s
        self._stopping = stopping

    def prepare(self) -> None:
        """Polling needs no connection."""

    def wait(self) -> None:
        self._stopping.wait(self.interval_s)

    def close(self) -> None:
        """Polling holds no connection."""


class _Listen:
    """Postgres LISTEN on the channel the event store NOTIFYs on every insert."""

    def __init__(self, dsn: str, channel: str, fallback_s: float) -> None:
        self.dsn = dsn
        self.channel = channel
        self.fallback_s = fallback_s
        self._conn = None

    def prepare(self) -> None:
        if self._conn is not None and not self._conn.closed:
            return
        import psycopg
        from psycopg import sql

        self._conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=5)
        self._conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))

    def wait(self) -> None:
        """Returns at once if notifications arrived meanwhile (taking them all), else waits for one."""
        if any(True for _ in self._conn.notifies(timeout=0)):
            return
        for _ in self._conn.notifies(timeout=self.fallback_s, stop_after=1):
            pass

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
