"""The library's exceptions, with LiteLLM's names, each a subclass of the matching `openai`
exception: `except openai.RateLimitError` and `except moneta.RateLimitError` both catch a 429.

Each carries `status_code`, `llm_provider`, `model`, `message`, and OpenAI's `code`, `param`,
`type` (from the error body). The gateway's own errors (moneta.domain.errors) stay free of
`openai`; `from_gateway_error` maps them here, at the library's boundary.
"""
from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, TypeVar

import httpx2
import openai

from moneta.domain import errors

# openai's exceptions hold the HTTP request and response; a library call has none of its own.
_URL = "http://moneta.library/v1"


class _StatusError:
    """Mixed into the subclasses of openai.APIStatusError (their constructor wants a response)."""

    default_status = 500

    def __init__(self, message: str, llm_provider: str | None = None, model: str | None = None, *,
                 status_code: int | None = None, body: Any = None, headers: dict[str, str] | None = None) -> None:
        self.llm_provider = llm_provider
        self.model = model
        response = httpx2.Response(status_code or self.default_status, headers=headers,
                                   request=httpx2.Request("POST", _URL))
        super().__init__(message, response=response, body=body)  # type: ignore[call-arg]


class _RequestError:
    """Mixed into openai.APIError and its connection errors. They hold no response, so `headers`
    (taken for one signature across the classes) has nowhere to go."""

    default_status = 500

    def __init__(self, message: str, llm_provider: str | None = None, model: str | None = None, *,
                 status_code: int | None = None, body: Any = None, headers: dict[str, str] | None = None) -> None:
        self.llm_provider = llm_provider
        self.model = model
        self.status_code = status_code or self.default_status
        openai.APIError.__init__(self, message, httpx2.Request("POST", _URL), body=body)  # type: ignore[arg-type]


class BadRequestError(_StatusError, openai.BadRequestError):
    default_status = 400


class UnsupportedParamsError(BadRequestError):
    pass


class ContextWindowExceededError(BadRequestError):
    pass


class ContentPolicyViolationError(BadRequestError):
    pass


class AuthenticationError(_StatusError, openai.AuthenticationError):
    default_status = 401


class PermissionDeniedError(_StatusError, openai.PermissionDeniedError):
    default_status = 403


class NotFoundError(_StatusError, openai.NotFoundError):
    default_status = 404


class UnprocessableEntityError(_StatusError, openai.UnprocessableEntityError):
    default_status = 422


class RateLimitError(_StatusError, openai.RateLimitError):
    default_status = 429


class BudgetExceededError(RateLimitError):
    """LiteLLM's `BudgetExceededError(current_cost, max_budget, message=None)`: a budget cannot
    pay for the call (a 429 whose `type` is `budget_exceeded`). Unlike LiteLLM's, it is a
    RateLimitError, so `except openai.RateLimitError` (and `moneta.RateLimitError`) catches it too."""

    def __init__(self, current_cost: Any, max_budget: Any, message: str | None = None,
                 llm_provider: str | None = None, model: str | None = None, *, status_code: int | None = None,
                 body: Any = None, headers: dict[str, str] | None = None) -> None:
        self.current_cost = current_cost
        self.max_budget = max_budget
        message = message or f"Budget has been exceeded! Current cost: {current_cost}, Max budget: {max_budget}"
        body = body or {"message": message, "type": "budget_exceeded", "param": None, "code": "budget_exceeded"}
        super().__init__(message, llm_provider, model, status_code=status_code, body=body, headers=headers)


class InternalServerError(_StatusError, openai.InternalServerError):
    default_status = 500


class ServiceUnavailableError(_StatusError, openai.InternalServerError):
    default_status = 503  # openai's SDK raises InternalServerError for every 5xx


class APIError(_RequestError, openai.APIError):
    pass


class APIConnectionError(_RequestError, openai.APIConnectionError):
    pass


class Timeout(_RequestError, openai.APITimeoutError):
    default_status = 408


# The gateway's error classes to the library's; an error finds its nearest mapped ancestor.
_MAPPED: dict[type[errors.GatewayError], type[Exception]] = {
    errors.ContextWindowExceededError: ContextWindowExceededError,
    errors.ContentPolicyViolationError: ContentPolicyViolationError,
    errors.UnsupportedParamsError: UnsupportedParamsError,
    errors.BadRequestError: BadRequestError,
    errors.AuthenticationError: AuthenticationError,
    errors.PermissionDeniedError: PermissionDeniedError,
    errors.NotFoundError: NotFoundError,
    errors.UnprocessableEntityError: UnprocessableEntityError,
    errors.RateLimitError: RateLimitError,
    errors.ServiceUnavailableError: ServiceUnavailableError,
    errors.InternalServerError: InternalServerError,
    errors.APIConnectionError: APIConnectionError,
    errors.TimeoutError: Timeout,
    errors.GatewayError: APIError,
}


def from_gateway_error(error: errors.GatewayError) -> Exception:
    """The library's exception for a gateway error, with its status, provider, model and body."""
    headers = None if error.retry_after is None else {"retry-after": f"{error.retry_after:g}"}
    details = dict(status_code=error.status_code, body=error.to_openai()["error"], headers=headers)
    if _is_budget_exceeded(error):
        return BudgetExceededError(getattr(error, "current_cost", None), getattr(error, "max_budget", None),
                                   error.message, error.provider, error.model, **details)
    kind = next(_MAPPED[k] for k in type(error).__mro__ if k in _MAPPED)
    return kind(error.message, error.provider, error.model, **details)


def _is_budget_exceeded(error: errors.GatewayError) -> bool:
    """Ours, or an upstream gateway's 429 of type `budget_exceeded` (a LiteLLM or Moneta proxy)."""
    if isinstance(error, errors.BudgetExceededError):
        return True
    detail = error.body.get("error") if isinstance(error.body, dict) else None
    return error.status_code == 429 and isinstance(detail, dict) and detail.get("type") == "budget_exceeded"


def to_gateway_error(error: BaseException) -> errors.GatewayError:
    """The gateway's error for an exception a caller reports (`Router.mark_failure`): the one a
    library exception was raised from, else the class of its status, else a server error."""
    if isinstance(error, errors.GatewayError):
        return error
    if isinstance(error.__cause__, errors.GatewayError):
        return error.__cause__
    if isinstance(error, (openai.APITimeoutError, TimeoutError)):
        return errors.TimeoutError(str(error))
    status = getattr(error, "status_code", None)
    if isinstance(status, int) and status >= 400:
        return errors.error_for_status(status)(str(error), status_code=status)
    return errors.InternalServerError(str(error) or type(error).__name__)


_F = TypeVar("_F", bound=Callable[..., Any])


def raising_library_errors(call: _F) -> _F:
    """Wraps a library function (sync or async): the gateway's errors leave it as these exceptions."""
    if inspect.iscoroutinefunction(call):
        @functools.wraps(call)
        async def async_call(*args: Any, **kwargs: Any) -> Any:
            try:
                return await call(*args, **kwargs)
            except errors.GatewayError as error:
                raise from_gateway_error(error) from error
        return async_call  # type: ignore[return-value]

    @functools.wraps(call)
    def sync_call(*args: Any, **kwargs: Any) -> Any:
        try:
            return call(*args, **kwargs)
        except errors.GatewayError as error:
            raise from_gateway_error(error) from error
    return sync_call  # type: ignore[return-value]


__all__ = ["APIConnectionError", "APIError", "AuthenticationError", "BadRequestError", "BudgetExceededError",
           "ContentPolicyViolationError", "ContextWindowExceededError", "InternalServerError", "NotFoundError",
           "PermissionDeniedError", "RateLimitError", "ServiceUnavailableError", "Timeout", "UnprocessableEntityError",
           "UnsupportedParamsError", "from_gateway_error", "to_gateway_error"]
