"""What one acquire + settle costs per limit store, for a request under 5 scopes.

Prints microseconds per acquire+settle (best and median of the rounds), one request at a time.
The in-process store is timed on its own; the Redis and database stores include their round
trips (Redis and Postgres on loopback, SQLite on a temporary file), so they show the latency a
request waits, not only CPU. Then, as the gateway calls them, the CPU of this process per
acquire+settle with 32 callers at once, each settling as the gateway does (`settle_now` where the
store has it: the Redis store batches settlements).
Run: `.venv/bin/python benchmarks/limit_store_cost.py [in_process redis postgres sqlite]`
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

from moneta.domain.rate_limits import Limit
from moneta.infrastructure.limits_in_process import InProcessLimitStore

LIMITS = [
    Limit("key:k1", rpm=1_000_000_000, tpm=10**15, max_parallel=1_000_000),
    Limit("user:u1", rpm=1_000_000_000),
    Limit("team:t1", rpm=1_000_000_000, tpm=10**15),
    Limit("org:o1", tpm=10**15),
    Limit("key_model:k1:gpt-4o-mini", rpm=1_000_000_000, max_parallel=1_000_000),
]


async def rounds(store, calls: int, count: int = 15) -> list[float]:
    results = []
    for r in range(count):
        start = time.perf_counter()
        for i in range(calls):
            now = time.time()
            request_id = f"{r}-{i}"
            decision = await store.acquire(request_id, LIMITS, now)
            assert decision.allowed
            await store.settle(request_id, LIMITS, 120, now)
        results.append((time.perf_counter() - start) / calls * 1e6)
    return results


async def cpu_rounds(store, calls: int, callers: int = 32, count: int = 7) -> list[float]:
    """CPU of this process per acquire+settle, `callers` at once."""
    settle_now = getattr(store, "settle_now", None)

    async def caller(r: int, c: int) -> None:
        for i in range(calls // callers):
            now, request_id = time.time(), f"cpu-{r}-{c}-{i}"
            assert (await store.acquire(request_id, LIMITS, now)).allowed
            if settle_now is not None:
                settle_now(request_id, LIMITS, 120, now)
            else:
                await store.settle(request_id, LIMITS, 120, now)

    results = []
    for r in range(count):
        start = time.process_time()
        await asyncio.gather(*(caller(r, c) for c in range(callers)))
        results.append((time.process_time() - start) / (calls // callers * callers) * 1e6)
    return results


def report(name: str, us: list[float], cpu: list[float]) -> None:
    print(f"{name:12} best {min(us):8.1f} us   median {statistics.median(us):8.1f} us  per acquire+settle (5 scopes); "
          f"CPU at 32 callers: median {statistics.median(cpu):6.1f} us")


async def main(which: list[str]) -> None:
    if "in_process" in which:
        store = InProcessLimitStore()
        report("in_process", await rounds(store, 20_000), await cpu_rounds(store, 20_000))
    if "redis" in which:
        from moneta.infrastructure.limits_redis import RedisLimitStore

        store = RedisLimitStore(os.environ.get("MONETA_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14"))
        report("redis", await rounds(store, 500), await cpu_rounds(store, 3_200))
        await store.close()
    if "sqlite" in which:
        from moneta.infrastructure.limits_database import DatabaseLimitStore

        with tempfile.TemporaryDirectory() as folder:
            store = DatabaseLimitStore.open(f"sqlite:///{folder}/limits.db")
            report("sqlite", await rounds(store, 300), await cpu_rounds(store, 640, count=3))
            await store.close()
    if "postgres" in which:
        await postgres()


async def postgres() -> None:
    import psycopg

    from moneta.infrastructure.limits_database import DatabaseLimitStore

    admin = os.environ.get("MONETA_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    name = f"moneta_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        store = DatabaseLimitStore.open(admin.rsplit("/", 1)[0] + f"/{name}")
        report("postgres", await rounds(store, 300), await cpu_rounds(store, 640, count=3))
        await store.close()
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:] or ["in_process", "redis", "sqlite", "postgres"]))
