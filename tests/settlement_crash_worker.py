"""Run as an OS process of its own by tests/test_settlement_batches.py: reserves budgets and takes
rate limits for CALLS calls in Redis, settles SETTLED of them and waits for it, queues the
settlements of the others, and dies before they are sent (os._exit: no clean-up runs, as in a kill -9).

    python -m tests.settlement_crash_worker <redis url> <run id>
"""
from __future__ import annotations

import asyncio
import os
import sys

from moneta.domain.budgets import BudgetLine
from moneta.domain.rate_limits import Limit
from moneta.infrastructure.budgets_redis import RedisBudgetStore
from moneta.infrastructure.limits_redis import RedisLimitStore

T0 = 1_790_000_000.0
CALLS, SETTLED = 10, 6
AMOUNT, COST = 1_000, 300


def budget_lines(run: str) -> list[BudgetLine]:
    return [BudgetLine(f"key:{run}", "2026-09-01T00:00:00+00:00", 10**12, "2026-10-01T00:00:00+00:00"),
            BudgetLine(f"team:{run}", "", 10**12, None)]


def limits(run: str) -> list[Limit]:
    return [Limit(f"key:{run}", rpm=10**6, max_parallel=100)]


class Nothing:
    def spent(self, lines):
        return [0 for _ in lines]


async def main(url: str, run: str) -> None:
    budgets, rate_limits = RedisBudgetStore(url, Nothing()), RedisLimitStore(url)
    lines, scopes = budget_lines(run), limits(run)
    for i in range(CALLS):
        assert (await budgets.reserve(f"r{i}", lines, AMOUNT, AMOUNT, T0)).allowed
        assert (await rate_limits.acquire(f"r{i}", scopes, T0)).allowed
    for i in range(SETTLED):
        await budgets.settle(f"r{i}", lines, COST, T0)
        await rate_limits.settle(f"r{i}", scopes, 10, T0)
    for i in range(SETTLED, CALLS):
        budgets.settle_now(f"r{i}", lines, COST, T0)
        rate_limits.settle_now(f"r{i}", scopes, 10, T0)
    os._exit(0)  # the crash: the queued settlements are never sent


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:3]))
