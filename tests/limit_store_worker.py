"""Run as an OS process of its own by the rate-limit tests: from a given instant, makes concurrent
acquires on a shared store and prints how many were admitted.

    python -m tests.limit_store_worker <redis|database> <url> <start at, epoch s> <calls> <now>
"""
from __future__ import annotations

import asyncio
import os
import sys
import time

from moneta.domain.rate_limits import Limit
from moneta.infrastructure.limits_database import DatabaseLimitStore
from moneta.infrastructure.limits_redis import RedisLimitStore

LIMITS = [Limit("key:shared", rpm=50), Limit("team:shared", rpm=1000, max_parallel=1000)]


async def main(kind: str, url: str, start_at: float, calls: int, now: float) -> None:
    store = RedisLimitStore(url) if kind == "redis" else DatabaseLimitStore.open(url)
    await asyncio.sleep(max(0.0, start_at - time.time()))  # the processes start together
    decisions = await asyncio.gather(*(store.acquire(f"{os.getpid()}-{i}", LIMITS, now) for i in range(calls)))
    mode = store.mode
    await store.close()
    print(sum(d.allowed for d in decisions), mode)


if __name__ == "__main__":
    kind, url, start_at, calls, now = sys.argv[1:]
    asyncio.run(main(kind, url, float(start_at), int(calls), float(now)))
