"""Reads a LiteLLM-format `config.yaml` into `GatewayConfig`.

A LiteLLM user's file loads unchanged: keys LiteLLM documents are accepted (those Moneta
does not act on are listed in one warning), unknown keys are named in a warning, and an
invalid value stops start-up with a message naming the key.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from moneta.application.config import (
    CACHED_CALL_TYPES, AlertSettings, BudgetConfig, CacheSettings, ConnectionLimits, Deployment, GatewayConfig,
    LagoSettings, MonetaSettings, ProviderBudget,
)
from moneta.application.routing.settings import RouterSettings
from moneta.domain import model_patterns
from moneta.domain.access import duration_seconds
from moneta.domain.model_ref import ModelRef
from moneta.domain.pricing import TokenPrice, to_decimal
from moneta.domain.redaction import SECRET_FIELDS
from moneta.infrastructure import config_notices
from moneta.infrastructure.event_store import StoreLocation

_TOP_LEVEL = {"model_list", "general_settings", "litellm_settings", "router_settings", "environment_variables",
              "moneta_settings",
              "guardrails", "mcp_servers", "callback_settings", "search_tools", "vector_store_registry",
              "credential_list", "files_settings", "finetune_settings", "assistant_settings", "include"}
_DEPLOYMENT = {"model_name", "litellm_params", "model_info", "tpm", "rpm"}
_ACTED_ON_PARAMS = {"model", "api_base", "base_url", "api_key", "api_version", "rpm", "tpm", "weight", "order",
                    "timeout", "stream_timeout", "input_cost_per_token", "output_cost_per_token",
                    "cache_read_input_token_cost", "input_cost_per_second", "input_cost_per_audio_token",
                    "output_cost_per_audio_token"}
# litellm_params keys that reach the provider adapter as they are (provider-specific settings).
_PASSED_PARAMS = {"mock_response", "mock_latency_ms", "mock_failure_rate", "mock_failure_status",
                  "mock_retry_after", "mock_stream_chunks", "organization", "aws_access_key_id", "aws_secret_access_key",
                  "aws_session_token", "aws_region_name", "aws_profile_name", "aws_role_name",
                  "vertex_project", "vertex_location", "vertex_credentials", "azure_ad_token",
                  "azure_ad_token_provider", "tenant_id", "client_id", "client_secret", "max_retries",
                  "extra_headers", "headers", "region_name", "custom_llm_provider", "drop_params",
                  "additional_drop_params", "max_tokens", "temperature", "seed", "use_in_pass_through",
                  "merge_reasoning_content_in_choices", "litellm_credential_name", "configurable_clientside_auth_params",
                  "cache_creation_input_token_cost", "output_cost_per_reasoning_token", "input_cost_per_token_batches",
                  "output_cost_per_token_batches"}
_GENERAL = {"master_key", "database_url", "max_request_size_mb", "max_response_size_mb", "store_model_in_db",
            "alerting", "alerting_threshold", "proxy_batch_write_at", "database_connection_pool_limit",
            "database_connection_timeout", "disable_spend_logs", "disable_master_key_return", "allowed_routes",
            "background_health_checks", "health_check_interval", "enforce_user_param", "custom_auth",
            "allow_requests_on_db_unavailable", "public_routes", "litellm_key_header_name", "ui_access_mode",
            "enable_jwt_auth", "litellm_jwtauth", "infer_model_from_keys", "disable_reset_budget",
            "use_redis_transaction_buffer", "maximum_spend_logs_retention_period", "pass_through_endpoints",
            "max_parallel_requests", "global_max_parallel_requests", "user_header_name", "redis_url",
            "graceful_shutdown_timeout_s", "abandon_after_s", "ledger_timeout_s", "strict_pricing",
            "max_header_size_kb", "max_header_count", "header_timeout_s", "body_timeout_s", "keep_alive_timeout_s",
            "budget_fail_open", "budget_alert_share", "require_auth_for_metrics_endpoint", "alerting_webhook_url",
            "alerting_webhook_secret", "alerting_args"}
_LITELLM = {"drop_params", "num_retries", "request_timeout", "set_verbose", "json_logs", "callbacks",
            "success_callback", "failure_callback", "service_callback", "cache", "cache_params", "context_window_fallbacks",
            "content_policy_fallbacks", "default_fallbacks", "fallbacks", "turn_off_message_logging",
            "redact_user_api_key_info", "max_budget", "budget_duration", "default_team_settings", "modify_params",
            "force_ipv4", "telemetry", "upperbound_key_generate_params", "default_key_generate_params",
            "enable_preview_features", "return_response_headers", "allowed_fails", "cooldown_time",
            "disable_end_user_cost_tracking", "enable_json_schema_validation", "default_internal_user_params",
            "key_generation_settings", "callback_settings", "mcp_aliases", "check_provider_endpoint",
            "max_end_user_budget", "public_model_groups", "ssl_verify", "drop_params_if_unsupported",
            "max_end_user_budget_id", "timezone"}
_ROUTER = {"routing_strategy", "routing_strategy_args", "num_retries", "retry_policy", "timeout", "stream_timeout",
           "allowed_fails", "allowed_fails_policy", "cooldown_time", "disable_cooldowns", "fallbacks",
           "context_window_fallbacks", "content_policy_fallbacks", "default_fallbacks", "redis_host", "redis_port",
           "redis_password", "redis_url", "enable_pre_call_checks", "model_group_alias", "retry_after",
           "max_fallbacks", "cache_responses", "default_litellm_params", "provider_budget_config",
           "model_group_retry_policy", "enable_tag_filtering", "optional_pre_call_checks", "deployment_affinity_ttl_seconds",
           "default_max_parallel_requests", "polling_interval", "set_verbose", "debug_level"}


# Booleans Moneta acts on, per section: YAML booleans or the strings "true" / "false".
_FLAGS = {"general_settings": ("background_health_checks", "strict_pricing", "require_auth_for_metrics_endpoint",
                                "budget_fail_open"),
          "litellm_settings": ("drop_params", "cache"),
          "router_settings": ("disable_cooldowns", "enable_pre_call_checks")}


_CACHE_PARAMS = ("type", "ttl", "default_in_memory_ttl", "default_in_redis_ttl", "namespace", "host", "port",
                 "password", "supported_call_types", "max_size_in_memory", "mode")
_CACHE_TYPES = ("local", "redis")
# LiteLLM's call types, by the gateway's: the others (transcription, rerank, ...) are not cached.
_CACHE_CALL_TYPES = {"completion": "chat", "acompletion": "chat", "text_completion": "text_completion",
                     "atext_completion": "text_completion", "embedding": "embedding", "aembedding": "embedding"}
_UNCACHED_CALL_TYPES = {"transcription", "atranscription", "rerank", "arerank", "aresponses", "responses",
                        "speech", "aspeech", "image_generation", "aimage_generation", "moderation", "amoderation",
                        "_arealtime", "arealtime", "anthropic_messages", "amessages"}


# general_settings.alerting_args Moneta acts on, by AlertSettings field; LiteLLM's others are named.
_ALERTING_ARGS = {"webhook_timeout_s": "timeout_s", "webhook_max_attempts": "max_attempts",
                  "webhook_backoff_s": "backoff_s", "webhook_max_backoff_s": "max_backoff_s"}


class ConfigError(ValueError):
    """The config file cannot be used; the message names the key."""


@dataclass
class _Reader:
    environ: Mapping[str, str]
    unknown: list[str] = field(default_factory=list)
    unsupported: list[str] = field(default_factory=list)
    trimmed: list[str] = field(default_factory=list)

    def resolve(self, value: Any, key: str) -> Any:
        """`os.environ/NAME` references, as LiteLLM writes them; credentials trimmed."""
        if isinstance(value, str) and value.startswith("os.environ/"):
            name = value[len("os.environ/"):]
            if name not in self.environ:
                raise ConfigError(f"{key}: environment variable {name} is not set")
            value = self.environ[name]
        if key.rsplit(".", 1)[-1] in SECRET_FIELDS:
            return self.trim(value, key)
        return value

    def trim(self, value: Any, key: str) -> Any:
        """A credential without the whitespace environment files leave around it (a trailing newline
        would otherwise lock every client out), noted by its key, never its value."""
        if isinstance(value, str) and value != value.strip():
            self.trimmed.append(key)
            return value.strip()
        return value

    def note_unknown(self, section: Mapping[str, Any], known: set[str], where: str) -> None:
        self.unknown.extend(f"{where}{k}" for k in section if k not in known)

    def note_unsupported(self, section: Mapping[str, Any], kind: str, where: str) -> None:
        self.unsupported.extend(config_notices.not_supported(section, kind, where))


def load_config(path: str | Path, environ: Mapping[str, str]) -> GatewayConfig:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    return parse_config(raw, environ)


def parse_config(raw: Any, environ: Mapping[str, str]) -> GatewayConfig:
    if not isinstance(raw, dict):
        raise ConfigError("the config file must be a mapping with model_list, general_settings, ...")
    extra_env = _section(raw, "environment_variables")
    reader = _Reader({**{k: str(v) for k, v in extra_env.items()}, **environ})
    reader.note_unknown(raw, _TOP_LEVEL, "")
    reader.note_unsupported(raw, "", "")
    alerting = _alerting(_section(raw, "general_settings"), reader)
    general, litellm, router = (_settings(raw, name, known, reader) for name, known in (
        ("general_settings", _GENERAL), ("litellm_settings", _LITELLM), ("router_settings", _ROUTER)))
    reader.unsupported.extend(config_notices.strategy_args_not_supported(router.get("routing_strategy_args")))
    models = raw.get("model_list") or []
    if not isinstance(models, list):
        raise ConfigError("model_list must be a list of deployments")
    drop_params = litellm.get("drop_params", False)
    deployments = tuple(_deployment(entry, i, reader, drop_params) for i, entry in enumerate(models))
    _optional_number(general.get("health_check_interval"), "general_settings.health_check_interval")
    redis_url = _redis_url(router, general, reader, environ)
    cache = _cache(litellm, reader, redis_url)
    config = GatewayConfig(
        deployments=deployments,
        master_key=reader.resolve(general.get("master_key"), "general_settings.master_key")
        or _environment_secret(reader, environ, "LITELLM_MASTER_KEY", "MONETA_MASTER_KEY"),
        database_url=_database_url(general, reader, environ),
        redis_url=redis_url,
        max_request_body_bytes=int(_number(general.get("max_request_size_mb", 10), "general_settings.max_request_size_mb")
                                   * 1024 * 1024),
        num_retries=_int(router.get("num_retries", litellm.get("num_retries", 0)), "router_settings.num_retries"),
        request_timeout=_number(router.get("timeout", litellm.get("request_timeout", 600)), "router_settings.timeout"),
        drop_params=drop_params,
        graceful_shutdown_timeout_s=_non_negative(general.get("graceful_shutdown_timeout_s", 30),
                                                  "general_settings.graceful_shutdown_timeout_s"),
        abandon_after_s=_positive(general.get("abandon_after_s", 30), "general_settings.abandon_after_s"),
        ledger_timeout_s=_positive(general.get("ledger_timeout_s", 5), "general_settings.ledger_timeout_s"),
        connection_limits=_connection_limits(general),
        cache=cache,
        budgets=_budgets(general, litellm, router),
        alerting=alerting,
        moneta=_moneta(_section(raw, "moneta_settings"), reader),
        require_auth_for_metrics=general.get("require_auth_for_metrics_endpoint", False),
        router_settings=router,
        litellm_settings=litellm,
        general_settings={k: v for k, v in general.items() if k not in ("master_key", "alerting_webhook_secret")},
        notices=config_notices.notices(reader.unsupported, reader.unknown, len(deployments), reader.trimmed),
    )
    try:
        RouterSettings.from_config(config)  # its values are checked here, before anything starts
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return config


def _budgets(general: dict, litellm: dict, router: dict) -> BudgetConfig:
    """The proxy's own budget (`litellm_settings.max_budget`, `budget_duration`), the providers'
    (`router_settings.provider_budget_config`) and how budgets behave."""
    share = general.get("budget_alert_share")
    if share is not None and not 0 < _number(share, "general_settings.budget_alert_share") <= 1:
        raise ConfigError("general_settings.budget_alert_share must be a number above 0 and at most 1")
    zone = litellm.get("timezone")
    if zone is not None:
        try:
            ZoneInfo(str(zone))
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(f"litellm_settings.timezone: {zone!r} is not a time zone (e.g. 'Europe/Paris', 'UTC')")
    return BudgetConfig(
        proxy_max_budget=_amount(litellm.get("max_budget"), "litellm_settings.max_budget"),
        proxy_duration=_duration(litellm.get("budget_duration"), "litellm_settings.budget_duration"),
        timezone=None if zone is None else str(zone),
        fail_open=general.get("budget_fail_open", False),
        alert_share=None if share is None else Decimal(str(share)),
        end_user_budget_id=litellm.get("max_end_user_budget_id"),
        providers=_provider_budgets(router.get("provider_budget_config")))


_PROVIDER_BUDGET = ("budget_limit", "time_period")


def _provider_budgets(raw: Any) -> tuple[ProviderBudget, ...]:
    """`{openai: {budget_limit: 100, time_period: 1d}, ...}`. Unknown keys are errors: a misspelt
    limit would otherwise leave a provider without the budget its operator believes it has."""
    where = "router_settings.provider_budget_config"
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must map provider names to {{budget_limit, time_period}}")
    budgets: dict[str, ProviderBudget] = {}
    for name, entry in raw.items():
        key = f"{where}.{name}"
        provider = str(name).strip().lower()
        if not provider or provider in budgets:
            raise ConfigError(f"{key}: a provider name must be given once (names are case-insensitive)")
        if not isinstance(entry, dict):
            raise ConfigError(f"{key} must be a mapping with budget_limit and time_period")
        unknown = sorted(str(k) for k in entry if k not in _PROVIDER_BUDGET)
        if unknown:
            raise ConfigError(f"{key}: unknown key(s) {', '.join(unknown)} (a provider budget has budget_limit"
                              " and time_period)")
        limit = _amount(entry.get("budget_limit"), f"{key}.budget_limit")
        duration = _duration(entry.get("time_period"), f"{key}.time_period")
        if limit is None or duration is None:
            raise ConfigError(f"{key}.{'budget_limit' if limit is None else 'time_period'} is required")
        budgets[provider] = ProviderBudget(provider, limit, "".join(duration.split()))
    return tuple(budgets.values())


_MONETA = {"askii_per_usd", "lago"}
_LAGO = {"api_url", "api_key", "billable_metric_code", "customer_id_from", "entitlement_feature", "webhook_hmac_key",
         "sync_interval_s", "max_staleness_s", "on_unreachable"}
_CUSTOMER_ID_FROM = ("customer", "team", "user", "key")


def _moneta(section: dict, reader: _Reader) -> MonetaSettings:
    """`moneta_settings`: the askii rate and Lago. Unknown keys are errors here: these names are
    Moneta's own, so a misspelt one is a mistake, not another product's setting."""
    unknown = sorted(set(section) - _MONETA)
    if unknown:
        raise ConfigError(f"moneta_settings: unknown key(s) {', '.join(unknown)}")
    rate = _amount(section.get("askii_per_usd", 1000), "moneta_settings.askii_per_usd")
    if not rate:
        raise ConfigError("moneta_settings.askii_per_usd must be above 0")
    lago = section.get("lago")
    if lago is not None and not isinstance(lago, dict):
        raise ConfigError("moneta_settings.lago must be a mapping")
    return MonetaSettings(askii_per_usd=rate, lago=None if lago is None else _lago(lago, reader))


def _lago(section: dict, reader: _Reader) -> LagoSettings:
    where = "moneta_settings.lago."
    unknown = sorted(set(section) - _LAGO)
    if unknown:
        raise ConfigError(f"moneta_settings.lago: unknown key(s) {', '.join(unknown)}")
    api_url = reader.resolve(section.get("api_url"), where + "api_url")
    api_key = reader.resolve(section.get("api_key"), where + "api_key")
    if not api_url or not str(api_url).startswith(("http://", "https://")):
        raise ConfigError(f"{where}api_url must be Lago's base URL (http:// or https://)")
    if not api_key:
        raise ConfigError(f"{where}api_key is required (e.g. os.environ/LAGO_API_KEY)")
    customer_from = section.get("customer_id_from", "customer")
    if customer_from not in _CUSTOMER_ID_FROM:
        raise ConfigError(f"{where}customer_id_from must be one of {', '.join(_CUSTOMER_ID_FROM)}")
    on_unreachable = section.get("on_unreachable", "deny")
    if on_unreachable not in ("deny", "allow"):
        raise ConfigError(f"{where}on_unreachable must be deny or allow")
    hmac_key = section.get("webhook_hmac_key")
    return LagoSettings(
        api_url=str(api_url).rstrip("/"), api_key=str(api_key),
        billable_metric_code=str(section.get("billable_metric_code", "llm_usage")),
        customer_id_from=customer_from,
        entitlement_feature=section.get("entitlement_feature") or None,
        webhook_hmac_key=None if hmac_key is None else str(reader.resolve(hmac_key, where + "webhook_hmac_key")),
        sync_interval_s=_positive(section.get("sync_interval_s", 60), where + "sync_interval_s"),
        max_staleness_s=_positive(section.get("max_staleness_s", 600), where + "max_staleness_s"),
        on_unreachable=on_unreachable)


def _amount(value: Any, key: str) -> Decimal | None:
    if value is None:
        return None
    try:
        amount = Decimal(str(value))
    except ArithmeticError:
        amount = Decimal("NaN")
    if isinstance(value, bool) or not amount.is_finite() or amount < 0:
        raise ConfigError(f"{key} must be an amount in USD, 0 or more")
    return amount


def _duration(value: Any, key: str) -> str | None:
    if value is None:
        return None
    try:
        duration_seconds(value)
    except ValueError as error:
        raise ConfigError(f"{key}: {error}") from None
    return value


def _cache(litellm: dict, reader: _Reader, redis_url: str | None) -> CacheSettings | None:
    """`cache: true` and its `cache_params`; anything else LiteLLM can cache with (s3, disk,
    semantic caches) stops start-up, since a cache the operator believes in must exist."""
    where = "litellm_settings.cache_params"
    params = litellm.get("cache_params") or {}
    if not isinstance(params, dict):
        raise ConfigError(f"{where} must be a mapping")
    for key in params:
        if key not in _CACHE_PARAMS:
            raise ConfigError(f"{where}.{key} is not supported: Moneta caches in memory or in Redis"
                              f" ({', '.join(_CACHE_PARAMS)})")
    kind = params.get("type", "local")
    if kind not in _CACHE_TYPES:
        raise ConfigError(f"{where}.type: {params['type']!r} is not one of {', '.join(_CACHE_TYPES)}")
    if params.get("mode", "default_on") != "default_on":
        raise ConfigError(f"{where}.mode: {params['mode']!r} is not supported (only default_on)")
    if not litellm.get("cache"):
        return None
    ttl = params.get("ttl", params.get(f"default_in_{'memory' if kind == 'local' else 'redis'}_ttl"))
    default_ttl = 600.0 if kind == "local" else None  # LiteLLM's: Redis entries do not expire unless told
    return CacheSettings(
        kind=kind,
        ttl_s=default_ttl if ttl is None else _positive(ttl, f"{where}.ttl"),
        namespace=str(params.get("namespace") or ""),
        call_types=_cache_call_types(params.get("supported_call_types"), reader, where),
        max_entries=int(_positive(params.get("max_size_in_memory", 200), f"{where}.max_size_in_memory")),
        redis_url=_cache_redis_url(params, reader, redis_url, where) if kind == "redis" else None,
    )


def _cache_call_types(names: Any, reader: _Reader, where: str) -> frozenset[str]:
    if names is None:
        return CACHED_CALL_TYPES
    if not isinstance(names, list):
        raise ConfigError(f"{where}.supported_call_types must be a list")
    for name in names:
        if name in _UNCACHED_CALL_TYPES:
            reader.unsupported.append(f"{where}.supported_call_types[{name}]")
        elif name not in _CACHE_CALL_TYPES:
            raise ConfigError(f"{where}.supported_call_types: {name!r} is not one of"
                              f" {', '.join(sorted(_CACHE_CALL_TYPES))}")
    return frozenset(_CACHE_CALL_TYPES[name] for name in names if name in _CACHE_CALL_TYPES)


def _cache_redis_url(params: dict, reader: _Reader, redis_url: str | None, where: str) -> str:
    host = reader.resolve(params.get("host"), f"{where}.host")
    if not host:
        if not redis_url:
            raise ConfigError(f"{where}.type redis needs {where}.host, router_settings.redis_host or REDIS_URL")
        return redis_url
    port = _int(reader.resolve(params.get("port", 6379), f"{where}.port"), f"{where}.port")
    password = reader.resolve(params.get("password"), f"{where}.password")
    return f"redis://{f':{password}@' if password else ''}{host}:{port}/0"


def _alerting(general: dict, reader: _Reader) -> AlertSettings | None:
    """Budget alerts to webhooks when `alerting` lists "webhook"; its other types are named."""
    kinds = general.get("alerting") or []
    if not isinstance(kinds, list) or not all(isinstance(kind, str) for kind in kinds):
        raise ConfigError('general_settings.alerting must be a list of alerting types, as ["webhook"]')
    reader.unsupported.extend(f"general_settings.alerting[{kind}]" for kind in kinds if kind != "webhook")
    args = general.get("alerting_args") or {}
    if not isinstance(args, dict):
        raise ConfigError("general_settings.alerting_args must be a mapping")
    reader.unsupported.extend(config_notices.not_acted_on(args, _ALERTING_ARGS, "general_settings.alerting_args."))
    if "webhook" not in kinds:
        return None
    where = "general_settings.alerting_args."
    settings: dict[str, Any] = {_ALERTING_ARGS[key]: _positive(args[key], where + key) for key in
                                ("webhook_timeout_s", "webhook_backoff_s", "webhook_max_backoff_s") if key in args}
    if "webhook_max_attempts" in args:
        settings["max_attempts"] = _int(_positive(args["webhook_max_attempts"], where + "webhook_max_attempts"),
                                        where + "webhook_max_attempts")
    return AlertSettings(webhook_urls=_webhook_urls(general, reader),
                         webhook_secret=_webhook_secret(general, reader), **settings)


def _webhook_urls(general: dict, reader: _Reader) -> tuple[str, ...]:
    key = "general_settings.alerting_webhook_url"
    given = general.get("alerting_webhook_url")
    urls = [reader.resolve(url, key) for url in (given if isinstance(given, list) else [given] if given else [])]
    if not urls:
        raise ConfigError(f'{key} is required when general_settings.alerting lists "webhook"')
    for url in urls:
        if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
            raise ConfigError(f"{key} must be http(s) URLs")  # the URL itself is not shown: it may be a credential
    return tuple(dict.fromkeys(urls))


def _webhook_secret(general: dict, reader: _Reader) -> str:
    key = "general_settings.alerting_webhook_secret"
    secret = reader.trim(reader.resolve(general.get("alerting_webhook_secret"), key), key)
    if not isinstance(secret, str) or not secret:
        raise ConfigError(f"{key} is required to sign the webhooks' bodies (HMAC-SHA256); os.environ/NAME reads it"
                          " from the environment")
    return secret


def _connection_limits(general: dict) -> ConnectionLimits:
    default = ConnectionLimits()

    def setting(key: str, value: Any) -> float:
        return _positive(general.get(key, value), f"general_settings.{key}")

    return ConnectionLimits(
        max_header_bytes=int(setting("max_header_size_kb", default.max_header_bytes / 1024) * 1024),
        max_header_count=_int(setting("max_header_count", default.max_header_count), "general_settings.max_header_count"),
        header_timeout_s=setting("header_timeout_s", default.header_timeout_s),
        body_timeout_s=setting("body_timeout_s", default.body_timeout_s),
        keep_alive_timeout_s=setting("keep_alive_timeout_s", default.keep_alive_timeout_s),
    )


def _environment_secret(reader: _Reader, environ: Mapping[str, str], *names: str) -> str | None:
    for name in names:
        if environ.get(name):
            return reader.trim(environ[name], name)
    return None


def _section(raw: dict, name: str) -> dict:
    value = raw.get(name) or {}
    if not isinstance(value, dict):
        raise ConfigError(f"{name} must be a mapping")
    return value


def _settings(raw: dict, name: str, known: set[str], reader: _Reader) -> dict:
    """A settings section, its unknown and unsupported keys noted, its flags parsed."""
    section = _section(raw, name)
    reader.note_unknown(section, known, f"{name}.")
    reader.note_unsupported(section, name, f"{name}.")
    flags = {key: _flag(section[key], f"{name}.{key}") for key in _FLAGS[name] if key in section}
    return {**section, **flags}


def _deployment(entry: Any, index: int, reader: _Reader, drop_params: bool) -> Deployment:
    where = f"model_list[{index}]"
    if not isinstance(entry, dict):
        raise ConfigError(f"{where} must be a mapping with model_name and litellm_params")
    reader.note_unknown(entry, _DEPLOYMENT, f"{where}.")
    name = entry.get("model_name")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}.model_name is required (the public model name)")
    params = entry.get("litellm_params")
    if not isinstance(params, dict) or not isinstance(params.get("model"), str):
        raise ConfigError(f"{where}.litellm_params.model is required, as 'provider/model'")
    info = entry.get("model_info") or {}
    if not isinstance(info, dict):
        raise ConfigError(f"{where}.model_info must be a mapping")
    p = f"{where}.litellm_params."
    reader.note_unknown(params, _ACTED_ON_PARAMS | _PASSED_PARAMS, p)
    reader.note_unsupported(params, "litellm_params", p)
    values = {k: reader.resolve(v, p + k) for k, v in params.items()}
    if "drop_params" in values:
        values["drop_params"] = _flag(values["drop_params"], p + "drop_params")
    ref = ModelRef.parse(values["model"])
    if values.get("custom_llm_provider"):
        ref = ModelRef(str(values["custom_llm_provider"]).lower(), values["model"])
    return Deployment(
        id=str(info.get("id") or _deployment_id(name, values, index)),
        model_name=name,
        provider=ref.provider,
        provider_model=ref.name,
        api_base=values.get("api_base") or values.get("base_url"),
        api_key=values.get("api_key"),
        api_version=values.get("api_version"),
        timeout=_optional_number(values.get("timeout"), p + "timeout"),
        stream_timeout=_optional_number(values.get("stream_timeout"), p + "stream_timeout"),
        rpm=_optional_int(values.get("rpm", entry.get("rpm")), p + "rpm"),
        tpm=_optional_int(values.get("tpm", entry.get("tpm")), p + "tpm"),
        weight=_optional_number(values.get("weight"), p + "weight"),
        order=_optional_int(values.get("order"), p + "order"),
        price=_price(values, p),
        allow_zero_cost=_flag(info.get("allow_zero_cost", False), f"{where}.model_info.allow_zero_cost"),
        # The gateway-wide drop_params reaches the adapters through each deployment.
        extra_params={"drop_params": drop_params} | {k: v for k, v in values.items() if k not in _ACTED_ON_PARAMS},
        model_info=dict(info),
        model_template=_model_template(name, values["model"], p),
    )


def _model_template(name: str, model: str, where: str) -> str | None:
    """A pattern entry's model (`openai/*`), whose `*`s the matched parts of a call's model fill."""
    if model_patterns.WILDCARD not in name + model:
        return None
    if model.count(model_patterns.WILDCARD) > name.count(model_patterns.WILDCARD):
        raise ConfigError(f"{where}model: {model!r} has more '*' than its model_name {name!r}: "
                          "each '*' takes the text a '*' of model_name matched")
    return model


def _deployment_id(name: str, params: dict, index: int) -> str:
    identity = f"{index}|{name}|{params.get('model')}|{params.get('api_base') or ''}"
    return hashlib.sha256(identity.encode()).hexdigest()[:16]


def _price(values: dict, where: str) -> TokenPrice | None:
    keys = ("input_cost_per_token", "output_cost_per_token", "input_cost_per_second")
    if not any(k in values for k in keys):
        return None
    try:
        return TokenPrice(
            input_per_token=to_decimal(values.get("input_cost_per_token", 0), where + "input_cost_per_token"),
            output_per_token=to_decimal(values.get("output_cost_per_token", 0), where + "output_cost_per_token"),
            cache_read_per_token=_optional_price(values, "cache_read_input_token_cost", where),
            per_second=_optional_price(values, "input_cost_per_second", where),
            input_audio_per_token=_optional_price(values, "input_cost_per_audio_token", where),
            output_audio_per_token=_optional_price(values, "output_cost_per_audio_token", where),
            source="config price",
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _optional_price(values: dict, key: str, where: str) -> Decimal | None:
    return None if values.get(key) is None else to_decimal(values[key], where + key)


def _database_url(general: dict, reader: _Reader, environ: Mapping[str, str]) -> str | None:
    key = "DATABASE_URL" if environ.get("DATABASE_URL") else "general_settings.database_url"
    url = environ.get("DATABASE_URL") or reader.resolve(general.get("database_url"), key)
    try:
        StoreLocation.from_url(url)
    except ValueError as exc:
        raise ConfigError(f"{key}: {exc}") from None
    return url


def _redis_url(router: dict, general: dict, reader: _Reader, environ: Mapping[str, str]) -> str | None:
    url = reader.resolve(router.get("redis_url") or general.get("redis_url"), "router_settings.redis_url")
    if url or environ.get("REDIS_URL"):
        return url or environ.get("REDIS_URL")
    host = reader.resolve(router.get("redis_host"), "router_settings.redis_host") or environ.get("REDIS_HOST")
    if not host:
        return None
    port = reader.resolve(router.get("redis_port"), "router_settings.redis_port") or environ.get("REDIS_PORT", 6379)
    password = reader.resolve(router.get("redis_password"), "router_settings.redis_password") or environ.get(
        "REDIS_PASSWORD")
    auth = f":{password}@" if password else ""
    return f"redis://{auth}{host}:{port}/0"


def _flag(value: Any, key: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ConfigError(f"{key} must be true or false, got {value!r}")


def _number(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ConfigError(f"{key} must be a number, got {value!r}")
    try:
        return float(value)
    except ValueError:
        raise ConfigError(f"{key} must be a number, got {value!r}") from None


def _non_negative(value: Any, key: str) -> float:
    number = _number(value, key)
    if number < 0:
        raise ConfigError(f"{key} must not be negative, got {value!r}")
    return number


def _positive(value: Any, key: str) -> float:
    number = _number(value, key)
    if number <= 0:
        raise ConfigError(f"{key} must be positive, got {value!r}")
    return number


def _int(value: Any, key: str) -> int:
    number = _number(value, key)
    if number != int(number) or number < 0:
        raise ConfigError(f"{key} must be a non-negative integer, got {value!r}")
    return int(number)


def _optional_number(value: Any, key: str) -> float | None:
    return None if value is None else _number(value, key)


def _optional_int(value: Any, key: str) -> int | None:
    return None if value is None else _int(value, key)
