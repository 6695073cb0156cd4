"""Talking to Lago's API over httpx: the base URL with `/api/v1`, the Bearer key, timeouts, and
Lago's refusals as exceptions that say whether trying again can help and when.

Never on the request path: the sync, the usage outbox and reconciliation use it.
"""
from __future__ import annotations

import time
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import orjson

from moneta.application.config import LagoSettings

TIMEOUT_S = 10.0


class LagoError(Exception):
    """Lago answered with a refusal (`status`, its JSON `body`), or did not answer (`status` None)."""

    def __init__(self, message: str, status: int | None = None, body: Any = None,
                 retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body
        self.retry_after_s = retry_after_s

    @property
    def retryable(self) -> bool:
        """No answer, 408, 429 and 5xx: the same request may succeed later."""
        return self.status is None or self.status in (408, 429) or self.status >= 500


class LagoUnreachable(LagoError):
    """No answer: refused, timed out, or the connection dropped."""


def client(settings: LagoSettings, *, timeout_s: float = TIMEOUT_S,
           transport: httpx.AsyncBaseTransport | None = None) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"{settings.api_url}/api/v1", timeout=timeout_s, transport=transport,
                             headers={"Authorization": f"Bearer {settings.api_key}",
                                      "Accept": "application/json"})


async def call(http: httpx.AsyncClient, method: str, path: str, *, params: Any = None,
               body: Any = None) -> Any:
    """Lago's JSON answer; LagoError on a refusal, LagoUnreachable without an answer."""
    content = None if body is None else orjson.dumps(body)
    headers = {"Content-Type": "application/json"} if content is not None else None
    try:
        response = await http.request(method, path, params=params, content=content, headers=headers)
    except httpx.TransportError as error:  # the message names the failure, never the key
        raise LagoUnreachable(f"Lago did not answer {method} {path}: {type(error).__name__}") from None
    if response.is_success:
        return orjson.loads(response.content) if response.content else None
    raise LagoError(f"Lago refused {method} {path} with {response.status_code}", response.status_code,
                    _json(response), retry_after(response.headers))


def retry_after(headers: httpx.Headers) -> float | None:
    """Seconds to wait, from `Retry-After` (seconds or an HTTP date) or `X-RateLimit-Reset`
    (seconds until the window resets, as Lago sends it; a Unix time when it is that large)."""
    value = headers.get("retry-after")
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            try:
                return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
            except (TypeError, ValueError):
                return None
    reset = headers.get("x-ratelimit-reset")
    try:
        seconds = float(reset) if reset else None
    except ValueError:
        return None
    if seconds is not None and seconds > 1e9:
        seconds -= time.time()
    return None if seconds is None else max(0.0, seconds)


def _json(response: httpx.Response) -> Any:
    try:
        return orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return {"error": response.text[:200]}
