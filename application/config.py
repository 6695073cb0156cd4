"""The gateway's settings, as the composition root hands them to the use cases.

Loaded from a LiteLLM-format `config.yaml` by `infrastructure.config_loader`; the library
facade builds one from call arguments instead.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from functools import cached_property
from typing import Any

from moneta.domain.pricing import TokenPrice
from moneta.domain.redaction import secrets_in, url_password


@dataclass(frozen=True)
class Deployment:
    """One `model_list` entry: a concrete provider model behind a public model name."""

    id: str
    model_name: str
    provider: str
    provider_model: str
    api_base: str | None = None
    api_key: str | None = field(default=None, repr=False)
    api_version: str | None = None
    timeout: float | None = None
    stream_timeout: float | None = None
    rpm: int | None = None
    tpm: int | None = None
    weight: float | None = None
    order: int | None = None
    price: TokenPrice | None = None
    allow_zero_cost: bool = False
    extra_params: dict[str, Any] = field(default_factory=dict, repr=False)  # may hold provider credentials
    model_info: dict[str, Any] = field(default_factory=dict)
    # A pattern entry's `litellm_params.model` ("openai/*", "*"): a concrete model fills its `*`s.
    model_template: str | None = None

    @property
    def is_pattern(self) -> bool:
        return self.model_template is not None

    @property
    def label(self) -> str:
        return f"{self.provider}/{self.provider_model}"

    def secrets(self) -> list[str]:
        return [*([self.api_key] if self.api_key else []), *secrets_in(self.extra_params)]


@dataclass(frozen=True)
class ConnectionLimits:
    """What `moneta serve` allows one HTTP connection: a request head (request line and headers) of
    at most `max_header_bytes` in `max_header_count` headers, sent within `header_timeout_s`; a body
    with no gap longer than `body_timeout_s`; `keep_alive_timeout_s` idle between requests."""

    max_header_bytes: int = 64 * 1024
    max_header_count: int = 100
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    keep_alive_timeout_s: float = 5.0


CACHED_CALL_TYPES = frozenset({"chat", "text_completion", "embedding"})


@dataclass(frozen=True)
class CacheSettings:
    """`litellm_settings.cache: true` with its `cache_params`: where answers are kept and for how
    long (`ttl_s` None: no expiry), the key's namespace, and which calls are cached."""

    kind: str = "local"  # "local" (this process) or "redis" (shared)
    ttl_s: float | None = None
    namespace: str = ""
    call_types: frozenset[str] = CACHED_CALL_TYPES
    max_entries: int = 200  # local only: LiteLLM's in-memory bound
    redis_url: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class ProviderBudget:
    """`router_settings.provider_budget_config.<provider>`: what calls served by one provider may
    spend per period, whichever model group, key or team they come from."""

    provider: str  # as deployments name it: `openai` for `openai/gpt-4o`
    budget_limit: Decimal
    time_period: str


@dataclass(frozen=True)
class BudgetConfig:
    """The budgets the config itself sets, and how budgets behave."""

    proxy_max_budget: Decimal | None = None  # litellm_settings.max_budget: the whole proxy
    proxy_duration: str | None = None  # litellm_settings.budget_duration
    timezone: str | None = None  # litellm_settings.timezone: day, week and month periods follow its calendar
    fail_open: bool = False  # general_settings.budget_fail_open: admit when the counters cannot be read
    alert_share: Decimal | None = None  # general_settings.budget_alert_share: alert at max_budget x share
    end_user_budget_id: str | None = None  # litellm_settings.max_end_user_budget_id
    providers: tuple[ProviderBudget, ...] = ()  # router_settings.provider_budget_config


@dataclass(frozen=True)
class AlertSettings:
    """`general_settings.alerting: ["webhook"]`: where budget alerts are posted, the key that signs
    them, and how hard delivery tries (`alerting_args`)."""

    webhook_urls: tuple[str, ...] = field(repr=False)  # a URL's path may be its credential (Slack's are)
    webhook_secret: str = field(repr=False)
    timeout_s: float = 5.0
    max_attempts: int = 8
    backoff_s: float = 2.0  # before the 2nd attempt; doubled each time, with jitter, up to max_backoff_s
    max_backoff_s: float = 600.0


@dataclass(frozen=True)
class LagoSettings:
    """`moneta_settings.lago`: where Lago is, how the gateway bills through it and syncs from it."""

    api_url: str  # Lago's base URL; the client appends /api/v1
    api_key: str = field(repr=False)
    billable_metric_code: str = "llm_usage"
    customer_id_from: str = "customer"  # customer (the call's end user) | team | user | key
    entitlement_feature: str | None = None  # a subscription must hold this feature
    webhook_hmac_key: str | None = field(default=None, repr=False)  # None: webhooks are RS256 JWTs
    sync_interval_s: float = 60.0
    max_staleness_s: float = 600.0  # past this without a sync, on_unreachable decides
    on_unreachable: str = "deny"  # deny | allow


@dataclass(frozen=True)
class MonetaSettings:
    """`moneta_settings`: the virtual currency's default rate and, when configured, Lago."""

    askii_per_usd: Decimal = Decimal(1000)  # later changes are events, effective from a time
    lago: LagoSettings | None = None


@dataclass(frozen=True)
class GatewayConfig:
    deployments: tuple[Deployment, ...] = ()
    master_key: str | None = field(default=None, repr=False)
    database_url: str | None = field(default=None, repr=False)
    redis_url: str | None = field(default=None, repr=False)
    max_request_body_bytes: int = 10 * 1024 * 1024
    num_retries: int = 0
    request_timeout: float = 600.0
    drop_params: bool = False
    graceful_shutdown_timeout_s: float = 30.0  # how long `moneta serve` lets in-flight requests finish on SIGTERM
    abandon_after_s: float = 30.0  # a gateway process silent this long is gone: its open calls end as Abandoned
    ledger_timeout_s: float = 5.0  # how long a call waits for its events to be durable before its 503
    require_auth_for_metrics: bool = False  # GET /metrics asks for the master key
    connection_limits: ConnectionLimits = ConnectionLimits()
    cache: CacheSettings | None = None  # response caching, when litellm_settings.cache is true
    budgets: BudgetConfig = BudgetConfig()
    alerting: AlertSettings | None = None  # budget alerts to webhooks, when general_settings.alerting lists webhook
    moneta: MonetaSettings = MonetaSettings()
    # The settings as written: they may hold credentials (redis_password, database_url, ...).
    router_settings: dict[str, Any] = field(default_factory=dict, repr=False)
    litellm_settings: dict[str, Any] = field(default_factory=dict, repr=False)
    general_settings: dict[str, Any] = field(default_factory=dict, repr=False)
    # What the operator is told once at start-up: keys accepted but not supported, unknown keys, ...
    notices: tuple[str, ...] = ()

    def model_names(self) -> list[str]:
        """The model groups, patterns (`openai/*`) included."""
        return sorted({d.model_name for d in self.deployments})

    def secrets(self) -> tuple[str, ...]:
        """Every configured secret, so that redaction can mask them wherever they appear."""
        return self._secrets

    @cached_property
    def _secrets(self) -> tuple[str, ...]:
        cache_url = self.cache.redis_url if self.cache else None
        values = [self.master_key, self.database_url, self.redis_url, cache_url,
                  url_password(self.database_url or ""), url_password(self.redis_url or ""),
                  url_password(cache_url or ""),
                  *(secret for d in self.deployments for secret in d.secrets()),
                  *secrets_in(self.general_settings), *secrets_in(self.router_settings),
                  *secrets_in(self.litellm_settings), *self._alerting_secrets(), *self._lago_secrets()]
        return tuple(dict.fromkeys(v for v in values if v))

    def _lago_secrets(self) -> list[str]:
        lago = self.moneta.lago
        return [] if lago is None else [lago.api_key, lago.webhook_hmac_key or ""]

    def _alerting_secrets(self) -> list[str]:
        if self.alerting is None:
            return []
        return [self.alerting.webhook_secret, *self.alerting.webhook_urls]
