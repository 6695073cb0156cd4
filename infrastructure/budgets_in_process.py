"""Budget counters in this process's memory: the store for a single worker.

A reservation runs with no await between its check and its count (the settled spend of a
counter never seen is read from the ledger's budget view first), so on the event loop it is
atomic without a lock.
"""
from __future__ import annotations

import asyncio
from typing import Sequence

from moneta.application.budget_store import SpentReader
from moneta.domain.budgets import LEASE_S, BudgetDecision, BudgetLine, Headroom, decide


class _Counter:
    __slots__ = ("spent", "held")

    def __init__(self, spent: int) -> None:
        self.spent = spent
        self.held: dict[str, tuple[int, float]] = {}  # request id -> (nano-dollars, lease end)

    def reserved(self, now: float) -> int:
        expired = [request_id for request_id, (_, until) in self.held.items() if until <= now]
        for request_id in expired:
            del self.held[request_id]
        return sum(amount for amount, _ in self.held.values())


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
                counter.held[request_id] = (decision.reserved, now + LEASE_S)
        return decision

    async def counters(self, lines: Sequence[BudgetLine], now: float) -> list[Headroom]:
        return [Headroom(line, c.spent, c.reserved(now)) for line, c in zip(lines, await self._counters_of(lines))]

    async def _counters_of(self, lines: Sequence[BudgetLine]) -> list[_Counter]:
        missing = [line for line in lines if (line.scope, line.period) not in self._counters]
        if missing:
            spent = await asyncio.to_thread(self._reader.spent, missing)
            for line, amount in zip(missing, spent):
                self._counters.setdefault((line.scope, line.period), _Counter(amount))
        return [self._counters[line.scope, line.period] for line in lines]

    async def settle(self, request_id: str, lines: Sequence[BudgetLine], cost: int, now: float) -> None:
        for line in lines:
            counter = self._counters.get((line.scope, line.period))
            if counter is not None:
                counter.held.pop(request_id, None)
                counter.spent += cost

    async def close(self) -> None:
        self._counters.clear()
