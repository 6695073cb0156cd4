"""What a LiteLLM config asks for that Moneta does not do, told once at start-up.

The loader's sets of known keys say what is accepted; this module names the accepted keys
Moneta does NOT act on, section by section, so that a file using them starts (a LiteLLM user's
file loads unchanged) and its operator is told plainly which settings have no effect.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

NOT_SUPPORTED: dict[str, frozenset[str]] = {
    "": frozenset({"guardrails", "mcp_servers", "callback_settings", "search_tools", "vector_store_registry",
                   "credential_list", "files_settings", "finetune_settings", "assistant_settings", "include"}),
    "general_settings": frozenset({
        "max_response_size_mb", "store_model_in_db", "alerting_threshold", "proxy_batch_write_at",
        "database_connection_pool_limit", "database_connection_timeout", "disable_spend_logs",
        "disable_master_key_return", "allowed_routes", "enforce_user_param", "custom_auth",
        "allow_requests_on_db_unavailable", "public_routes", "litellm_key_header_name", "ui_access_mode",
        "enable_jwt_auth", "litellm_jwtauth", "infer_model_from_keys", "disable_reset_budget",
        "use_redis_transaction_buffer", "maximum_spend_logs_retention_period", "pass_through_endpoints",
        "max_parallel_requests", "global_max_parallel_requests", "user_header_name"}),
    "litellm_settings": frozenset({
        "set_verbose", "json_logs", "callbacks", "success_callback", "failure_callback", "service_callback",
        "turn_off_message_logging", "redact_user_api_key_info",
        "default_team_settings", "modify_params", "force_ipv4", "telemetry", "upperbound_key_generate_params",
        "default_key_generate_params", "enable_preview_features", "return_response_headers",
        "disable_end_user_cost_tracking", "enable_json_schema_validation", "default_internal_user_params",
        "key_generation_settings", "callback_settings", "mcp_aliases", "check_provider_endpoint",
        "max_end_user_budget", "public_model_groups", "ssl_verify", "drop_params_if_unsupported"}),
    "router_settings": frozenset({
        "model_group_alias", "cache_responses", "default_litellm_params",
        "model_group_retry_policy", "enable_tag_filtering", "optional_pre_call_checks",
        "deployment_affinity_ttl_seconds", "default_max_parallel_requests", "polling_interval", "set_verbose",
        "debug_level"}),
    "litellm_params": frozenset({
        "aws_role_name", "azure_ad_token_provider", "max_retries", "region_name", "max_tokens", "temperature", "seed",
        "use_in_pass_through", "merge_reasoning_content_in_choices", "litellm_credential_name",
        "configurable_clientside_auth_params", "cache_creation_input_token_cost", "output_cost_per_reasoning_token",
        "input_cost_per_token_batches", "output_cost_per_token_batches"}),
}


# The router_settings.routing_strategy_args Moneta acts on; LiteLLM's others (ttl,
# max_latency_list_size, ...) have no effect here.
STRATEGY_ARGS = frozenset({"lowest_latency_buffer"})


def not_supported(section: Mapping[str, Any], kind: str, where: str) -> list[str]:
    """The keys of `section` that ask for something Moneta does not do. A key set to false or
    left empty asks for nothing (`set_verbose: false`), so it is not named."""
    return [f"{where}{key}" for key, value in section.items() if key in NOT_SUPPORTED[kind] and _asks(value)]


def strategy_args_not_supported(args: Any) -> list[str]:
    """The routing_strategy_args that ask for something Moneta does not do."""
    if not isinstance(args, Mapping):  # RouterSettings refuses it, naming the key
        return []
    return [f"router_settings.routing_strategy_args.{key}" for key, value in args.items()
            if key not in STRATEGY_ARGS and _asks(value)]


def not_acted_on(section: Mapping[str, Any], acted_on: Iterable[str], where: str) -> list[str]:
    """The keys of `section` outside `acted_on` that ask for something."""
    return [f"{where}{key}" for key, value in section.items() if key not in acted_on and _asks(value)]


def _asks(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in ("", "false")
    return value is not None and value is not False and value != [] and value != {}


def notices(unsupported: Iterable[str], unknown: Iterable[str], deployments: int,
            trimmed: Iterable[str] = ()) -> tuple[str, ...]:
    """The start-up warnings, one line each."""
    lines = []
    if trimmed:
        lines.append("these credentials had surrounding whitespace; it was trimmed: " + ", ".join(trimmed))
    if unsupported:
        lines.append("config keys accepted, not supported (they have no effect): " + ", ".join(unsupported))
    if unknown:
        lines.append("config keys Moneta does not know (ignored; a typo?): " + ", ".join(sorted(unknown)))
    if not deployments:
        lines.append("model_list is missing or empty: the proxy serves no model (every call is answered 404"
                     " model_not_found); the library still calls any provider/model directly")
    return tuple(lines)
