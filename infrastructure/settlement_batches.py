"""Settlements sent to Redis in batches, as a group commit: one script call carries every
settlement that ended while the previous call was on its way.

A settlement is queued and the caller goes on at once (`add`); the first one queued starts a
flush on the next turn of the event loop, which sends everything queued then in one call of the
store's batch script. Settlements that end while that call travels wait for its reply and then
go together in the next call. So an idle gateway sends each settlement alone and at once, and a
busy one sends about one call per round trip, however many calls end meanwhile.

Each settlement is in exactly one call, and a call is never retried: a call that fails, or whose
reply is lost, is reported to `on_error` and its settlements are left to their leases, as a
settlement that failed alone always was. What a crash (kill -9) can lose is what is queued or on
its way: the settlements of calls that ended within one Redis round trip of the crash (under a
millisecond on loopback; at most the client's timeout when Redis is slow). Their reservations and
parallel slots are then released when their leases end, as those of a call whose process died
before it settled. `drain()` (on close) sends everything queued and waits for it.
"""
from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable, Sequence

MAX_PER_CALL = 256  # settlements per script call: a Redis script blocks the server while it runs


class SettlementBatches:
    def __init__(self, script: Callable[..., Awaitable[Any]], on_error: Callable[[Exception], None],
                 head: Sequence[str | int] = ()) -> None:
        """`script(keys=, args=)` gets the settlements' keys one after another, and `head` followed
        by their arguments one after another."""
        self._script = script
        self._on_error = on_error
        self._head = list(head)
        self._queued: list[_Call] = []  # the calls to make, in order: the last one takes what comes
        self._flushing: asyncio.Task[None] | None = None

    def add(self, keys: Sequence[str], args: Sequence[str | int]) -> asyncio.Future[None]:
        """Queues one settlement; the future resolves once it is applied (or fails with its call)."""
        loop = asyncio.get_running_loop()
        if not self._queued or len(self._queued[-1].keys) >= MAX_PER_CALL:
            self._queued.append(_Call(loop.create_future()))
        call = self._queued[-1]
        call.keys.append(keys)
        call.args.append(args)
        if self._flushing is None:
            self._flushing = loop.create_task(self._flush())
        return call.applied

    async def drain(self) -> None:
        """Waits until every settlement queued so far has been sent and answered."""
        while self._flushing is not None:
            await asyncio.shield(self._flushing)

    async def _flush(self) -> None:
        try:
            while self._queued:
                call = self._queued.pop(0)
                try:
                    await self._script(keys=[key for keys in call.keys for key in keys],
                                       args=[*self._head, *(arg for args in call.args for arg in args)])
                except Exception as error:  # any failure leaves these settlements to their leases
                    self._on_error(error)
                    call.applied.set_exception(error)
                    call.applied.exception()  # retrieved: most settlements are not awaited
                else:
                    call.applied.set_result(None)
        finally:
            self._flushing = None


class _Call:
    __slots__ = ("applied", "keys", "args")

    def __init__(self, applied: asyncio.Future[None]) -> None:
        self.applied = applied
        self.keys: list[Sequence[str]] = []  # per settlement
        self.args: list[Sequence[str | int]] = []
