"""The request body limit, counted as the body arrives: a chunked body declares no size, and a
multipart form is bounded per part only."""
from __future__ import annotations

from typing import Any

from moneta.domain.errors import RequestTooLargeError


class BodySizeLimit:
    """Hands the app a receive that raises RequestTooLargeError at the first body message past
    `max_bytes`, so the route answers its usual 413 without reading the rest (the routes check a
    declared Content-Length themselves; the HTTP protocol then closes the connection rather than
    read what is left). Routes read the body from the Request: FastAPI would turn the error into a
    400 for a route that declares a body parameter."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            receive = _CountingReceive(receive, self.max_bytes)
        await self.app(scope, receive, send)


class _CountingReceive:
    __slots__ = ("_receive", "_limit", "_left")

    def __init__(self, receive: Any, limit: int) -> None:
        self._receive = receive
        self._limit = self._left = limit

    async def __call__(self) -> dict:
        message = await self._receive()
        self._left -= len(message.get("body", b""))
        if self._left < 0:
            raise RequestTooLargeError(f"Request body exceeds the limit of {self._limit} bytes.")
        return message
