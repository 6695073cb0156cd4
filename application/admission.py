"""Writing the Admitted event: overlapped with slow calls, merged into one commit with fast ones.

A provider call that outlasts `delay_s` gets its Admitted event committed while it is in
flight (an auditor then sees the call even if the process dies mid-call); a call that ends
sooner is committed once, admission and outcome together. Either way a request waits for
one commit after the provider's answer, and both events are durable before the response.
"""
from __future__ import annotations

import asyncio
from typing import Callable

from moneta.application.ports import Ledger
from moneta.domain.request_record import RequestRecord

ADMISSION_WRITE_DELAY_S = 0.005


class Admission:
    def __init__(self, ledger: Ledger, record: RequestRecord, delay_s: float = ADMISSION_WRITE_DELAY_S,
                 on_settle: Callable[[RequestRecord], None] | None = None) -> None:
        self._ledger = ledger
        self._record = record
        self._on_settle = on_settle
        self._written: asyncio.Future[None] | None = None
        self._timer = asyncio.get_running_loop().call_later(delay_s, self._write)

    def _write(self) -> None:
        self._written = self._ledger.record(self._record)

    def settle(self) -> "asyncio.Future[None]":
        """Queues the outcome (with the admission, if not written yet); resolves once durable."""
        self._timer.cancel()
        if self._on_settle is not None:
            self._on_settle(self._record)
            self._on_settle = None
        outcome = self._ledger.record(self._record)
        if self._written is None:
            return outcome
        return asyncio.ensure_future(_in_order(self._written, outcome))


async def _in_order(first: "asyncio.Future[None]", second: "asyncio.Future[None]") -> None:
    try:
        await first
    finally:
        await second
