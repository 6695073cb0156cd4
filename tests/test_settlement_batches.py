"""Settlements go to Redis in batches (a group commit): those that end together share one script
call, each is applied exactly once, closing sends what is queued, and a crash loses at most what
was queued, which the leases then release. The pipelined script client answers each caller its own
reply, reloads a script Redis does not know, and gives up on a slow Redis after its timeout."""
from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import redis

from moneta.domain.budgets import LEASE_S, BudgetLine
from moneta.domain.rate_limits import SLOT_LEASE_S, Limit
from moneta.infrastructure.budgets_redis import RedisBudgetStore
from moneta.infrastructure.limits_redis import RedisLimitStore
from moneta.infrastructure.redis_scripts import RedisScripts
from moneta.infrastructure.settlement_batches import MAX_PER_CALL, SettlementBatches
from tests import settlement_crash_worker as crash
from tests.tcp_proxy import TcpProxy

ROOT = Path(__file__).resolve().parent.parent
T0 = crash.T0


class Calls:
    """A fake batch script: records each call's keys and args; `gate` holds a call until set."""

    def __init__(self) -> None:
        self.made: list[tuple[list[str], list]] = []
        self.gate: asyncio.Event | None = None
        self.fail_with: Exception | None = None

    async def __call__(self, *, keys, args) -> None:
        self.made.append((list(keys), list(args)))
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_with is not None:
            raise self.fail_with


async def test_settlements_that_end_together_share_one_call_and_later_ones_the_next():
    calls, errors = Calls(), []
    batches = SettlementBatches(calls, errors.append, head=["ttl"])
    calls.gate = asyncio.Event()
    first = [batches.add([f"k{i}"], [1, i]) for i in range(3)]  # in one turn of the loop
    await asyncio.sleep(0)
    assert calls.made == [(["k0", "k1", "k2"], ["ttl", 1, 0, 1, 1, 1, 2])]
    later = [batches.add([f"l{i}"], [1, i]) for i in range(2)]  # while the first call is on its way
    await asyncio.sleep(0.01)
    assert len(calls.made) == 1 and not any(future.done() for future in first + later)
    calls.gate.set()
    await asyncio.gather(*first, *later)
    assert calls.made[1] == (["l0", "l1"], ["ttl", 1, 0, 1, 1])
    assert len(calls.made) == 2 and errors == []


async def test_a_call_carries_at_most_its_share_and_a_failure_is_reported_once_per_call():
    calls, errors = Calls(), []
    batches = SettlementBatches(calls, errors.append)
    futures = [batches.add([f"k{i}"], [i]) for i in range(MAX_PER_CALL + 1)]
    await batches.drain()
    assert [len(keys) for keys, _ in calls.made] == [MAX_PER_CALL, 1]
    assert all(future.done() and future.exception() is None for future in futures)

    calls.fail_with = redis.ConnectionError("gone")
    lost = [batches.add(["x"], [1]), batches.add(["y"], [2])]
    await batches.drain()
    assert errors == [calls.fail_with]
    for future in lost:
        with pytest.raises(redis.ConnectionError):
            await future


def _budget_lines(run: str) -> list[BudgetLine]:
    return [BudgetLine(f"key:{run}", "2026-09-01T00:00:00+00:00", 10**12, "2026-10-01T00:00:00+00:00"),
            BudgetLine(f"team:{run}", "", 10**12, None)]


class Nothing:
    def spent(self, lines):
        return [0 for _ in lines]


@pytest.mark.redis
async def test_concurrent_budget_settlements_are_each_applied_exactly_once(redis_url):
    store = RedisBudgetStore(redis_url, Nothing())
    lines = _budget_lines(uuid.uuid4().hex)
    ids = [f"r{i}" for i in range(200)]
    for request_id in ids:
        assert (await store.reserve(request_id, lines, 1_000, 1, T0)).allowed
    for i, request_id in enumerate(ids):  # all in one turn of the loop, as many calls ending at once
        store.settle_now(request_id, lines, i, T0)
    await store.settle("r-awaited", lines, 0, T0)  # waits for the batch it joins
    probe = await store.reserve("probe", lines, 1, 1, T0)
    assert [(seen.spent, seen.reserved) for seen in probe.seen] == [(sum(range(200)), 0)] * 2
    await store.close()


@pytest.mark.redis
async def test_concurrent_limit_settlements_add_their_tokens_once_and_free_their_slots(redis_url):
    store = RedisLimitStore(redis_url)
    limits = [Limit(f"key:{uuid.uuid4().hex}", tpm=10**9, max_parallel=500)]
    decisions = await asyncio.gather(*(store.acquire(f"r{i}", limits, T0) for i in range(100)))
    assert all(decision.allowed for decision in decisions)
    for i in range(100):
        store.settle_now(f"r{i}", limits, i, T0 + 1)
    await store.close()  # sends what is queued
    again = RedisLimitStore(redis_url)
    after = await again.acquire("after", limits, T0 + 2)
    assert (after.counts[0].tokens, after.counts[0].parallel) == (sum(range(100)), 0)
    await again.close()


@pytest.mark.redis
async def test_a_crash_loses_only_the_queued_settlements_and_their_leases_release_them(redis_url):
    run = uuid.uuid4().hex
    worker = subprocess.run([sys.executable, "-m", "tests.settlement_crash_worker", redis_url, run],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert worker.returncode == 0, worker.stderr
    budgets = RedisBudgetStore(redis_url, Nothing())
    lines = crash.budget_lines(run)
    seen = (await budgets.reserve("probe", lines, 1, 1, T0)).seen
    settled, queued = crash.SETTLED, crash.CALLS - crash.SETTLED
    # The awaited settlements were applied once; the queued ones still hold their reservations.
    assert [(s.spent, s.reserved) for s in seen] == [(settled * crash.COST, queued * crash.AMOUNT)] * 2
    await budgets.settle("probe", lines, 0, T0)
    released = (await budgets.reserve("late", lines, 1, 1, T0 + LEASE_S + 1)).seen
    assert [(s.spent, s.reserved) for s in released] == [(settled * crash.COST, 0)] * 2
    await budgets.close()

    limits = RedisLimitStore(redis_url)
    scopes = crash.limits(run)
    assert (await limits.acquire("probe", scopes, T0)).counts[0].parallel == queued
    assert (await limits.acquire("late", scopes, T0 + SLOT_LEASE_S + 1)).counts[0].parallel == 0
    await limits.close()


@pytest.mark.redis
async def test_the_script_client_answers_each_caller_and_loads_a_script_redis_lacks(redis_url):
    client = RedisScripts(redis_url, timeout_s=2)
    fresh = client.script(f"-- {uuid.uuid4()}\nreturn {{tonumber(ARGV[1]) * 2, ARGV[2], {{-3, false}}, KEYS[1]}}")
    replies = await asyncio.gather(*(fresh(keys=[f"k{i}"], args=[i, "é"]) for i in range(50)))
    assert replies == [[2 * i, "é".encode(), [-3, None], f"k{i}".encode()] for i in range(50)]
    failing = client.script("return redis.error_reply('NOPE no such thing')")
    with pytest.raises(redis.ResponseError, match="NOPE"):
        await failing(keys=[], args=[])
    assert await fresh(keys=["after"], args=[1, ""]) == [2, b"", [-3, None], b"after"]  # the connection is fine
    await client.close()


@pytest.mark.redis
async def test_the_script_client_gives_up_on_a_slow_redis_and_reconnects(redis_url):
    with TcpProxy.in_front_of(redis_url) as proxy:
        client = RedisScripts(proxy.url_for(redis_url), timeout_s=0.3)
        await client.ping()
        proxy.reply_delay_s = 1.0
        started = time.monotonic()
        results = await asyncio.gather(client.ping(), client.ping(), return_exceptions=True)
        assert all(isinstance(result, redis.TimeoutError) for result in results)
        assert time.monotonic() - started < 0.9
        proxy.reply_delay_s = 0.0
        await client.ping()  # on a new connection: the late replies of the old one are never read
        proxy.cut()
        with pytest.raises(redis.ConnectionError):
            await client.ping()
        await client.close()
