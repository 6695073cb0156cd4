"""The Lago sync on a schedule, in the read-side process: APScheduler's AsyncIOScheduler in a
thread (and event loop) of its own, so that Lago's latency never holds up the projections.

Two jobs: every customer seen every `sync_interval_s` (the first round at start), and every
`DUE_INTERVAL_S` the customers seen but never read and those a webhook asked to read again, so
that a new customer is read within about a second of its first call.
"""
from __future__ import annotations

import asyncio
import logging
import threading
from datetime import datetime, timezone

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from moneta.application.lago_sync import LagoSync

log = logging.getLogger("moneta.lago")
DUE_INTERVAL_S = 0.5


class BackgroundLagoSync:
    def __init__(self, sync: LagoSync, interval_s: float, due_interval_s: float = DUE_INTERVAL_S) -> None:
        self.sync = sync
        self.interval_s = interval_s
        self.due_interval_s = due_interval_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    def start(self) -> None:
        # APScheduler logs each run, and httpx each request, at INFO: several lines a second here,
        # which would drown the read side's log. Failures are logged at WARNING by the sync.
        for noisy in ("apscheduler.executors.default", "httpx"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), name="moneta-lago-sync", daemon=True)
        self._thread.start()
        self._ready.wait(5)

    def stop(self, timeout: float = 1.0) -> None:
        """Stops scheduling; a round in flight is abandoned (what it saved is saved: each customer's
        changes commit alone, and the next round reads the rest)."""
        if self._loop is not None and self._stopped is not None:
            self._loop.call_soon_threadsafe(self._stopped.set)
        if self._thread is not None:
            self._thread.join(timeout)

    async def _run(self) -> None:
        self._loop, self._stopped = asyncio.get_running_loop(), asyncio.Event()
        scheduler = AsyncIOScheduler(event_loop=self._loop)
        scheduler.add_job(self._every_customer, "interval", seconds=self.interval_s, max_instances=1, coalesce=True,
                          next_run_time=datetime.now(timezone.utc), id="moneta-lago-sync")
        scheduler.add_job(self._due_customers, "interval", seconds=self.due_interval_s, max_instances=1,
                          coalesce=True, id="moneta-lago-sync-due")
        scheduler.start()
        self._ready.set()
        try:
            await self._stopped.wait()
        finally:
            scheduler.shutdown(wait=False)
            await self.sync.source.close()

    async def _every_customer(self) -> None:
        try:
            await self.sync.run_once()
        except Exception:  # the ledger or the views unreachable: the next round tries again
            log.exception("the Lago sync round failed")

    async def _due_customers(self) -> None:
        try:
            await self.sync.run_due()
        except Exception:
            log.exception("the Lago sync of new customers failed")
