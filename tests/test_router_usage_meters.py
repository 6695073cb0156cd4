"""The usage meter contract (this minute's requests and tokens against rpm/tpm), in process
and in Redis, and the Redis meter's sharing, keys and fallback when Redis is down."""
from __future__ import annotations

import logging

import pytest
import redis

from moneta.infrastructure.usage_in_process import InProcessUsageMeter
from moneta.infrastructure.usage_redis import USAGE_TTL_S, RedisUsageMeter, usage_key


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_080.0  # 40 s into a minute

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["in_process", "redis"])
def meter_and_clock(request):
    clock = Clock()
    if request.param == "in_process":
        return InProcessUsageMeter(clock), clock
    return RedisUsageMeter(request.getfixturevalue("redis_url"), clock=clock), clock


async def test_requests_are_counted_until_the_rpm_limit_then_refused(meter_and_clock):
    meter, _ = meter_and_clock
    group = ["a", "b"]
    assert await meter.take("a", 10, 2, None, group)
    assert await meter.take("a", 10, 2, None, group)
    assert not await meter.take("a", 10, 2, None, group)  # a third would exceed rpm 2: nothing counted
    assert await meter.take("b", 5, None, None, group)
    assert meter.seen(group) == {"a": (2, 20), "b": (1, 5)}


async def test_tokens_are_counted_against_the_tpm_limit(meter_and_clock):
    meter, _ = meter_and_clock
    assert await meter.take("a", 60, None, 100, ["a"])
    assert not await meter.take("a", 41, None, 100, ["a"])
    assert await meter.take("a", 40, None, 100, ["a"])
    assert meter.seen(["a"]) == {"a": (2, 100)}


async def test_a_new_minute_starts_from_zero(meter_and_clock):
    meter, clock = meter_and_clock
    assert await meter.take("a", 10, 1, None, ["a"])
    assert not await meter.take("a", 10, 1, None, ["a"])
    clock.now += 20
    assert meter.seen(["a"]) == {"a": (0, 0)}
    assert await meter.take("a", 10, 1, None, ["a"])


async def test_redis_meters_share_one_count_under_namespaced_expiring_keys(redis_url):
    clock = Clock()
    first, second = RedisUsageMeter(redis_url, clock=clock), RedisUsageMeter(redis_url, clock=clock)
    assert await first.take("a", 7, 2, None, ["a", "b"])
    assert second.seen(["a"]) == {"a": (0, 0)}  # seen only through a reply: no round trip to read
    assert await second.take("a", 7, 2, None, ["a", "b"])
    assert second.seen(["a", "b"]) == {"a": (2, 14), "b": (0, 0)}
    assert not await first.take("a", 7, 2, None, ["a", "b"])  # the shared count is at rpm 2
    assert first.seen(["a"]) == {"a": (2, 14)}  # the refusal brought the count back

    client = redis.Redis.from_url(redis_url)
    key = usage_key("a", int(clock.now // 60))
    assert key == f"moneta:router:usage:a:{int(clock.now // 60)}"
    assert client.keys("moneta:router:usage:*") == [key.encode()]
    assert 0 < client.ttl(key) <= USAGE_TTL_S


async def test_with_redis_down_the_process_counts_on_its_own_and_warns_once(caplog):
    meter = RedisUsageMeter("redis://127.0.0.1:1/0", clock=Clock())
    with caplog.at_level(logging.WARNING, logger="moneta.router"):
        assert await meter.take("a", 1, 2, None, ["a"])
        assert await meter.take("a", 1, 2, None, ["a"])
        assert not await meter.take("a", 1, 2, None, ["a"])
    assert meter.seen(["a"]) == {"a": (2, 2)}
    assert [r.message for r in caplog.records].count(caplog.records[0].message) == 1
    assert "usage counted in this process only" in caplog.records[0].message
