"""What one reserve + settle costs per budget store, for a request under 3 budget lines.

Prints microseconds per reserve+settle (best and median of the rounds), one request at a time,
counters already started (the first reserve reads the fake ledger view, outside the rounds).
The in-process store is timed on its own; the Redis and database stores include their round
trips (Redis and Postgres on loopback, SQLite on a temporary file), so they show the latency a
request waits, not only CPU. Then, as the gateway calls them, the CPU of this process per
reserve+settle with 32 callers at once, each settling as the gateway does (`settle_now` where
the store has it: the Redis store batches settlements).
Run: `.venv/bin/python benchmarks/budget_store_cost.py [in_process redis postgres sqlite]`
(Redis at MONETA_BENCH_REDIS_URL, default redis://127.0.0.1:6379/14; Postgres at
MONETA_BENCH_POSTGRES_URL, default postgresql://postgres@127.0.0.1:5432/postgres, in a database
it creates and drops).
"""
from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone

from moneta.domain.budgets import BudgetLine
from moneta.infrastructure.budgets_in_process import InProcessBudgetStore

RUN = uuid.uuid4().hex[:8]  # fresh counters in a shared Redis
START = datetime.now(timezone.utc)
END = (START + timedelta(hours=1)).isoformat()  # the Redis keys left behind expire a day after
LINES = [BudgetLine(f"{kind}:{RUN}", START.isoformat(), 10**15, END) for kind in ("key", "team", "org")]


class Ledger:
    def spent(self, lines):
        return [0 for _ in lines]


async def rounds(store, calls: int, count: int = 15) -> list[float]:
    await store.reserve("warm-up", LINES, 1, 1, time.time())
    results = []
    for r in range(count):
        start = time.perf_counter()
        for i in range(calls):
            now = time.time()
            request_id = f"{r}-{i}"
            decision = await store.reserve(request_id, LINES, 5_000_000, 1_000_000, now)
            assert decision.allowed
            await store.settle(request_id, LINES, 1_200_000, now)
        results.append((time.perf_counter() - start) / calls * 1e6)
    return results


async def cpu_rounds(store, calls: int, callers: int = 32, count: int = 7) -> list[float]:
    """CPU of this process per reserve+settle, `callers` at once."""
    settle_now = getattr(store, "settle_now", None)

    async def caller(r: int, c: int) -> None:
        for i in range(calls // callers):
            now, request_id = time.time(), f"cpu-{r}-{c}-{i}"
            assert (await store.reserve(request_id, LINES, 5_000_000, 1_000_000, now)).allowed
            if settle_now is not None:
                settle_now(request_id, LINES, 1_200_000, now)
            else:
                await store.settle(request_id, LINES, 1_200_000, now)

    results = []
    for r in range(count):
        start = time.process_time()
        await asyncio.gather(*(caller(r, c) for c in range(callers)))
        results.append((time.process_time() - start) / (calls // callers * callers) * 1e6)
    return results


def report(name: str, us: list[float], cpu: list[float]) -> None:
    print(f"{name:12} best {min(us):8.1f} us   median {statistics.median(us):8.1f} us  per reserve+settle (3 lines); "
          f"CPU at 32 callers: median {statistics.median(cpu):6.1f} us")


async def main(which: list[str]) -> None:
    if "in_process" in which:
        store = InProcessBudgetStore(Ledger())
        report("in_process", await rounds(store, 20_000), await cpu_rounds(store, 20_000))
    if "redis" in which:
        from moneta.infrastructure.budgets_redis import RedisBudgetStore

        store = RedisBudgetStore(os.environ.get("MONETA_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14"), Ledger())
        report("redis", await rounds(store, 500), await cpu_rounds(store, 3_200))
        await store.close()
    if "sqlite" in which:
        from moneta.infrastructure.budgets_database import DatabaseBudgetStore

        with tempfile.TemporaryDirectory() as folder:
            store = DatabaseBudgetStore.open(f"sqlite:///{folder}/ledger.db", Ledger())
            report("sqlite", await rounds(store, 300), await cpu_rounds(store, 640, count=3))
            await store.close()
    if "postgres" in which:
        await postgres()


async def postgres() -> None:
    import psycopg

    from moneta.infrastructure.budgets_database import DatabaseBudgetStore

    admin = os.environ.get("MONETA_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    name = f"moneta_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        store = DatabaseBudgetStore.open(admin.rsplit("/", 1)[0] + f"/{name}", Ledger())
        report("postgres", await rounds(store, 300), await cpu_rounds(store, 640, count=3))
        await store.close()
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:] or ["in_process", "redis", "sqlite", "postgres"]))
