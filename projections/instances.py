"""Which gateway processes are alive: each beats every few seconds while it serves."""
from __future__ import annotations

import asyncio
import logging
import threading
from datetime import UTC, datetime
from typing import Any

from moneta.projections.view_store import ViewCursor, ViewStore, as_datetime

log = logging.getLogger("moneta.instances")

DDL = (
    "CREATE TABLE IF NOT EXISTS gateway_instances (instance TEXT PRIMARY KEY, started_at {timestamp} NOT NULL,"
    " heartbeat_at {timestamp} NOT NULL)",
)


def beat(cur: ViewCursor, instance: str, now: datetime) -> None:
    cur.execute("INSERT INTO gateway_instances (instance, started_at, heartbeat_at) VALUES (?, ?, ?)"
                " ON CONFLICT (instance) DO UPDATE SET heartbeat_at = excluded.heartbeat_at", (instance, now, now))


def leave(cur: ViewCursor, instance: str) -> None:
    cur.execute("DELETE FROM gateway_instances WHERE instance = ?", (instance,))


def last_beats(cur: ViewCursor) -> dict[str, datetime]:
    rows: list[dict[str, Any]] = cur.execute("SELECT instance, heartbeat_at FROM gateway_instances").all()
    return {row["instance"]: as_datetime(row["heartbeat_at"]) for row in rows}


class InstanceHeartbeat:
    """Started and stopped by a proxy worker's lifespan: beats from a thread of its own."""

    def __init__(self, store: ViewStore, instance: str, interval_s: float) -> None:
        self.store = store
        self.instance = instance
        self.interval_s = interval_s
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="moneta-instance-heartbeat", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        await asyncio.to_thread(self._leave)

    def _leave(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(5)
        try:
            with self.store.transaction() as cur:
                leave(cur, self.instance)
        except Exception as error:  # the sweeper then sees it silent, which is as good
            log.warning("instance %s not unregistered (%s)", self.instance, type(error).__name__)

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                with self.store.transaction() as cur:
                    beat(cur, self.instance, datetime.now(UTC))
            except Exception as error:  # a missed beat is retried at the next interval
                log.warning("instance heartbeat failed (%s)", type(error).__name__)
            self._stopping.wait(self.interval_s)
