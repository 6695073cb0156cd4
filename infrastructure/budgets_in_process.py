"""Budget counters in this process's memory: the store for a single worker.

A reservation runs with no await between its check and its count (the settled spend of a
counter never seen is read from the ledger's budget view first), so on the event loop it is
atomic without a lock.
"""
from __future__ import annotations

import asyncio
from typing import Sequence

from moneta.application.budget_store import BudgetUnverifiable, SpentReader
from moneta.domain.budgets import LEASE_S, BudgetDecision, BudgetLine, Headroom, decide

SWEEP_S = 1.0


class _Counter:
    __slots__ = ("spent", "held", "total", "swept_at")

    def __init__(self, spent: int) -> None:
        self.spent = spent
        self.held: dict[str, tuple[int, float]] = {}  # request id -> (nano-dollars, lease end)
        self.total = 0  # what `held` adds up to
        self.swept_at = 0.0

    def reserved(self, now: float) -> int:
        """What calls in flight hold; leases that ended are dropped (looked for once a second)."""
        if now - self.swept_at >= SWEEP_S:
            for request_id in [r for r, (_, until) in self.held.items() if until <= now]:
                self.release(request_id)
            self.swept_at = now
        return self.total

    def hold(self, request_id: str, amount: int, until: float) -> None:
        self.release(request_id)
        self.held[request_id] = (amount, until)
        self.total += amount

    def release(self, request_id: str) -> None:
        amount, _ = self.held.pop(request_id, (0, 0.0))
        self.total -= amount


class InProcessBudgetStore:
    mode = "in_process"

    def __init__(self, reader: SpentReader) -> None:
        self._reader = reader
        self._counters: dict[tuple[str, str], _Counter] = {}

    async def reserve(self, request_id: str, lines: Sequence[BudgetLine], wanted: int, minimum: int,
                      now: float) -> BudgetDecision:
        counters = await self._counters_of(lines)
        decision = decide([Headroom(line, c.spent, c.reserved(now)) for line, c in zip(lines, counters)],
                          wanted, minimum)
        if decision.allowed:
            for counter in counters:
                counter.hold(request_id, decision.reserved, now + LEASE_S)
        return decision

    async def _counters_of(self, lines: Sequence[BudgetLine]) -> list[_Counter]:
        missing = [line for line in lines if (line.scope, line.period) not in self._counters]
        if missing:
            try:
                spent = await asyncio.to_thread(self._reader.spent, missing)
            except Exception as error:  # the budget view is unreadable or behind: spend unknown
                raise BudgetUnverifiable(f"the budgets' spend cannot be read ({type(error).__name__})") from None
            for line, amount in zip(missing, spent):
                self._counters.setdefault((line.scope, line.period), _Counter(amount))
        return [self._counters[line.scope, line.period] for line in lines]

    async def settle(self, request_id: str, lines: Sequence[BudgetLine], cost: int, now: float) -> None:
        self.settle_now(request_id, lines, cost, now)

    def settle_now(self, request_id: str, lines: Sequence[BudgetLine], cost: int, now: float) -> None:
        """`settle` without a coroutine: nothing in it waits."""
        for line in lines:
            counter = self._counters.get((line.scope, line.period))
            if counter is not None:
                counter.release(request_id)
                counter.spent += cost

    async def close(self) -> None:
        self._counters.clear()
