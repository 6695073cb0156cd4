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
    kind = next(_MAPPED[k] for k in type(error).__mro__ if k in _MAPPED)
    headers = None if error.retry_after is None else {"retry-after": f"{error.retry_after:g}"}
    return kind(error.message, error.provider, error.model, status_code=error.status_code,
                body=error.to_openai()["error"], headers=headers)


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


__all__ = ["APIConnectionError", "APIError", "AuthenticationError", "BadRequestError", "ContentPolicyViolationError",
           "ContextWindowExceededError", "InternalServerError", "NotFoundError", "PermissionDeniedError",
           "RateLimitError", "ServiceUnavailableError", "Timeout", "UnprocessableEntityError",
           "UnsupportedParamsError", "from_gateway_error"]
