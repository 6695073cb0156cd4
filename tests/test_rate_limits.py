"""The rate-limit arithmetic (domain.rate_limits) and the in-process store that runs it."""
from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from moneta.domain.rate_limits import (
    MIN_RETRY_S, PARALLEL_RETRY_S, SLOT_LEASE_S, WINDOW_MS, Limit, Seen, decide, rolled, seconds_until_room,
    weighted,
)
from moneta.infrastructure.limits_in_process import InProcessLimitStore

T0 = 60 * 28_333_334.0  # a bucket edge (1_700_000_040 s)


def test_the_previous_bucket_fades_linearly_over_the_current_one():
    edge_ms = int(T0 * 1000)
    assert weighted(60, 0, edge_ms) == 60
    assert weighted(60, 0, edge_ms + 15_000) == 45
    assert weighted(60, 5, edge_ms + 30_000) == 35
    assert weighted(60, 0, edge_ms + WINDOW_MS - 1) == 1  # 60 x 1/60000, rounded up: never 0 before the edge
    assert weighted(1, 0, edge_ms + WINDOW_MS - 1) == 1


def test_buckets_roll_one_at_a_time_and_never_back():
    assert rolled(10, 3, 7, 10) == (3, 7)
    assert rolled(10, 3, 7, 11) == (7, 0)
    assert rolled(10, 3, 7, 12) == (0, 0)
    assert rolled(10, 3, 7, 9) == (3, 7)  # a clock behind the last counter's reads the counts as they are


def test_no_burst_of_twice_the_rpm_around_a_bucket_edge():
    store = InProcessLimitStore()
    limits = [Limit("key:k", rpm=10)]
    admitted_before = [store.acquire_now(f"a{i}", limits, T0 + 59).allowed for i in range(11)]
    assert admitted_before == [True] * 10 + [False]
    assert not store.acquire_now("edge", limits, T0 + 60).allowed  # a fixed window would admit 10 more here
    admitted_mid = [store.acquire_now(f"b{i}", limits, T0 + 90).allowed for i in range(6)]
    assert admitted_mid == [True] * 5 + [False]  # half of the previous bucket has faded


def test_a_refusal_says_exactly_when_a_retry_passes():
    store = InProcessLimitStore()
    limits = [Limit("key:k", rpm=10)]
    for i in range(10):
        store.acquire_now(f"r{i}", limits, T0 + 59)
    refused = store.acquire_now("late", limits, T0 + 59)
    assert (refused.refused_scope, refused.refused_limit) == ("key:k", "rpm")
    assert refused.retry_after_s == 7.0  # 1 s to the edge, then 6 s for 10 x (1 - 6/60) to reach 9
    assert not store.acquire_now("early", limits, T0 + 59 + 6.998).allowed
    assert store.acquire_now("on-time", limits, T0 + 59 + 7.0).allowed


def _count_at(previous: int, current: int, from_ms: int, at_ms: int) -> int:
    bucket = from_ms // WINDOW_MS
    p, c = rolled(bucket, previous, current, at_ms // WINDOW_MS)
    return weighted(p, c, at_ms)


@given(st.integers(0, 500), st.integers(0, 500), st.integers(1, 400), st.integers(0, WINDOW_MS - 1))
def test_seconds_until_room_is_the_first_millisecond_with_room(previous, current, limit, elapsed_ms):
    now_ms = int(T0 * 1000) + elapsed_ms
    wait_ms = round(seconds_until_room(previous, current, limit, now_ms) * 1000)
    assert _count_at(previous, current, now_ms, now_ms + wait_ms) + 1 <= limit
    if wait_ms > 0:
        assert _count_at(previous, current, now_ms, now_ms + wait_ms - 1) + 1 > limit


def test_tokens_count_at_settlement_and_a_request_is_admitted_while_under_the_tpm():
    store = InProcessLimitStore()
    limits = [Limit("key:k", tpm=100)]
    assert store.acquire_now("r1", limits, T0 + 1).allowed
    assert store.acquire_now("r2", limits, T0 + 1).allowed  # r1's tokens are not known yet
    store.settle_now("r1", limits, 99, T0 + 2)
    third = store.acquire_now("r3", limits, T0 + 3)
    assert third.allowed and third.counts[0].tokens == 99 and third.remaining_tokens() == 1
    store.settle_now("r2", limits, 1, T0 + 4)
    refused = store.acquire_now("r4", limits, T0 + 5)
    assert (refused.allowed, refused.refused_limit, refused.counts[0].tokens) == (False, "tpm", 100)
    assert refused.retry_after_s == 55.6  # 55 s to the edge, then 0.6 s for 100 x (1 - 0.6/60) to reach 99


def test_a_parallel_slot_is_released_at_settlement_or_when_its_lease_expires():
    store = InProcessLimitStore()
    limits = [Limit("key:k", max_parallel=1)]
    assert store.acquire_now("r1", limits, T0).allowed
    refused = store.acquire_now("r2", limits, T0 + 1)
    assert (refused.refused_limit, refused.retry_after_s, refused.counts[0].parallel) == \
        ("max_parallel", PARALLEL_RETRY_S, 1)
    store.settle_now("r1", limits, 10, T0 + 2)
    assert store.acquire_now("r2", limits, T0 + 2).allowed  # released by settle

    assert not store.acquire_now("r3", limits, T0 + 2 + SLOT_LEASE_S - 1).allowed  # r2 never settles: its process died
    assert store.acquire_now("r3", limits, T0 + 2 + SLOT_LEASE_S).allowed  # its lease has expired


def test_all_or_nothing_a_full_scope_leaves_the_others_uncounted():
    store = InProcessLimitStore()
    full = Limit("team:t", rpm=1)
    assert store.acquire_now("r0", [full], T0).allowed
    others = [Limit("key:k", rpm=5, max_parallel=5), Limit("user:u", rpm=5)]
    refused = store.acquire_now("r1", [*others, full], T0 + 1)
    assert (refused.allowed, refused.refused_scope) == (False, "team:t")
    after = store.acquire_now("r2", others, T0 + 2)
    assert [(c.requests, c.parallel) for c in after.counts] == [(0, 0), (0, 0)]


def test_scopes_without_limits_are_skipped():
    store = InProcessLimitStore()
    decision = store.acquire_now("r", [Limit("org:o"), Limit("key:k", rpm=3)], T0)
    assert [c.scope for c in decision.counts] == ["key:k"]
    assert store.acquire_now("r2", [Limit("org:o")], T0).counts == ()


def test_remaining_and_reset_follow_the_tightest_scope():
    seen = [Seen(0, 3, 0, 40, 0), Seen(0, 8, 0, 0, 0)]
    limits = [Limit("key:k", rpm=10, tpm=100), Limit("team:t", rpm=20)]
    decision = decide(limits, seen, T0 + 45)
    assert decision.allowed
    assert decision.remaining_requests() == 6  # key: 10 - 3 - this one
    assert decision.remaining_tokens() == 60
    assert decision.reset_requests_s() == 15.0  # room left: the window rolls at the edge
    assert decision.reset_tokens_s() == 15.0

    full = decide([Limit("key:k", rpm=10)], [Seen(0, 9, 0, 0, 0)], T0 + 45)
    assert full.allowed and full.remaining_requests() == 0
    assert full.reset_requests_s() == 21.0  # after this one the key is at 10: 15 s to the edge, 6 s to fade to 9

    none = decide([Limit("key:k", max_parallel=2)], [Seen(0, 0, 0, 0, 1)], T0)
    assert (none.remaining_requests(), none.remaining_tokens(), none.reset_requests_s()) == (None, None, None)


def test_the_longest_wait_among_the_refusals_is_reported():
    limits = [Limit("key:k", rpm=1, max_parallel=1), Limit("team:t", rpm=100, tpm=10)]
    decision = decide(limits, [Seen(0, 1, 0, 0, 1), Seen(0, 0, 0, 10, 0)], T0 + 30)
    assert (decision.refused_scope, decision.refused_limit) == ("key:k", "rpm")
    assert decision.retry_after_s == 90.0  # rpm=1 at 1: 30 s to the edge, then all of the next bucket; tpm: 36 s
    assert decide([Limit("k", rpm=5)], [Seen(600, 0, 0, 0, 0)], T0 + 59.5).retry_after_s == MIN_RETRY_S  # 0.1 s


def test_the_ledger_summary_is_plain_json():
    decision = decide([Limit("key:k", rpm=2, tpm=50, max_parallel=1)], [Seen(1, 2, 30, 10, 1)], T0 + 30)
    event = decision.as_event()
    assert json.loads(json.dumps(event)) == event
    assert event["refused_scope"] == "key:k" and event["allowed"] is False and event["refused_limit"] == "rpm"
    assert event["scopes"][0] == {
        "scope": "key:k", "rpm": 2, "tpm": 50, "max_parallel": 1, "requests": 3, "tokens": 25, "parallel": 1}
    admitted = decide([Limit("key:k", rpm=9)], [Seen(0, 0, 0, 0, 0)], T0).as_event()
    assert admitted == {"allowed": True, "scopes": [{"scope": "key:k", "rpm": 9, "requests": 0, "tokens": 0,
                                                     "parallel": 0}]}


def test_idle_windows_and_expired_leases_are_swept():
    store = InProcessLimitStore()
    store.acquire_now("r1", [Limit("key:gone", rpm=5, max_parallel=2)], T0)
    store.acquire_now("r2", [Limit("key:live", rpm=5)], T0 + SLOT_LEASE_S)
    assert set(store._windows) == {"key:live"} and store._slots == {}
