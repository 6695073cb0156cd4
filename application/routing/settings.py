"""The router's settings, read from LiteLLM's `router_settings` (and the `litellm_settings` that
LiteLLM also accepts for them), with LiteLLM's names and defaults."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from moneta.application.config import Deployment, GatewayConfig
from moneta.domain.cooldown_policy import CooldownPolicy
from moneta.domain.errors import BadRequestError, ContentPolicyViolationError, ContextWindowExceededError, GatewayError
from moneta.domain.failure_kinds import policy_table
from moneta.domain.retry_policy import RetryPolicy
from moneta.domain.routing_strategies import ALIASES, STRATEGIES

_Fallbacks = Mapping[str, tuple[str, ...]]


@dataclass(frozen=True)
class RouterSettings:
    strategy: str = "simple-shuffle"
    latency_buffer: float = 0.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    cooldown: CooldownPolicy = field(default_factory=CooldownPolicy)
    fallbacks: _Fallbacks = field(default_factory=dict)
    context_window_fallbacks: _Fallbacks = field(default_factory=dict)
    content_policy_fallbacks: _Fallbacks = field(default_factory=dict)
    default_fallbacks: tuple[str, ...] = ()
    max_fallbacks: int = 5
    timeout: float | None = None
    stream_timeout: float | None = None
    pre_call_checks: bool = False

    @classmethod
    def from_config(cls, config: GatewayConfig) -> "RouterSettings":
        raw = {**config.litellm_settings, **config.router_settings}
        name = raw.get("routing_strategy") or "simple-shuffle"
        strategy = ALIASES.get(name, name)
        if strategy not in STRATEGIES:
            raise ValueError(f"router_settings.routing_strategy: {strategy!r} is not one of {', '.join(STRATEGIES)}")
        args = raw.get("routing_strategy_args") or {}
        if not isinstance(args, Mapping):
            raise ValueError("router_settings.routing_strategy_args must be a mapping")
        return cls(
            strategy=strategy,
            latency_buffer=_number(args, "lowest_latency_buffer", 0, "routing_strategy_args."),
            retry=RetryPolicy(
                num_retries=config.num_retries,
                retries_by_kind=_named("retry_policy", raw, "Retries"),
                min_wait_s=_number(raw, "retry_after", 0),
            ),
            cooldown=CooldownPolicy(
                allowed_fails=int(_number(raw, "allowed_fails", 3, whole=True)),
                allowed_fails_by_kind=_named("allowed_fails_policy", raw, "AllowedFails"),
                cooldown_s=_number(raw, "cooldown_time", 5),
                disabled=bool(raw.get("disable_cooldowns", False)),
            ),
            fallbacks=_fallbacks(raw.get("fallbacks"), "fallbacks"),
            context_window_fallbacks=_fallbacks(raw.get("context_window_fallbacks"), "context_window_fallbacks"),
            content_policy_fallbacks=_fallbacks(raw.get("content_policy_fallbacks"), "content_policy_fallbacks"),
            default_fallbacks=tuple(raw.get("default_fallbacks") or ()),
            max_fallbacks=int(_number(raw, "max_fallbacks", 5, whole=True)),
            timeout=_number(raw, "timeout", config.request_timeout) or None,
            stream_timeout=_number(raw, "stream_timeout", 0) or None,
            pre_call_checks=bool(raw.get("enable_pre_call_checks", False)),
        )

    def fallbacks_for(self, model_group: str, error: GatewayError) -> tuple[str, ...]:
        """The groups to try, in order, once `model_group` has failed with `error`. As in LiteLLM,
        a context window or content policy error goes only to its own list, and another mistake
        of the caller's (400) nowhere: it would fail the same way everywhere."""
        if isinstance(error, ContextWindowExceededError):
            chosen = self.context_window_fallbacks.get(model_group, ())
        elif isinstance(error, ContentPolicyViolationError):
            chosen = self.content_policy_fallbacks.get(model_group, ())
        elif isinstance(error, BadRequestError):
            chosen = ()
        else:
            chosen = self.fallbacks.get(model_group, ()) or self.default_fallbacks
        return tuple(g for g in chosen if g != model_group)[: self.max_fallbacks]

    def every_fallback(self, model_group: str) -> tuple[str, ...]:
        """Every group a call to `model_group` may fall back to, whatever the error."""
        lists = (self.fallbacks.get(model_group, ()) or self.default_fallbacks,
                 self.context_window_fallbacks.get(model_group, ()), self.content_policy_fallbacks.get(model_group, ()))
        chosen = (tuple(g for g in groups if g != model_group)[: self.max_fallbacks] for groups in lists)
        return tuple(dict.fromkeys(group for groups in chosen for group in groups))

    def timeout_for(self, deployment: Deployment, stream: bool) -> float | None:
        """How long one attempt may take; for a stream, until its first chunk."""
        if stream:
            return deployment.stream_timeout or self.stream_timeout or deployment.timeout or self.timeout
        return deployment.timeout or self.timeout


def _named(key: str, raw: Mapping[str, Any], suffix: str) -> dict[str, int]:
    try:
        return policy_table(raw.get(key), suffix)
    except ValueError as error:
        raise ValueError(f"router_settings.{key}: {error}") from None


def _fallbacks(raw: Any, key: str) -> dict[str, tuple[str, ...]]:
    """LiteLLM writes `[{"gpt-4": ["gpt-4o", "claude"]}, ...]`; a plain mapping is accepted too."""
    entries = raw if isinstance(raw, list) else [raw or {}]
    table: dict[str, tuple[str, ...]] = {}
    for entry in entries:
        if not isinstance(entry, dict):
            raise ValueError(f"{key}: each entry must map a model group to a list of model groups")
        for group, targets in entry.items():
            table[str(group)] = tuple([targets] if isinstance(targets, str) else targets)
    return table


def _number(raw: Mapping[str, Any], key: str, default: float, within: str = "", *, whole: bool = False) -> float:
    """A non-negative number (`whole`: an integer) from the settings, or `default` when unset."""
    value = raw.get(key)
    if value is None:
        return default
    kind = "whole number" if whole else "number"
    try:
        number = float(value) if not isinstance(value, bool) else -1.0
    except (TypeError, ValueError):
        number = -1.0
    if number < 0 or (whole and not number.is_integer()):
        raise ValueError(f"router_settings.{within}{key} must be a non-negative {kind}, got {value!r}")
    return number
