"""The error kinds LiteLLM's `retry_policy` and `allowed_fails_policy` are keyed by."""
from __future__ import annotations

from moneta.domain.errors import (
    AuthenticationError,
    BadRequestError,
    ContentPolicyViolationError,
    GatewayError,
    RateLimitError,
    TimeoutError,
)

KINDS = (
    "BadRequestError",
    "AuthenticationError",
    "TimeoutError",
    "RateLimitError",
    "ContentPolicyViolationError",
    "InternalServerError",
)
RETRYABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})


def failure_kind(error: GatewayError) -> str:
    """The policy key for an error; any 5xx (and an unclassified 4xx status) is InternalServerError."""
    for cls in (ContentPolicyViolationError, BadRequestError, AuthenticationError, TimeoutError, RateLimitError):
        if isinstance(error, cls):
            return cls.__name__
    if error.status_code == 408:
        return "TimeoutError"
    if error.status_code == 429:
        return "RateLimitError"
    return "BadRequestError" if 400 <= error.status_code < 500 else "InternalServerError"


def is_transient(error: GatewayError) -> bool:
    """Worth trying again (here or elsewhere): timeouts, conflicts, rate limits and server errors."""
    return error.status_code in RETRYABLE_STATUSES


def policy_table(raw: object, suffix: str) -> dict[str, int]:
    """`{"RateLimitErrorRetries": 3}` -> `{"RateLimitError": 3}`; unknown keys raise ValueError."""
    if not raw:
        return {}
    if not isinstance(raw, dict):
        raise ValueError(f"expected a mapping of <ErrorKind>{suffix} to a number")
    table = {}
    for key, value in raw.items():
        kind = str(key).removesuffix(suffix)
        if kind not in KINDS or not str(key).endswith(suffix):
            raise ValueError(f"unknown policy key {key!r}: expected one of {', '.join(k + suffix for k in KINDS)}")
        if value is not None:
            table[kind] = int(value)
    return table
