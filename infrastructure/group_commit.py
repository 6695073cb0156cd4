"""Group commit: concurrent requests share transactions, and each learns when it is durable.

One writer thread takes whatever is queued, saves it in one `save()` (one transaction),
then resolves every caller's future. There is no deliberate lingering: while one commit is
in flight the next batch gathers by itself, so a lone request pays one commit and a busy
server pays one commit per batch. A failed batch is retried with backoff until
`retry_for_s` runs out; a batch that holds a bad event is split so the others still land.
A stream whose first events were lost is never continued: its later events fail too, so
the ledger holds no stream without its beginning.
"""
from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from typing import Any, Callable

from eventsourcing.application import Application
from eventsourcing.domain import DomainEventProtocol

from moneta.domain.errors import LedgerUnavailableError

log = logging.getLogger("moneta.ledger")

_Item = tuple[list[DomainEventProtocol], Callable[[BaseException | None], None]]
_STOP = object()


class GroupCommitLedger:
    def __init__(self, app: Application, *, max_batch: int = 1000, retry_for_s: float = 10.0) -> None:
        self.app = app
        self.max_batch = max_batch
        self.retry_for_s = retry_for_s
        self._queue: "queue.SimpleQueue[Any]" = queue.SimpleQueue()
        self._healthy = True
        self._lost_streams: set[Any] = set()
        self.commits = 0
        self.events_written = 0
        self._thread = threading.Thread(target=self._run, name="moneta-ledger-writer", daemon=True)
        self._thread.start()

    # -- the port --------------------------------------------------------------------------

    def record(self, record: Any) -> "asyncio.Future[None]":
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()

        def resolve(error: BaseException | None) -> None:
            loop.call_soon_threadsafe(_settle, future, error)

        self._queue.put((record.collect_events(), resolve))
        return future

    def record_blocking(self, record: Any, timeout: float | None = None) -> None:
        """For callers outside an event loop (the CLI, tests)."""
        done = threading.Event()
        outcome: list[BaseException | None] = []

        def resolve(error: BaseException | None) -> None:
            outcome.append(error)
            done.set()

        self._queue.put((record.collect_events(), resolve))
        if not done.wait(timeout):
            raise LedgerUnavailableError("the ledger did not confirm the write in time")
        if outcome[0] is not None:
            raise outcome[0]

    def is_healthy(self) -> bool:
        return self._healthy and self._thread.is_alive()

    def close(self, timeout: float = 30.0) -> None:
        """Commits what is queued, then stops the writer."""
        self._queue.put(_STOP)
        self._thread.join(timeout)

    # -- the writer thread -------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            batch: list[_Item] = [first]
            stop = self._drain_into(batch)
            self._commit(batch)
            if stop:
                return

    def _drain_into(self, batch: list[_Item]) -> bool:
        while len(batch) < self.max_batch:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return False
            if item is _STOP:
                return True
            batch.append(item)
        return False

    def _commit(self, batch: list[_Item]) -> None:
        if self._lost_streams:
            batch = self._without_lost_beginnings(batch)
            if not batch:
                return
        error = self._save_with_retry([e for events, _ in batch for e in events])
        if error is not None and len(batch) > 1 and not _is_transient(error):
            # One bad record must not sink its neighbours: save each on its own.
            for item in batch:
                self._commit([item])
            return
        if error is not None and _is_transient(error):  # an outage; a conflict loses nothing
            self._lost_streams.update(e.originator_id for events, _ in batch for e in events)
        for _, resolve in batch:
            resolve(None if error is None else _as_unavailable(error))

    def _without_lost_beginnings(self, batch: list[_Item]) -> list[_Item]:
        kept = []
        for events, resolve in batch:
            if events and events[0].originator_version > 1 and events[0].originator_id in self._lost_streams:
                resolve(LedgerUnavailableError("the ledger lost the start of this request's record"))
            else:
                kept.append((events, resolve))
        return kept

    def _save_with_retry(self, events: list[DomainEventProtocol]) -> BaseException | None:
        deadline = time.monotonic() + self.retry_for_s
        delay = 0.05
        while True:
            try:
                self.app.save(*events)
            except Exception as exc:  # the store is down or the batch is bad: decided below
                if not _is_transient(exc) or time.monotonic() + delay > deadline:
                    self._healthy = not _is_transient(exc)
                    log.error("ledger write failed: %s", type(exc).__name__)
                    return exc
                self._healthy = False
                log.warning("ledger write failed (%s), retrying in %.2fs", type(exc).__name__, delay)
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            self._healthy = True
            self.commits += 1
            self.events_written += len(events)
            return None


def _is_transient(exc: BaseException) -> bool:
    from eventsourcing.persistence import IntegrityError, ProgrammingError

    return not isinstance(exc, (IntegrityError, ProgrammingError, TypeError, ValueError))


def _as_unavailable(error: BaseException) -> BaseException:
    if _is_transient(error):
        return LedgerUnavailableError("the ledger is unavailable; the request was not recorded")
    return error


def _settle(future: "asyncio.Future[None]", error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
