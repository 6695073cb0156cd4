"""Turning a provider's HTTP error into the gateway's error hierarchy."""
from __future__ import annotations

from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any, Mapping

from moneta.domain import errors

# OpenAI-style `error.code` / `error.type` values that name the error better than the status.
_BY_CODE: dict[str, type[errors.GatewayError]] = {
    "context_length_exceeded": errors.ContextWindowExceededError,
    "string_above_max_length": errors.ContextWindowExceededError,
    "content_policy_violation": errors.ContentPolicyViolationError,
    "content_filter": errors.ContentPolicyViolationError,
    "invalid_api_key": errors.AuthenticationError,
    "model_not_found": errors.NotFoundError,
    "rate_limit_exceeded": errors.RateLimitError,
    "insufficient_quota": errors.RateLimitError,
}


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """Reads `retry-after-ms`, then `Retry-After` (seconds or an HTTP date)."""
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(float(millis) / 1000, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max((when - datetime.now(timezone.utc)).total_seconds(), 0.0)


def error_from_response(
    status: int,
    body: Any,
    headers: Mapping[str, str],
    *,
    provider: str,
    model: str,
) -> errors.GatewayError:
    """An OpenAI-compatible error body (`{"error": {...}}`) or anything else, mapped by status
    and then refined by the provider's error code."""
    detail = body.get("error") if isinstance(body, dict) else None
    if isinstance(detail, dict):
        message = str(detail.get("message") or f"{provider} returned HTTP {status}")
        code = detail.get("code") or detail.get("type")
        param = detail.get("param")
    else:
        message = str(detail or body or f"{provider} returned HTTP {status}")[:1000]
        code, param = None, None
    cls = _BY_CODE.get(str(code)) if code else None
    if cls is None or (cls.status_code // 100 != status // 100):
        cls = errors.error_for_status(status)
    return cls(
        f"{provider} error: {message}",
        param=param if isinstance(param, str) else None,
        code=str(code) if code else None,
        provider=provider,
        model=model,
        status_code=status,
        retry_after=retry_after_seconds(headers),
        body=body,
    )
