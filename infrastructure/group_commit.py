"""Group commit: concurrent requests share transactions, and each learns when it is durable.

One writer thread takes whatever is queued, saves it in one `save()` (one transaction),
then resolves every caller's future. There is no deliberate lingering: while one commit is
in flight the next batch gathers by itself, so a lone request pays one commit and a busy
server pays one commit per batch. A batch that holds a bad event is split so the others still
land.

During an outage the writer keeps retrying, with backoff, what is pending, until each record's
deadline (`timeout_s` after it was queued). A record past its deadline is answered
`LedgerUnavailableError` (a 503 `ledger_unavailable`) and its events are dropped, never written
later: the client was told its request was not recorded, so the ledger must not show it
completed (and billed). A try already under way when a deadline passes decides for its records,
success or failure, so no record is both failed and written; the wait past the deadline is then
bounded by one try (about a second: event_store.CONNECTION_WAIT_S).

A record whose events were not all written is never continued: its later events fail too, so
the ledger holds no stream with a gap. Such records are remembered by identity, weakly: once
the caller lets go of a record it cannot send more events, and it is forgotten.

An optional `LedgerObserver` (the metrics) hears of each successful commit before its callers
are answered; what it raises is logged, never passed on to the writer.
"""
from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
import weakref
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, Callable

from eventsourcing.domain import DomainEventProtocol

from moneta.application.ports import LedgerObserver
from moneta.domain.errors import LedgerUnavailableError
from moneta.infrastructure.event_store import LedgerApplication

log = logging.getLogger("moneta.ledger")

_STOP = object()
_FIRST_DELAY_S = 0.05
_MAX_DELAY_S = 1.0


@dataclass
class _Pending:
    record: Any  # the aggregate: remembered if these events are dropped, so it is never continued
    events: list[DomainEventProtocol]
    resolve: Callable[[BaseException | None], None]
    deadline: float  # time.monotonic()


class GroupCommitLedger:
    def __init__(self, app: LedgerApplication, *, max_batch: int = 1000, timeout_s: float = 5.0,
                 observer: LedgerObserver | None = None) -> None:
        self.app = app
        self.observer = observer
        self.max_batch = max_batch
        self.timeout_s = timeout_s
        self._queue: "queue.SimpleQueue[Any]" = queue.SimpleQueue()
        self._healthy = True
        self._delay = _FIRST_DELAY_S
        self._broken: "weakref.WeakValueDictionary[int, Any]" = weakref.WeakValueDictionary()
        self.commits = 0
        self.events_written = 0
        self._thread = threading.Thread(target=self._run, name="moneta-ledger-writer", daemon=True)
        self._thread.start()

    # -- the port --------------------------------------------------------------------------

    def record(self, record: Any) -> "asyncio.Future[None]":
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()

        def resolve(error: BaseException | None) -> None:
            with suppress(RuntimeError):  # the loop closed meanwhile (shutdown): nobody is waiting
                loop.call_soon_threadsafe(_settle, future, error)

        self._put(record, resolve, self.timeout_s)
        return future

    def record_blocking(self, record: Any, timeout: float | None = None) -> None:
        """For callers outside an event loop (the CLI, tests); `timeout` may shorten the deadline."""
        done = threading.Event()
        outcome: list[BaseException | None] = []

        def resolve(error: BaseException | None) -> None:
            outcome.append(error)
            done.set()

        self._put(record, resolve, self.timeout_s if timeout is None else min(timeout, self.timeout_s))
        done.wait()  # the writer answers every record by its deadline (plus a try under way)
        if outcome[0] is not None:
            raise outcome[0]

    def is_healthy(self) -> bool:
        return self._healthy and self._thread.is_alive()

    def close(self, timeout: float = 30.0) -> None:
        """Commits what is queued (or lets it reach its deadline), then stops the writer."""
        self._queue.put(_STOP)
        self._thread.join(timeout)

    def _put(self, record: Any, resolve: Callable[[BaseException | None], None], timeout_s: float) -> None:
        if not self._thread.is_alive():
            resolve(LedgerUnavailableError("the ledger writer is stopped; the request was not recorded"))
            return
        self._queue.put(_Pending(record, record.collect_events(), resolve, time.monotonic() + timeout_s))

    # -- the writer thread -------------------------------------------------------------------

    def _run(self) -> None:
        pending: list[_Pending] = []
        stopping = False
        while pending or not stopping:
            stopping = self._take(pending, wait=not pending and not stopping) or stopping
            pending = self._drop_late_and_broken(pending)
            if not pending:  # no write is failing now (readiness must not wait for traffic to say so)
                self._healthy = True
                continue
            pending, failed = self._write(pending)
            if failed:
                self._back_off(pending)

    def _take(self, pending: list[_Pending], wait: bool) -> bool:
        """Moves queued records into `pending` (at most a batch), waiting for the first if asked;
        True once told to stop."""
        while len(pending) < self.max_batch:
            try:
                item = self._queue.get(block=wait)
            except queue.Empty:
                return False
            wait = False
            if item is _STOP:
                return True
            pending.append(item)
        return False

    def _drop_late_and_broken(self, pending: list[_Pending]) -> list[_Pending]:
        now = time.monotonic()
        kept = []
        for item in pending:
            if self._is_broken(item):
                self._fail(item, LedgerUnavailableError("the ledger lost the start of this request's record"))
            elif item.deadline <= now:
                self._fail(item, LedgerUnavailableError(
                    f"the ledger did not confirm the write within {self.timeout_s:g}s; the request was not recorded"))
            else:
                kept.append(item)
        return kept

    def _write(self, batch: list[_Pending]) -> tuple[list[_Pending], bool]:
        """Tries the batch; returns what is still pending, and whether the store failed transiently."""
        error = self._save(batch)
        if error is None:
            for item in batch:
                item.resolve(None)
            return [], False
        if _is_transient(error):
            return batch, True
        if len(batch) == 1:
            self._fail(batch[0], error)
            return [], False
        return self._write_one_by_one(batch)

    def _write_one_by_one(self, batch: list[_Pending]) -> tuple[list[_Pending], bool]:
        """One bad record must not sink its neighbours: each is saved on its own, in order."""
        for position, item in enumerate(batch):
            if self._is_broken(item):
                self._fail(item, LedgerUnavailableError("the ledger lost the start of this request's record"))
                continue
            error = self._save([item])
            if error is None:
                item.resolve(None)
            elif _is_transient(error):  # the store went away meanwhile: the rest waits, still in order
                return batch[position:], True
            else:
                self._fail(item, error)
        return [], False

    def _save(self, batch: list[_Pending]) -> BaseException | None:
        events = [event for item in batch for event in item.events]
        started = time.perf_counter()
        try:
            self.app.save(*events)
        except Exception as exc:  # the store is down or the batch is bad: the caller decides
            transient = _is_transient(exc)
            self._healthy = not transient
            if transient:
                log.warning("ledger write failed (%s); retrying until the callers' deadlines", type(exc).__name__)
                self.app.drop_dead_connections()
            return exc
        self._healthy = True
        self._delay = _FIRST_DELAY_S
        self.commits += 1
        self.events_written += len(events)
        if self.observer is not None:
            self._tell_observer(batch, time.perf_counter() - started)
        return None

    def _tell_observer(self, batch: list[_Pending], seconds: float) -> None:
        try:
            self.observer.committed([(item.record, item.events) for item in batch], seconds)  # type: ignore[union-attr]
        except Exception:  # metrics must never stop the ledger
            log.exception("the ledger observer failed")

    def _back_off(self, pending: list[_Pending]) -> None:
        """Sleeps before the next try, waking for the earliest deadline."""
        earliest = min(item.deadline for item in pending)
        time.sleep(max(0.0, min(self._delay, earliest - time.monotonic())))
        self._delay = min(self._delay * 2, _MAX_DELAY_S)

    def _fail(self, item: _Pending, error: BaseException) -> None:
        self._broken[id(item.record)] = item.record
        item.resolve(error)

    def _is_broken(self, item: _Pending) -> bool:
        return self._broken.get(id(item.record)) is item.record


def _is_transient(exc: BaseException) -> bool:
    from eventsourcing.persistence import IntegrityError, ProgrammingError

    return not isinstance(exc, (IntegrityError, ProgrammingError, TypeError, ValueError))


def _settle(future: "asyncio.Future[None]", error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
