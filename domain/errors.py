"""The gateway's error hierarchy, mirroring OpenAI's so that SDKs raise the right exception.

Every error carries what the proxy needs to answer in OpenAI's shape
(`{"error": {"message", "type", "param", "code"}}`) and what an auditor needs in the
ledger: the provider, model, status, retry-after and the provider's own error body.
"""
from __future__ import annotations

from decimal import Decimal
from typing import Any


class GatewayError(Exception):
    status_code = 500
    error_type = "server_error"
    default_code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        provider: str | None = None,
        model: str | None = None,
        status_code: int | None = None,
        retry_after: float | None = None,
        body: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code if code is not None else self.default_code
        self.provider = provider
        self.model = model
        if status_code is not None:
            self.status_code = status_code
        self.retry_after = retry_after
        self.body = body

    def to_openai(self) -> dict:
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code if self.code is not None else str(self.status_code),
            }
        }


class BadRequestError(GatewayError):
    status_code = 400
    error_type = "invalid_request_error"


class ContextWindowExceededError(BadRequestError):
    default_code = "context_length_exceeded"


class ContentPolicyViolationError(BadRequestError):
    default_code = "content_policy_violation"


class UnsupportedParamsError(BadRequestError):
    default_code = "unsupported_parameter"


class AuthenticationError(GatewayError):
    status_code = 401
    error_type = "authentication_error"
    default_code = "invalid_api_key"


class PermissionDeniedError(GatewayError):
    status_code = 403
    error_type = "permission_error"


class NotFoundError(GatewayError):
    status_code = 404
    error_type = "invalid_request_error"
    default_code = "not_found"


class ModelNotFoundError(NotFoundError):
    default_code = "model_not_found"


class ConflictError(GatewayError):
    """A management change that clashes with what exists (an id or alias already taken)."""

    status_code = 409
    error_type = "conflict_error"


class RequestTooLargeError(GatewayError):
    status_code = 413
    error_type = "invalid_request_error"
    default_code = "request_too_large"


class UnprocessableEntityError(GatewayError):
    status_code = 422
    error_type = "invalid_request_error"


class RateLimitError(GatewayError):
    status_code = 429
    error_type = "rate_limit_error"
    default_code = "rate_limit_exceeded"


class BudgetExceededError(RateLimitError):
    """A budget (key, user, team, ...) cannot pay for the call: LiteLLM's `budget_exceeded`."""

    error_type = "budget_exceeded"
    default_code = "budget_exceeded"

    def __init__(self, message: str, *, current_cost: Decimal | None = None, max_budget: Decimal | None = None,
                 **details: Any) -> None:
        super().__init__(message, **details)
        self.current_cost = current_cost
        self.max_budget = max_budget


class InsufficientQuotaError(RateLimitError):
    """The customer's prepaid wallet cannot cover the call: what OpenAI answers when credit runs out."""

    error_type = "insufficient_quota"
    default_code = "insufficient_quota"


class EntitlementDeniedError(PermissionDeniedError):
    """The customer holds no Lago subscription (or feature, or model) that entitles them to the call."""

    default_code = "entitlement_denied"


class InternalServerError(GatewayError):
    status_code = 500
    error_type = "server_error"


class APIConnectionError(GatewayError):
    status_code = 502
    error_type = "api_connection_error"
    default_code = "api_connection_error"


class ServiceUnavailableError(GatewayError):
    status_code = 503
    error_type = "service_unavailable_error"
    default_code = "service_unavailable"


class TimeoutError(GatewayError):  # noqa: A001 - mirrors openai.APITimeoutError by name
    status_code = 408
    error_type = "timeout_error"
    default_code = "timeout"


class LedgerUnavailableError(ServiceUnavailableError):
    default_code = "ledger_unavailable"


_BY_STATUS: dict[int, type[GatewayError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    408: TimeoutError,
    413: RequestTooLargeError,
    422: UnprocessableEntityError,
    429: RateLimitError,
    500: InternalServerError,
    502: APIConnectionError,
    503: ServiceUnavailableError,
    504: TimeoutError,
}


def error_for_status(status: int) -> type[GatewayError]:
    """The error class for an upstream status, keeping its class (4xx stays 4xx, 5xx stays 5xx)."""
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    return BadRequestError if 400 <= status < 500 else InternalServerError
