"""askii in a gateway process: the rate book held in memory, the settlement's conversion, and the
one command that changes the rate (recorded in the ledger, see domain/askii.py).

The hot path (`settle`) does no I/O: it reads the book in memory, and remembers the rate of the
current period until the next known change takes effect. The book is re-read from the ledger by
`AskiiSync` (a proxy worker, about once a second) or, in the library, in a worker thread at most
once a second when a call settles.
"""
from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Callable, Protocol
from uuid import UUID

from moneta.domain.askii import RATES_ID, AskiiRates, RateBook, RateChange, as_utc, to_askii
from moneta.domain.errors import ConflictError

log = logging.getLogger("moneta.askii")
SYNC_INTERVAL_S = 1.0
_SAVE_TRIES = 3
_EARLIEST = datetime.min.replace(tzinfo=UTC)
_LATEST = datetime.max.replace(tzinfo=UTC)


class RateStore(Protocol):
    def get(self, aggregate_id: UUID) -> Any | None:
        """The aggregate at its latest version, or None if it has no events."""
        ...

    def save(self, *aggregates: Any) -> None:
        """Commits their new events (durable on return); ConflictError when someone else wrote
        the stream meanwhile."""
        ...


class AskiiExchange:
    """USD to askii at the rate in force, for this process. Without a store it knows only the
    default rate."""

    def __init__(self, default: Decimal, store: RateStore | None = None, *,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.book = RateBook(default)
        self._store = store
        self._clock = clock
        self._period: tuple[RateBook, datetime, datetime, Decimal] | None = None
        # Set (seconds) where no background task re-reads the rates (the library): a settling call
        # then has them re-read in a worker thread when they are older than this.
        self.lazy_refresh_s: float | None = None
        self._read_at = time.monotonic()
        self._reading = False

    def use_default(self, rate: Decimal) -> None:
        if rate != self.book.default:
            self.book = RateBook(rate, self.book.changes)

    # -- the hot path ------------------------------------------------------------------------

    def settle(self, usd: Decimal, at: datetime) -> tuple[Decimal, Decimal]:
        """(askii, rate): `usd` converted at the rate in force at `at`, and that rate."""
        if self.lazy_refresh_s is not None:
            self._refresh_if_stale()
        rate = self.rate_at(at)
        return to_askii(usd, rate), rate

    def rate_at(self, at: datetime) -> Decimal:
        at, period, book = as_utc(at), self._period, self.book
        if period is not None and period[0] is book and period[1] <= at < period[2]:
            return period[3]
        rate, since, until = book.period_at(at)
        self._period = (book, since or _EARLIEST, until or _LATEST, rate)
        return rate

    def current_rate(self) -> Decimal:
        return self.rate_at(self._clock())

    # -- reading and changing the rates ------------------------------------------------------

    def load(self) -> RateBook:
        """Reads the changes recorded in the ledger (blocking); returns the book now in use."""
        if self._store is not None:
            rates = self._store.get(RATES_ID)
            self._use(rates.changes if rates is not None else ())
        self._read_at = time.monotonic()
        return self.book

    def set_rate(self, rate: object, effective_from: datetime | None, actor: str) -> RateChange:
        """Records a rate change (blocking; durable on return) and uses it in this process at once.
        InvalidAskiiValue for a bad rate or a start in the past."""
        if self._store is None:
            raise RuntimeError("this gateway has no ledger to record a rate change in")
        for attempt in range(1, _SAVE_TRIES + 1):
            rates = self._store.get(RATES_ID) or AskiiRates.open()
            change = rates.set_rate(rate, effective_from, actor, self._clock())
            try:
                self._store.save(rates)
                break
            except ConflictError:  # another process changed the rates at the same moment: read again
                if attempt == _SAVE_TRIES:
                    raise
        self._use(rates.changes)
        return change

    def _use(self, changes: Any) -> None:
        book = RateBook(self.book.default, changes)
        if book.changes != self.book.changes:
            self.book = book

    def _refresh_if_stale(self) -> None:
        if self._reading or time.monotonic() - self._read_at < (self.lazy_refresh_s or 0):
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._reading = True
        loop.run_in_executor(None, self._read_quietly)

    def _read_quietly(self) -> None:
        try:
            self.load()
        except Exception as error:  # the ledger is unreachable: settle at the rates last read
            log.warning("askii rates unreadable (%s); using the rates last read", type(error).__name__)
            self._read_at = time.monotonic()
        finally:
            self._reading = False


class AskiiSync:
    """Re-reads the rates from the ledger about once a second, beside the requests (a proxy worker)."""

    def __init__(self, exchange: AskiiExchange, interval_s: float = SYNC_INTERVAL_S) -> None:
        self._exchange = exchange
        self._interval_s = interval_s
        self._task: asyncio.Task[None] | None = None
        self._failing = False

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
                await asyncio.to_thread(self._exchange.load)
            except Exception as error:  # the ledger is unreachable: keep settling at the rates last read
                if not self._failing:
                    log.warning("askii rates unreadable (%s); using the rates last read", type(error).__name__)
                self._failing = True
                continue
            self._failing = False
