"""The cooldown store contract, in process and in Redis, and the deployment health aggregate."""
from __future__ import annotations

import time
from datetime import datetime, timezone

import pytest

from moneta.domain.deployment_health import DeploymentHealth, health_id
from moneta.infrastructure.cooldowns_in_process import InProcessCooldownStore
from moneta.infrastructure.cooldowns_redis import COOLDOWNS, RedisCooldownStore


def eventually(read, expected, timeout_s: float = 5.0):
    """What `read()` returns once it equals `expected` (the Redis store refreshes in the background)."""
    deadline = time.monotonic() + timeout_s
    while (value := read()) != expected and time.monotonic() < deadline:
        time.sleep(0.01)
    return value


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["in_process", "redis"])
def store_and_clock(request):
    clock = Clock()
    if request.param == "in_process":
        return InProcessCooldownStore(clock), clock
    return RedisCooldownStore(request.getfixturevalue("redis_url"), cache_s=0.01, clock=clock), clock


def test_a_cooldown_starts_once_the_window_holds_more_than_allowed(store_and_clock):
    store, clock = store_and_clock
    assert store.count_failure("d1", "InternalServerError", 2, 60, 10) is None
    clock.now += 61  # the first failure leaves the window
    assert store.count_failure("d1", "InternalServerError", 2, 60, 10) is None
    assert store.count_failure("d1", "RateLimitError", 2, 60, 10) is None  # counted apart, by kind
    assert store.count_failure("d1", "InternalServerError", 2, 60, 10) is None
    assert store.state().cooling == {}
    ends = store.count_failure("d1", "InternalServerError", 2, 60, 10)
    assert ends == pytest.approx(clock.now + 10)
    assert store.state().cooling == {"d1": pytest.approx(ends)}
    for _ in range(5):  # already cooling: nobody starts it again
        assert store.count_failure("d1", "InternalServerError", 0, 60, 10) is None


def test_a_lapsed_cooldown_is_recovered_by_exactly_one_claim(store_and_clock):
    store, clock = store_and_clock
    store.count_failure("d1", "RateLimitError", 0, 60, 5)
    assert not store.claim_recovery("d1")  # still cooling
    clock.now += 5.5
    state = store.state()
    assert state.cooling == {} and state.lapsed == {"d1"}
    assert store.claim_recovery("d1")
    assert not store.claim_recovery("d1")
    assert store.state().lapsed == frozenset()


def test_redis_keys_are_namespaced_and_shared_between_stores(redis_url):
    import redis

    clock = Clock()
    first = RedisCooldownStore(redis_url, cache_s=0.01, clock=clock)
    second = RedisCooldownStore(redis_url, cache_s=0.01, clock=clock)
    assert first.count_failure("d1", "InternalServerError", 1, 60, 10) is None
    assert second.count_failure("d1", "InternalServerError", 1, 60, 10) is not None  # the shared count crossed 1
    assert eventually(lambda: first.state().cooling.keys(), {"d1"}) == {"d1"}
    keys = redis.Redis.from_url(redis_url).keys("*")
    assert keys and all(k.startswith(b"moneta:") for k in keys) and COOLDOWNS.encode() in keys


def test_redis_store_routes_on_a_copy_that_a_thread_of_its_own_refreshes(redis_url):
    clock = Clock()
    writer = RedisCooldownStore(redis_url, cache_s=0.01, clock=clock)
    writer.count_failure("d1", "RateLimitError", 0, 60, 30)
    reader = RedisCooldownStore(redis_url, cache_s=0.05, clock=clock)
    assert reader.state().cooling.keys() == {"d1"}  # loaded before its first use
    writer.count_failure("d2", "RateLimitError", 0, 60, 30)
    assert eventually(lambda: reader.state().cooling.keys(), {"d1", "d2"}) == {"d1", "d2"}

    calls = []
    reader._redis.zrange = lambda *args, **kwargs: calls.append(1) or []  # noqa: SLF001 - counts round trips
    for _ in range(1000):
        reader.state()
    assert len(calls) <= 2  # the refresher's, every 50 ms: routing itself made none
    for store in (writer, reader):
        store.close()


def test_deployment_health_records_only_changes_of_state():
    health = DeploymentHealth.register("d1", "gpt-4o")
    assert health.id == health_id("d1")
    assert health.recover() is False  # not cooling: no event
    until = datetime(2030, 1, 1, tzinfo=timezone.utc)
    health.cool_down(until=until, status_code=429, error_type="rate_limit_error", reason="RateLimitError")
    assert health.cooling_until == until and health.cooldowns == 1
    assert health.recover() is True
    assert health.cooling_until is None
    assert [type(e).__name__ for e in health.collect_events()] == ["Registered", "CooledDown", "Recovered"]


def test_a_manual_cooldown_is_routed_around_and_recovered_like_an_automatic_one(store_and_clock):
    store, clock = store_and_clock
    store.count_failure("d1", "InternalServerError", 5, 60, 10)
    ends = store.start_cooldown("d1", 30)
    assert ends == pytest.approx(clock.now + 30)
    assert store.state().cooling == {"d1": pytest.approx(ends)}
    assert store.count_failure("d1", "RateLimitError", 0, 60, 5) is None  # already cooling
    assert store.start_cooldown("d1", 2) == pytest.approx(clock.now + 2)  # the admin's word wins
    clock.now += 2.5
    assert store.state().lapsed == {"d1"} and store.claim_recovery("d1")


def test_a_manual_cooldown_in_redis_reaches_every_store(redis_url):
    clock = Clock()
    admin, worker = (RedisCooldownStore(redis_url, cache_s=0.01, clock=clock) for _ in range(2))
    ends = admin.start_cooldown("d-manual", 60)
    assert eventually(lambda: dict(worker.state().cooling), {"d-manual": ends}) == {"d-manual": ends}


def test_a_cooldown_recorded_before_requested_by_existed_still_reads():
    from eventsourcing.application import Application

    app = Application(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    health = DeploymentHealth.register("d1", "g")
    health.cool_down(until=datetime(2026, 1, 1, tzinfo=timezone.utc), status_code=503,
                     error_type="server_error", reason="InternalServerError: more than 1 in 60s")
    stored = app.mapper.to_stored_event(health.collect_events()[-1])
    state = app.mapper.transcoder.decode(stored.state)
    assert state.pop("class_version") == 2 and state.pop("requested_by") == ""
    old = type(stored)(stored.originator_id, stored.originator_version, stored.topic,
                       app.mapper.transcoder.encode(state))
    event = app.mapper.to_domain_event(old)
    assert (event.requested_by, event.reason) == ("", "InternalServerError: more than 1 in 60s")
