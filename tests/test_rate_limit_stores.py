"""Every limit store gives the same verdicts, counts all or nothing, and admits exactly rpm requests
under concurrency: from one event loop, and (Redis, Postgres, SQLite) from two OS processes at once."""
from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path
from typing import AsyncIterator

import pytest

from moneta.domain.rate_limits import SLOT_LEASE_S, Limit
from moneta.infrastructure.limit_stores import limit_store_for
from moneta.infrastructure.limits_database import DatabaseLimitStore, limits_file
from moneta.infrastructure.limits_in_process import InProcessLimitStore
from moneta.infrastructure.limits_redis import RedisLimitStore

ROOT = Path(__file__).resolve().parent.parent
T0 = 60 * 28_333_334.0  # a bucket edge
KINDS = ["in_process", pytest.param("redis", marks=pytest.mark.redis),
         pytest.param("postgres", marks=pytest.mark.postgres), "sqlite"]


def _url(request, kind: str) -> str:
    if kind == "redis":
        return request.getfixturevalue("redis_url")
    return request.getfixturevalue("postgres_url" if kind == "postgres" else "sqlite_url")


@pytest.fixture(params=KINDS)
async def store(request) -> AsyncIterator:
    kind = request.param
    if kind == "in_process":
        made = InProcessLimitStore()
    elif kind == "redis":
        made = RedisLimitStore(_url(request, kind))
    else:
        made = DatabaseLimitStore.open(_url(request, kind))
    yield made
    assert made.mode == ("in_process" if kind == "in_process" else "redis" if kind == "redis" else "database")
    await made.close()


async def test_the_window_reads_the_same_in_every_store(store):
    limits = [Limit("key:k", rpm=10)]
    admitted = [(await store.acquire(f"a{i}", limits, T0 + 59)).allowed for i in range(10)]
    refused = await store.acquire("late", limits, T0 + 59)
    assert admitted == [True] * 10 and not refused.allowed
    assert (refused.refused_scope, refused.refused_limit, refused.retry_after_s) == ("key:k", "rpm", 7.0)
    assert not (await store.acquire("edge", limits, T0 + 60)).allowed  # no burst at the bucket edge
    assert (await store.acquire("on-time", limits, T0 + 66)).allowed
    halfway = [(await store.acquire(f"b{i}", limits, T0 + 90)).allowed for i in range(5)]
    assert halfway == [True, True, True, True, False]  # 11 x 1/2 rounded up, +4 = 10


async def test_tokens_count_at_settlement_and_slots_are_leases(store):
    limits = [Limit("key:k", tpm=100, max_parallel=1)]
    assert (await store.acquire("r1", limits, T0 + 1)).allowed
    slot_taken = await store.acquire("r2", limits, T0 + 2)
    assert (slot_taken.refused_limit, slot_taken.counts[0].parallel) == ("max_parallel", 1)
    await store.settle("r1", limits, 100, T0 + 3)
    spent = await store.acquire("r2", limits, T0 + 4)
    assert (spent.refused_limit, spent.counts[0].tokens, spent.counts[0].parallel) == ("tpm", 100, 0)

    fresh = [Limit("key:other", max_parallel=1)]
    assert (await store.acquire("lost", fresh, T0 + 5)).allowed  # never settled: its process died
    assert not (await store.acquire("next", fresh, T0 + 5 + SLOT_LEASE_S - 1)).allowed
    assert (await store.acquire("next", fresh, T0 + 5 + SLOT_LEASE_S)).allowed


async def test_a_full_scope_counts_nothing_in_the_others(store):
    full = Limit("team:t", rpm=1)
    assert (await store.acquire("r0", [full], T0)).allowed
    others = [Limit("key:k", rpm=5, tpm=1000, max_parallel=5), Limit("user:u", rpm=5), Limit("org:o")]
    refused = await store.acquire("r1", [*others, full], T0 + 1)
    assert (refused.allowed, refused.refused_scope, [c.scope for c in refused.counts]) == \
        (False, "team:t", ["key:k", "user:u", "team:t"])
    after = await store.acquire("r2", others, T0 + 2)
    assert [(c.requests, c.parallel) for c in after.counts] == [(0, 0), (0, 0)]
    assert after.remaining_requests() == 4


async def test_concurrent_acquires_admit_exactly_the_rpm(store):
    limits = [Limit("key:k", rpm=50), Limit("team:t", rpm=500, max_parallel=500)]
    decisions = await asyncio.gather(*(store.acquire(f"r{i}", limits, T0 + 30) for i in range(120)))
    assert sum(d.allowed for d in decisions) == 50
    assert all(d.refused_scope == "key:k" for d in decisions if not d.allowed)
    final = await store.acquire("after", limits, T0 + 30)
    assert [c.requests for c in final.counts] == [50, 50] and final.counts[1].parallel == 50


@pytest.mark.parametrize("kind", [pytest.param("redis", marks=pytest.mark.redis),
                                  pytest.param("postgres", marks=pytest.mark.postgres), "sqlite"])
def test_two_processes_at_once_admit_exactly_the_rpm_between_them(request, kind):
    url = _url(request, kind)
    start_at = time.time() + 3  # both processes have imported and connected by then
    workers = [subprocess.Popen([sys.executable, "-m", "tests.limit_store_worker", "redis" if kind == "redis"
                                 else "database", url, str(start_at), "60", str(T0 + 30)],
                                cwd=ROOT, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [worker.communicate(timeout=120)[0].split() for worker in workers]
    assert all(worker.returncode == 0 for worker in workers)
    assert {mode for _, mode in outputs} == {"redis" if kind == "redis" else "database"}
    assert sum(int(admitted) for admitted, _ in outputs) == 50  # rpm=50 for the whole server, not per process


def test_the_store_follows_the_configuration(tmp_path, redis_url):
    assert limit_store_for(redis_url, None, workers=4).mode == "redis"
    database = limit_store_for(None, f"sqlite:///{tmp_path / 'ledger.db'}", workers=2)
    assert database.mode == "database" and Path(limits_file(str(tmp_path / "ledger.db"))).exists()
    asyncio.run(database.close())
    assert limit_store_for(None, None, workers=1).mode == "in_process"
    assert limits_file("/data/moneta.db") == "/data/moneta-limits.db"
