"""Keeps a worker's directory fresh: reads what the access view changed since it last looked."""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from moneta.application.access_directory import Directory

log = logging.getLogger("moneta.access")
INTERVAL_S = 0.25


class ChangeView(Protocol):
    def changed_since(self, revision: int) -> list[dict[str, Any]]:
        """Rows (kind, name, token, data, revision) changed after `revision`, oldest first."""
        ...


class DirectorySync:
    def __init__(self, directory: Directory, view: ChangeView, interval_s: float = INTERVAL_S) -> None:
        self.directory = directory
        self._view = view
        self._interval_s = interval_s
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    def load(self) -> None:
        """Reads the whole view (at start-up, before the first request)."""
        self.directory.apply(self._view.changed_since(self.directory.revision))

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                rows = await asyncio.to_thread(self._view.changed_since, self.directory.revision)
            except Exception as error:  # the view's database is down: keep serving from memory
                if not self._failing:
                    log.warning("access view unreadable (%s); keys and teams as last read", type(error).__name__)
                self._failing = True
                continue
            self._failing = False
            self.directory.apply(rows)
