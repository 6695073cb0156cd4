"""Run as an OS process of its own by the budget store tests: from a given instant, makes concurrent
reserve + settle calls of W nano-dollars each on a shared store and prints how many were admitted.

    python -m tests.budget_store_worker <redis|database> <url> <start at, epoch s> <calls> <now>
"""
from __future__ import annotations

import asyncio
import os
import sys
import time

from moneta.domain.budgets import BudgetLine
from moneta.infrastructure.budgets_database import DatabaseBudgetStore
from moneta.infrastructure.budgets_redis import RedisBudgetStore

W = 1_000_000
STARTED = 7  # what the ledger's view says was spent before
# The period holding T0 (the `now` of every call): a period already over would be swept away.
LINES = [BudgetLine("key:shared", "2026-09-01T00:00:00+00:00", 50 * W + STARTED, "2026-10-01T00:00:00+00:00"),
         BudgetLine("team:shared", "", 10**15, None)]


class Reader:
    def spent(self, lines):
        return [STARTED for _ in lines]


async def call(store, request_id: str, now: float) -> bool:
    decision = await store.reserve(request_id, LINES, W, W, now)
    if decision.allowed:
        await store.settle(request_id, LINES, W, now)
    return decision.allowed


async def main(kind: str, url: str, start_at: float, calls: int, now: float) -> None:
    store = RedisBudgetStore(url, Reader()) if kind == "redis" else DatabaseBudgetStore.open(url, Reader())
    await asyncio.sleep(max(0.0, start_at - time.time()))  # the processes start together
    admitted = await asyncio.gather(*(call(store, f"{os.getpid()}-{i}", now) for i in range(calls)))
    await store.close()
    print(sum(admitted), store.mode)


if __name__ == "__main__":
    kind, url, start_at, calls, now = sys.argv[1:]
    asyncio.run(main(kind, url, float(start_at), int(calls), float(now)))
