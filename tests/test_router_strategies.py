"""The pure parts of routing: strategies, retry and cooldown policies, settings from a LiteLLM config."""
from __future__ import annotations

import random
from collections import Counter
from decimal import Decimal

import pytest

from moneta.application.routing import RouterSettings
from moneta.domain import routing_strategies as s
from moneta.domain.cooldown_policy import CooldownPolicy
from moneta.domain.errors import (
    AuthenticationError,
    BadRequestError,
    ContentPolicyViolationError,
    ContextWindowExceededError,
    InternalServerError,
    RateLimitError,
    ServiceUnavailableError,
)
from moneta.domain.failure_kinds import failure_kind, policy_table
from moneta.domain.retry_policy import RetryPolicy
from moneta.infrastructure.config_loader import parse_config


def picks(strategy, candidates, n=4000, **kwargs) -> Counter:
    rng = random.Random(7)
    return Counter(strategy(candidates, rng, **kwargs).candidate.id for _ in range(n))


def test_simple_shuffle_follows_weight_then_rpm_then_tpm():
    by_weight = picks(s.simple_shuffle, [s.Candidate("a", weight=3, rpm=1), s.Candidate("b", weight=1, rpm=1000)])
    assert 0.7 < by_weight["a"] / 4000 < 0.8
    by_rpm = picks(s.simple_shuffle, [s.Candidate("a", rpm=100), s.Candidate("b", rpm=900, tpm=1)])
    assert 0.05 < by_rpm["a"] / 4000 < 0.15
    by_tpm = picks(s.simple_shuffle, [s.Candidate("a", tpm=1), s.Candidate("b", tpm=0)])
    assert by_tpm == {"a": 4000}
    even = picks(s.simple_shuffle, [s.Candidate("a"), s.Candidate("b")])
    assert 0.4 < even["a"] / 4000 < 0.6


def test_top_tier_keeps_the_lowest_order_and_puts_unordered_last():
    tier = s.top_tier([s.Candidate("a", order=2), s.Candidate("b", order=1), s.Candidate("c"), s.Candidate("d", order=1)])
    assert [c.id for c in tier] == ["b", "d"]
    assert [c.id for c in s.top_tier([s.Candidate("c"), s.Candidate("e")])] == ["c", "e"]


def test_least_busy_takes_the_fewest_in_flight():
    pick = s.least_busy([s.Candidate("a", in_flight=3), s.Candidate("b", in_flight=1)], random.Random(1))
    assert pick.candidate.id == "b" and "1 in flight" in pick.reason


def test_latency_based_measures_everyone_first_then_prefers_the_fastest():
    fresh = [s.Candidate("a", latency_ms=5.0), s.Candidate("b")]
    assert picks(s.latency_based, fresh, n=50) == {"b": 50}
    measured = [s.Candidate("a", latency_ms=50.0), s.Candidate("b", latency_ms=10.0), s.Candidate("c", latency_ms=11.0)]
    assert picks(s.latency_based, measured, n=200) == {"b": 200}
    spread = picks(s.latency_based, measured, n=400, buffer=0.2)
    assert set(spread) == {"b", "c"}


def test_usage_based_needs_headroom_and_takes_the_least_used():
    candidates = [s.Candidate("a", tpm=1000, tpm_used=900), s.Candidate("b", tpm=1000, tpm_used=200),
                  s.Candidate("c", rpm=5, rpm_used=5)]
    assert s.usage_based(candidates, random.Random(1), 50).candidate.id == "b"
    assert s.usage_based(candidates[:1], random.Random(1), 100).candidate.id == "a"
    with pytest.raises(s.NoCapacity):
        s.usage_based(candidates, random.Random(1), 900)


def test_cost_based_takes_the_cheapest_and_unpriced_last():
    candidates = [s.Candidate("a", cost_per_token=Decimal("0.00002")), s.Candidate("b", cost_per_token=Decimal("0.000001")),
                  s.Candidate("c")]
    assert picks(s.cost_based, candidates, n=100) == {"b": 100}
    assert s.cost_based([s.Candidate("c")], random.Random(1)).reason == "cost-based-routing: no prices known"


def test_failure_kinds_are_litellms():
    assert failure_kind(ContentPolicyViolationError("x")) == "ContentPolicyViolationError"
    assert failure_kind(ContextWindowExceededError("x")) == "BadRequestError"
    assert failure_kind(RateLimitError("x")) == "RateLimitError"
    assert failure_kind(ServiceUnavailableError("x")) == "InternalServerError"
    assert failure_kind(InternalServerError("x", status_code=429)) == "RateLimitError"
    assert policy_table({"RateLimitErrorRetries": 2}, "Retries") == {"RateLimitError": 2}
    with pytest.raises(ValueError, match="unknown policy key"):
        policy_table({"RateLimitRetries": 2}, "Retries")


def test_retry_policy_by_error_kind_and_waits():
    policy = RetryPolicy(num_retries=2, retries_by_kind={"RateLimitError": 5, "BadRequestError": 1})
    assert policy.retries_for(InternalServerError("x")) == 2
    assert policy.retries_for(RateLimitError("x")) == 5
    assert policy.retries_for(BadRequestError("x")) == 1
    assert policy.retries_for(AuthenticationError("x")) == 0  # the caller's mistake: not retried by default
    assert policy.wait_s(1, RateLimitError("x", retry_after=3), other_deployment=True) == 0.0
    assert policy.wait_s(1, RateLimitError("x", retry_after=3), other_deployment=False) == 3
    assert policy.wait_s(1, RateLimitError("x", retry_after=60), other_deployment=False) is None
    assert [policy.wait_s(n, InternalServerError("x"), False) for n in (1, 2, 3, 10)] == [0.5, 1.0, 2.0, 10.0]
    assert RetryPolicy(min_wait_s=2).wait_s(1, InternalServerError("x"), False) == 2


def test_cooldown_policy():
    policy = CooldownPolicy(allowed_fails=3, allowed_fails_by_kind={"BadRequestError": 10}, cooldown_s=5)
    assert policy.allowed_fails_for(InternalServerError("x"), group_size=2) == 3
    assert policy.allowed_fails_for(RateLimitError("x"), group_size=2) == 0
    assert policy.allowed_fails_for(RateLimitError("x"), group_size=1) is None
    assert policy.allowed_fails_for(BadRequestError("x"), group_size=3) == 10
    assert policy.allowed_fails_for(ContentPolicyViolationError("x"), group_size=3) is None
    assert CooldownPolicy().allowed_fails_for(BadRequestError("x"), group_size=3) is None
    assert CooldownPolicy(disabled=True).allowed_fails_for(RateLimitError("x"), group_size=3) is None
    assert policy.cooldown_for(RateLimitError("x", retry_after=20)) == 20
    assert policy.cooldown_for(RateLimitError("x", retry_after=1)) == 5
    assert policy.cooldown_for(RateLimitError("x", retry_after=10_000)) == 300


def _settings(**sections) -> RouterSettings:
    raw = {"model_list": [{"model_name": n, "litellm_params": {"model": f"mock/{n}"}} for n in ("a", "b", "c", "d")]}
    return RouterSettings.from_config(parse_config({**raw, **sections}, {}))


def test_settings_read_litellms_config():
    settings = _settings(
        router_settings={"routing_strategy": "usage-based-routing", "num_retries": 2, "allowed_fails": 1,
                         "cooldown_time": 30, "retry_policy": {"TimeoutErrorRetries": 4},
                         "allowed_fails_policy": {"RateLimitErrorAllowedFails": 7},
                         "fallbacks": [{"a": ["b", "c"]}], "context_window_fallbacks": [{"a": ["d"]}],
                         "timeout": 30, "stream_timeout": 5},
        litellm_settings={"default_fallbacks": ["d"], "content_policy_fallbacks": [{"a": ["c"]}]},
    )
    assert settings.strategy == "usage-based-routing-v2"
    assert settings.retry.num_retries == 2 and settings.retry.retries_by_kind == {"TimeoutError": 4}
    assert settings.cooldown.allowed_fails == 1 and settings.cooldown.cooldown_s == 30
    assert settings.cooldown.allowed_fails_by_kind == {"RateLimitError": 7}
    assert settings.fallbacks_for("a", InternalServerError("x")) == ("b", "c")
    assert settings.fallbacks_for("a", ContextWindowExceededError("x")) == ("d",)
    assert settings.fallbacks_for("a", ContentPolicyViolationError("x")) == ("c",)
    assert settings.fallbacks_for("a", BadRequestError("x")) == ()
    assert settings.fallbacks_for("b", InternalServerError("x")) == ("d",)
    assert settings.fallbacks_for("b", ContextWindowExceededError("x")) == ()  # only its own list, as in LiteLLM
    assert settings.fallbacks_for("d", InternalServerError("x")) == ()


def test_settings_refuse_unknown_strategies_and_policy_keys():
    with pytest.raises(ValueError, match="routing_strategy"):
        _settings(router_settings={"routing_strategy": "fastest"})
    with pytest.raises(ValueError, match="retry_policy"):
        _settings(router_settings={"retry_policy": {"Timeouts": 1}})
