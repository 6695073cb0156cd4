"""Redis cut or slow behind a TCP proxy: the Redis limit store answers at once from this process's
own counters, says so in its mode, and goes back to the shared counters once Redis answers."""
from __future__ import annotations

import asyncio
import time
from typing import AsyncIterator

import pytest
import redis

from moneta.domain.rate_limits import Limit
from moneta.infrastructure.limits_redis import PREFIX, TIMEOUT_S, RedisLimitStore
from tests.tcp_proxy import TcpProxy

pytestmark = pytest.mark.redis

LIMITS = [Limit("key:k", rpm=3, max_parallel=10)]
RETRY_S = 0.2
HANG_BOUND_S = 2.0  # generous: an answer within this did not wait on Redis


@pytest.fixture
async def proxied(redis_url) -> AsyncIterator[tuple[TcpProxy, RedisLimitStore, redis.Redis]]:
    with TcpProxy.in_front_of(redis_url) as proxy:
        store = RedisLimitStore(proxy.url_for(redis_url), retry_s=RETRY_S)
        direct = redis.Redis.from_url(redis_url)
        yield proxy, store, direct
        await store.close()
        direct.close()


async def _timed_acquire(store: RedisLimitStore, request_id: str) -> tuple[bool, float]:
    start = time.monotonic()
    decision = await store.acquire(request_id, LIMITS, time.time())
    return decision.allowed, time.monotonic() - start


def _shared_requests(direct: redis.Redis) -> int:
    return int(direct.hget(f"{PREFIX}w:key:k", "cr") or 0)


async def _back_to_redis(store: RedisLimitStore) -> None:
    deadline = time.monotonic() + 10
    while store.mode != "redis" and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


async def test_a_cut_redis_falls_back_to_this_process_and_comes_back(proxied):
    proxy, store, direct = proxied
    assert (await store.acquire("shared-1", LIMITS, time.time())).allowed
    assert (store.mode, store.healthy(), _shared_requests(direct)) == ("redis", True, 1)

    proxy.cut()
    answers = [await _timed_acquire(store, f"alone-{i}") for i in range(4)]
    assert store.mode == "per_process_fallback" and not store.healthy()
    assert [allowed for allowed, _ in answers] == [True, True, True, False]  # rpm=3 still holds, in this process
    assert max(seconds for _, seconds in answers) < HANG_BOUND_S
    await store.settle("alone-0", LIMITS, 10, time.time())  # admitted here, settled here: no Redis needed
    assert _shared_requests(direct) == 1  # nothing reached Redis meanwhile

    proxy.restore()
    await _back_to_redis(store)
    assert store.mode == "redis" and store.healthy()
    assert (await store.acquire("shared-2", LIMITS, time.time())).allowed
    assert _shared_requests(direct) == 2


async def test_a_slow_redis_is_left_after_the_timeout(proxied):
    proxy, store, direct = proxied
    assert (await store.acquire("shared-1", LIMITS, time.time())).allowed
    proxy.reply_delay_s = 4 * TIMEOUT_S
    allowed, seconds = await _timed_acquire(store, "slow")
    assert allowed and store.mode == "per_process_fallback"
    assert seconds < HANG_BOUND_S
    settle_started = time.monotonic()
    await store.settle("shared-1", LIMITS, 5, time.time())  # admitted by Redis, which is not asked now
    assert time.monotonic() - settle_started < HANG_BOUND_S

    proxy.reply_delay_s = 0.0
    await _back_to_redis(store)
    assert store.mode == "redis"
