"""Every budget store decides as `domain.budgets.decide`, all or nothing, with leases and counters
started from the ledger's view once; under concurrency (Redis, Postgres, SQLite: two OS processes
at once) it admits exactly what the limit pays for; a Redis out of reach is BudgetUnverifiable at once."""
from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import AsyncIterator

import pytest

from moneta.application.budget_store import BudgetUnverifiable
from moneta.domain.budgets import LEASE_S, BudgetLine
from moneta.infrastructure.budget_stores import budget_store_for
from moneta.infrastructure.budgets_database import KEEP_S, DatabaseBudgetStore, budgets_file
from moneta.infrastructure.budgets_in_process import InProcessBudgetStore
from moneta.infrastructure.budgets_redis import MAX_EXACT, RedisBudgetStore
from tests import budget_store_worker
from tests.tcp_proxy import TcpProxy

ROOT = Path(__file__).resolve().parent.parent
T0 = 1_790_000_000.0
MONTH = ("2026-09-01T00:00:00+00:00", "2026-10-01T00:00:00+00:00")
KINDS = ["in_process", pytest.param("redis", marks=pytest.mark.redis),
         pytest.param("postgres", marks=pytest.mark.postgres), "sqlite"]


class Ledger:
    """A fake SpentReader: the budget view's spend per scope, and which lines it was asked about."""

    def __init__(self, spent: dict[str, int] | None = None) -> None:
        self.spent_by_scope = spent or {}
        self.asked: list[str] = []

    def spent(self, lines):
        self.asked += [line.scope for line in lines]
        return [self.spent_by_scope.get(line.scope, 0) for line in lines]


def line(scope: str, limit: int, monthly: bool = True) -> BudgetLine:
    return BudgetLine(scope, *MONTH[:1], limit, MONTH[1]) if monthly else BudgetLine(scope, "", limit, None)


def _url(request, kind: str) -> str:
    if kind == "redis":
        return request.getfixturevalue("redis_url")
    return request.getfixturevalue("postgres_url" if kind == "postgres" else "sqlite_url")


def _open(kind: str, url: str, ledger: Ledger):
    if kind == "in_process":
        return InProcessBudgetStore(ledger)
    return RedisBudgetStore(url, ledger) if kind == "redis" else DatabaseBudgetStore.open(url, ledger)


@pytest.fixture(params=KINDS)
def kind_and_url(request) -> tuple[str, str]:
    return request.param, ("" if request.param == "in_process" else _url(request, request.param))


@pytest.fixture
async def ledger_and_store(kind_and_url) -> AsyncIterator[tuple[Ledger, object]]:
    ledger = Ledger({"key:k": 10, "team:t": 500})
    store = _open(*kind_and_url, ledger)
    yield ledger, store
    assert store.mode == {"postgres": "database", "sqlite": "database"}.get(kind_and_url[0], kind_and_url[0])
    await store.close()


def _counters(decision) -> list[tuple[int, int]]:
    return [(h.spent, h.reserved) for h in decision.seen]


async def test_reserves_up_to_the_limit_then_part_then_refuses_naming_the_tightest(ledger_and_store):
    _, store = ledger_and_store
    lines = [line("key:k", 100), line("team:t", 1000, monthly=False)]
    first = await store.reserve("r1", lines, 60, 20, T0)
    assert (first.allowed, first.reserved, _counters(first)) == (True, 60, [(10, 0), (500, 0)])
    part = await store.reserve("r2", lines, 60, 20, T0 + 1)  # 30 left on key:k: at least the minimum
    assert (part.allowed, part.reserved, _counters(part)) == (True, 30, [(10, 60), (500, 60)])
    refused = await store.reserve("r3", lines, 60, 1, T0 + 2)
    assert (refused.allowed, refused.reserved, refused.refused.line.scope) == (False, 0, "key:k")
    assert _counters(refused) == [(10, 90), (500, 90)] and refused.refused.reserved == 90


async def test_room_below_the_minimum_refuses(ledger_and_store):
    _, store = ledger_and_store
    lines = [line("key:k", 100)]
    assert (await store.reserve("r1", lines, 80, 80, T0)).reserved == 80
    refused = await store.reserve("r2", lines, 50, 11, T0)  # 10 left, 11 needed
    assert (refused.allowed, refused.refused.line.scope) == (False, "key:k")
    exact = await store.reserve("r3", lines, 50, 10, T0)
    assert (exact.allowed, exact.reserved) == (True, 10)


async def test_one_full_line_reserves_nothing_anywhere(ledger_and_store):
    _, store = ledger_and_store
    full = line("user:u", 5)
    assert (await store.reserve("r0", [full], 5, 5, T0)).allowed
    others = [line("key:k", 1000), line("team:t", 10_000, monthly=False)]
    refused = await store.reserve("r1", [*others, full], 100, 1, T0 + 1)
    assert (refused.allowed, refused.refused.line.scope) == (False, "user:u")
    after = await store.reserve("r2", others, 100, 1, T0 + 2)
    assert _counters(after) == [(10, 0), (500, 0)]


async def test_settling_replaces_the_reservation_with_the_cost(ledger_and_store):
    _, store = ledger_and_store
    lines = [line("key:k", 1000), line("team:t", 10_000, monthly=False)]
    await store.reserve("cheap", lines, 300, 300, T0)
    await store.reserve("dear", lines, 200, 200, T0)
    await store.settle("cheap", lines, 120, T0 + 1)
    await store.settle("dear", lines, 450, T0 + 2)  # more than it reserved: charged in full
    after = await store.reserve("next", lines, 1, 1, T0 + 3)
    assert _counters(after) == [(10 + 570, 0), (500 + 570, 0)]


async def test_an_expired_lease_frees_its_amount(ledger_and_store):
    _, store = ledger_and_store
    lines = [line("key:k", 100)]
    assert (await store.reserve("lost", lines, 90, 90, T0)).allowed  # its process died: never settled
    assert not (await store.reserve("next", lines, 90, 90, T0 + LEASE_S - 1)).allowed
    freed = await store.reserve("next", lines, 90, 90, T0 + LEASE_S)
    assert (freed.allowed, _counters(freed)) == (True, [(10, 0)])
    await store.settle("lost", lines, 40, T0 + LEASE_S + 1)  # late: its cost still counts
    assert _counters(await store.reserve("then", lines, 1, 1, T0 + LEASE_S + 2)) == [(50, 90)]


async def test_counters_start_from_the_ledger_once(ledger_and_store):
    ledger, store = ledger_and_store
    lines = [line("key:k", 1000), line("team:t", 10_000)]
    await store.reserve("r1", lines, 100, 100, T0)
    await store.settle("r1", lines, 100, T0)
    ledger.spent_by_scope = {"key:k": 999, "team:t": 999, "org:o": 7}  # the view moved on: not read again
    again = await store.reserve("r2", [*lines, line("org:o", 100)], 1, 1, T0 + 1)
    assert _counters(again) == [(110, 0), (600, 0), (7, 0)]
    assert ledger.asked == ["key:k", "team:t", "org:o"]


@pytest.mark.parametrize("kind", [pytest.param("redis", marks=pytest.mark.redis),
                                  pytest.param("postgres", marks=pytest.mark.postgres), "sqlite"])
async def test_a_shared_counter_outlives_the_store_that_started_it(request, kind):
    url = _url(request, kind)
    first = _open(kind, url, Ledger({"key:k": 10}))
    await first.reserve("r1", [line("key:k", 100)], 30, 30, T0)
    await first.close()
    ledger = Ledger({"key:k": 50})
    second = _open(kind, url, ledger)
    seen = await second.reserve("r2", [line("key:k", 100)], 1, 1, T0 + 1)
    await second.close()
    assert (_counters(seen), ledger.asked) == ([(10, 30)], [])


@pytest.mark.parametrize("kind", [pytest.param("postgres", marks=pytest.mark.postgres), "sqlite"])
async def test_the_database_sweeps_ended_periods_and_expired_leases(request, kind):
    ledger = Ledger({"key:k": 10})
    store = _open(kind, _url(request, kind), ledger)
    await store.reserve("lost", [line("key:k", 100)], 30, 30, T0)
    a_day_after_the_month = datetime.fromisoformat(MONTH[1]).timestamp() + KEEP_S
    await store.reserve("other", [line("user:u", 100, monthly=False)], 1, 1, a_day_after_the_month)
    seen = await store.reserve("again", [line("key:k", 100)], 1, 1, a_day_after_the_month)
    await store.close()
    assert (_counters(seen), ledger.asked) == ([(10, 0)], ["key:k", "user:u", "key:k"])


async def test_concurrent_reservations_admit_exactly_what_the_limit_pays_for(ledger_and_store):
    _, store = ledger_and_store
    w = 1_000
    lines = [line("key:k", 10 + 50 * w), line("team:t", 10**12, monthly=False)]

    async def call(i: int) -> bool:
        decision = await store.reserve(f"r{i}", lines, w, w, T0)
        if decision.allowed:
            await store.settle(f"r{i}", lines, w, T0)
        return decision.allowed

    assert sum(await asyncio.gather(*(call(i) for i in range(120)))) == 50
    assert _counters(await store.reserve("after", lines, 1, 1, T0))[0] == (10 + 50 * w, 0)


@pytest.mark.parametrize("kind", [pytest.param("redis", marks=pytest.mark.redis),
                                  pytest.param("postgres", marks=pytest.mark.postgres), "sqlite"])
async def test_two_processes_at_once_admit_exactly_what_the_limit_pays_for(request, kind):
    url = _url(request, kind)
    start_at = time.time() + 3  # both processes have imported and connected by then
    workers = [subprocess.Popen([sys.executable, "-m", "tests.budget_store_worker", "redis" if kind == "redis"
                                 else "database", url, str(start_at), "100", str(T0)],
                                cwd=ROOT, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [(await asyncio.to_thread(worker.communicate, timeout=120))[0].split() for worker in workers]
    assert all(worker.returncode == 0 for worker in workers)
    assert {mode for _, mode in outputs} == {"redis" if kind == "redis" else "database"}
    assert sum(int(admitted) for admitted, _ in outputs) == 50
    store = _open(kind, url, Ledger())
    final = await store.reserve("after", budget_store_worker.LINES, 1, 1, T0)
    await store.close()
    w, started = budget_store_worker.W, budget_store_worker.STARTED
    assert (final.allowed, _counters(final)) == (False, [(started + 50 * w, 0), (started + 50 * w, 0)])


@pytest.mark.redis
async def test_a_redis_out_of_reach_is_unverifiable_at_once_and_then_verified_again(redis_url):
    with TcpProxy.in_front_of(redis_url) as proxy:
        store = RedisBudgetStore(proxy.url_for(redis_url), Ledger(), retry_s=0.2)
        lines = [line("key:k", 100)]
        assert (await store.reserve("r1", lines, 10, 10, T0)).allowed
        for cut in (proxy.cut, lambda: setattr(proxy, "reply_delay_s", 2.0)):
            proxy.reply_delay_s = 0.0
            proxy.restore()
            await _verified_again(store)
            cut()
            for attempt in range(2):  # the one that finds out, then one while it is known to be down
                started = time.monotonic()
                with pytest.raises(BudgetUnverifiable):
                    await store.reserve(f"r-{attempt}", lines, 10, 10, T0)
                assert time.monotonic() - started < 1.0
            assert not store.healthy()
        await store.close()


async def _verified_again(store: RedisBudgetStore) -> None:
    deadline = time.monotonic() + 10
    while not store.healthy() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert store.healthy()


@pytest.mark.redis
async def test_redis_refuses_an_amount_it_could_not_keep_exactly(redis_url):
    store = RedisBudgetStore(redis_url, Ledger())
    exact = await store.reserve("r1", [line("org:o", MAX_EXACT)], MAX_EXACT - 1, 1, T0)
    assert (exact.allowed, exact.reserved) == (True, MAX_EXACT - 1)
    assert (await store.reserve("r2", [line("org:o", MAX_EXACT)], 2, 1, T0)).reserved == 1
    with pytest.raises(ValueError):
        await store.reserve("r3", [line("org:big", MAX_EXACT + 1)], 1, 1, T0)
    await store.close()


def test_the_store_follows_the_configuration(tmp_path, redis_url):
    ledger = Ledger()
    assert budget_store_for(redis_url, None, 4, ledger).mode == "redis"
    database = budget_store_for(None, f"sqlite:///{tmp_path / 'ledger.db'}", 2, ledger)
    assert database.mode == "database" and Path(budgets_file(str(tmp_path / "ledger.db"))).exists()
    asyncio.run(database.close())
    assert budget_store_for(None, None, 1, ledger).mode == "in_process"
    assert budgets_file("/data/moneta.db") == "/data/moneta-budgets.db"
