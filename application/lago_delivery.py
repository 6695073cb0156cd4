"""Reporting usage to Lago from the outbox, from the read side, off the request path.

The outbox view files each billed call once it is settled; each round, the deliverer takes the
calls due, reads each call's LagoUsage stream in the ledger (the truth: a call the ledger says is
delivered or parked is never sent again, whatever the schedule says after a rebuild), claims them,
sends them in one batch of at most 100 to `/events/batch`, and appends each call's outcome to its
stream:

- 200: Delivered;
- 422 (the batch is all or nothing): each event is sent again alone to `/events`, and each gets
  its own verdict; `transaction_id: value_already_exist` is Delivered (duplicate): Lago has it;
- 429, 5xx, a timeout or no answer: DeliveryFailed, to retry after an exponential backoff with
  jitter, never before Lago's Retry-After (or X-RateLimit-Reset), and nothing at all is sent
  before then;
- any other refusal: Parked with Lago's reason, until `requeue` (retry-parked) sends it again.

A kill at any moment loses nothing and bills nothing twice: a call sent whose outcome was not
recorded is sent again once its claim ends, with the same transaction_id and timestamp, and
Lago answers that it has it.
"""
from __future__ import annotations

import asyncio
import logging
import random
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Callable, Iterable, Protocol, Sequence
from uuid import UUID

from moneta.application.lago_events import Answer, LagoEvents
from moneta.application.ports import AggregateReader
from moneta.domain.lago_usage import DELIVERED, PARKED, PENDING, RETRYING, BilledCall, LagoUsage, usage_event, \
    usage_stream_id

log = logging.getLogger("moneta.lago")
MAX_BATCH = 100  # Lago's limit per /events/batch request


@dataclass(frozen=True)
class DeliveryPolicy:
    batch_size: int = MAX_BATCH
    timeout_s: float = 10.0  # one request to Lago, at most (the events client's timeout)
    backoff_s: float = 1.0  # before a call's 2nd attempt; doubled each time, jittered, up to max_backoff_s
    max_backoff_s: float = 30.0
    claim_margin_s: float = 5.0  # a claim outlives the request's timeout by this much

    def __post_init__(self) -> None:
        if not 1 <= self.batch_size <= MAX_BATCH:
            raise ValueError(f"a batch holds 1 to {MAX_BATCH} events")


class UsageOutbox(Protocol):
    def due(self, now: datetime, limit: int) -> list[BilledCall]: ...

    def calls(self, request_ids: Sequence[str]) -> list[BilledCall]: ...

    def claim(self, request_ids: Sequence[str], holder: str, now: datetime, until: datetime) -> set[str]: ...

    def record(self, states: Sequence[dict[str, Any]]) -> None: ...

    def hasten(self, now: datetime) -> int: ...

    def parked(self) -> list[dict[str, Any]]: ...


class UsageStreams(AggregateReader, Protocol):
    def get_many(self, aggregate_ids: Sequence[UUID]) -> dict[UUID, Any]:
        """The aggregates among these that have events (in one read: a batch is a hundred calls)."""
        ...


SaveAll = Callable[[Sequence[LagoUsage]], set[Any]]  # the ids of the streams saved (not those that moved meanwhile)


class LagoDelivery:
    def __init__(self, code: str, outbox: UsageOutbox, reader: UsageStreams, save: SaveAll, lago: LagoEvents,
                 policy: DeliveryPolicy = DeliveryPolicy(), *,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 jitter: Callable[[], float] = random.random) -> None:
        self.code = code
        self.outbox = outbox
        self.reader = reader
        self.save = save
        self.lago = lago
        self.policy = policy
        self.clock = clock
        self.jitter = jitter
        self.holder = uuid.uuid4().hex  # this deliverer, in the claims it holds
        self.paused_until = datetime.min.replace(tzinfo=UTC)  # Lago's Retry-After: nothing is sent before

    async def deliver_due(self) -> int:
        """One batch of the calls due; returns how many were sent. Due calls the ledger says are
        settled (the schedule was rebuilt or lost) are only mirrored, and the next ones taken."""
        now = self.clock()
        if now < self.paused_until:
            return 0
        while True:
            calls = self.outbox.due(now, self.policy.batch_size)
            sent = await self._deliver(calls, now)
            if sent or len(calls) < self.policy.batch_size:
                return sent

    async def deliver_now(self, request_ids: Sequence[str]) -> int:
        """Sends these calls now (those not settled), in batches; returns how many were sent."""
        calls, sent = self.outbox.calls(request_ids), 0
        for start in range(0, len(calls), self.policy.batch_size):
            sent += await self._deliver(calls[start:start + self.policy.batch_size], self.clock())
        return sent

    def requeue(self, calls: Iterable[BilledCall], *, actor: str, reason: str, when: Sequence[str]) -> list[str]:
        """Appends Requeued to the calls whose stream is in one of the states `when`; they are due
        now. Returns their request ids."""
        usages = [usage for usage in self._streams(calls).values() if usage is not None and usage.status in when]
        for usage in usages:
            usage.requeue(actor=actor, reason=reason)
        return [usage.request_id for usage in self._commit(usages)]

    def requeue_parked(self, actor: str = "retry-parked") -> list[str]:
        return self.requeue([row["call"] for row in self.outbox.parked()], actor=actor,
                            reason="parked call sent again", when=(PARKED,))

    # -- one batch -----------------------------------------------------------------------------

    async def _deliver(self, calls: Sequence[BilledCall], now: datetime) -> int:
        if not calls:
            return 0
        usages = self._streams(calls)
        settled = {rid: usage for rid, usage in usages.items() if usage is not None and usage.is_settled}
        self.outbox.record([self._state(usage) for usage in settled.values()])  # the schedule had not caught up
        open_calls = [call for call in calls if call.request_id not in settled]
        claimed = self.outbox.claim([c.request_id for c in open_calls], self.holder, now, self._claim_end(now))
        batch = [call for call in open_calls if call.request_id in claimed]
        if not batch:
            return 0
        ledger = {call.request_id: usages[call.request_id] or LagoUsage.open(call.request_id, call.subscription)
                  for call in batch}
        answer = await self.lago.send_batch([usage_event(call, self.code) for call in batch])
        if answer.ok:
            for usage in ledger.values():
                usage.delivered(batch_size=len(batch))
            self._commit(ledger.values())
            self.outbox.hasten(self.clock())  # Lago answers: what waits on a backoff need not
        elif answer.status == 422:
            log.warning("Lago refused a batch of %d usage events (%s): sending them one by one", len(batch),
                        answer.reason())
            await self._one_by_one(batch, ledger)
        elif answer.retryable:
            self._retry_later(ledger.values(), answer)
            self._commit(ledger.values())
        else:
            for usage in ledger.values():
                usage.park(status=answer.status, reason=answer.reason())
            log.error("Lago refused a batch of %d usage events: parked (%s)", len(batch), answer.reason())
            self._commit(ledger.values())
        return len(batch)

    async def _one_by_one(self, batch: Sequence[BilledCall], ledger: dict[str, LagoUsage]) -> None:
        done: list[LagoUsage] = []
        unsent: list[LagoUsage] = []  # not refused for themselves: no outcome to record, due again
        stop = False
        for call in batch:
            usage, now = ledger[call.request_id], self.clock()
            if stop or now < self.paused_until:
                unsent.append(usage)
                continue
            if not self.outbox.claim([call.request_id], self.holder, now, self._claim_end(now)):
                continue  # our claim ran out and another deliverer holds it now
            answer = await self.lago.send(usage_event(call, self.code))
            done.append(usage)
            if answer.ok or _already_there(answer):
                usage.delivered(batch_size=1, duplicate=not answer.ok)
            elif answer.retryable:
                self._retry_later([usage], answer)
                stop = True  # Lago is unwell: the others wait for the next round
            else:
                usage.park(status=answer.status, reason=answer.reason())
                log.error("Lago refused the usage of request %s: parked (%s)", call.request_id, answer.reason())
        self._commit(done)
        self.outbox.record([{**self._state(usage), "next_attempt_at": max(self.clock(), self.paused_until)}
                            for usage in unsent])

    def _retry_later(self, usages: Iterable[LagoUsage], answer: Answer) -> None:
        now = self.clock()
        if answer.retry_after_s:
            self.paused_until = max(self.paused_until, now + timedelta(seconds=answer.retry_after_s))
        spread = 0.5 + self.jitter() / 2  # one draw per request: a batch retries together
        usages = list(usages)
        for usage in usages:
            delay = min(self.policy.max_backoff_s, self.policy.backoff_s * 2 ** min(usage.attempts, 32)) * spread
            retry_at = max(now + timedelta(seconds=delay), self.paused_until)
            usage.failed(status=answer.status, reason=answer.reason(), retry_at=retry_at)
        log.warning("Lago did not take %d usage event(s) (%s): retrying", len(usages), answer.reason())

    def _commit(self, usages: Iterable[LagoUsage]) -> list[LagoUsage]:
        """Saves the outcomes and mirrors them in the schedule; returns the streams saved. A stream
        another deliverer wrote meanwhile is read again and mirrored as it stands."""
        usages = list(usages)
        if not usages:
            return []
        saved = self.save(usages)
        kept = [usage for usage in usages if usage.id in saved]
        moved = self.reader.get_many([usage.id for usage in usages if usage.id not in saved])
        self.outbox.record([self._state(usage) for usage in (*kept, *moved.values())])
        return kept

    def _streams(self, calls: Iterable[BilledCall]) -> dict[str, LagoUsage | None]:
        """Each call's LagoUsage stream, None for a call never attempted."""
        ids = {call.request_id: usage_stream_id(call.request_id) for call in calls}
        found = self.reader.get_many(list(ids.values()))
        return {request_id: found.get(stream_id) for request_id, stream_id in ids.items()}

    def _state(self, usage: LagoUsage) -> dict[str, Any]:
        due = {RETRYING: usage.retry_at, PENDING: self.clock()}.get(usage.status)
        return {"request_id": usage.request_id, "attempts": usage.attempts, "next_attempt_at": due,
                "settled": usage.status if usage.status in (DELIVERED, PARKED) else None,
                "last_status": usage.last_status, "last_error": usage.reason or None}

    def _claim_end(self, now: datetime) -> datetime:
        return now + timedelta(seconds=self.policy.timeout_s + self.policy.claim_margin_s)


def _already_there(answer: Answer) -> bool:
    """Lago's 422 `{"transaction_id": ["value_already_exist"]}`: it holds this event already."""
    details = answer.body.get("error_details") if answer.status == 422 and isinstance(answer.body, dict) else None
    return isinstance(details, dict) and "value_already_exist" in (details.get("transaction_id") or ())


class LagoBackground:
    """Runs delivery rounds in a thread (and event loop) of its own, so that a slow Lago never holds
    up the projections: one batch after another while full batches are due, else every `interval_s`."""

    def __init__(self, delivery: LagoDelivery, interval_s: float = 1.0, max_pause_s: float = 30.0) -> None:
        self.delivery = delivery
        self.interval_s = interval_s
        self.max_pause_s = max_pause_s
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stopping.clear()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), name="moneta-lago-usage",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)

    async def _run(self) -> None:
        pause = self.interval_s
        try:
            while not self._stopping.is_set():
                try:
                    sent = await self.delivery.deliver_due()
                    pause = 0.0 if sent >= self.delivery.policy.batch_size else self.interval_s
                except Exception:  # the ledger or the views unreachable: the next round tries again
                    pause = min(max(pause, self.interval_s) * 2, self.max_pause_s)
                    log.exception("delivering usage to Lago failed; retrying in %.1fs", pause)
                await self._pause(pause)
        finally:
            await self.delivery.lago.close()

    async def _pause(self, seconds: float) -> None:
        deadline = asyncio.get_running_loop().time() + seconds
        while not self._stopping.is_set() and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(min(0.05, seconds))
