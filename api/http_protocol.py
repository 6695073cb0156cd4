"""uvicorn's httptools protocol with the connection limits it lacks (its h11 protocol bounds the
head's size, httptools nothing):

- a request head (request line and headers) over `max_header_bytes`, or with more than
  `max_header_count` headers, is answered 431 and the connection closed, as soon as it is known:
  a head still streaming in is cut once its bytes pass the limit, not buffered to its end;
- the head must be complete `header_timeout_s` after the connection opened, or after the first
  byte that follows the previous request; the body must not pause longer than `body_timeout_s`
  between two reads: else 408 and the connection is closed. A pause caused by the app (it has
  not read what came, so reading is paused) is not the client's and does not count;
- an answer sent before the request body has ended closes the connection: the rest of the body
  is not read (uvicorn would otherwise read and discard all of it to keep the connection).

Idle keep-alive connections are uvicorn's: `timeout_keep_alive`.
"""
from __future__ import annotations

import asyncio
import math
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from moneta.application.config import ConnectionLimits

_NEVER = math.inf


def _answer(status: str, code: str, message: str) -> bytes:
    """A complete HTTP response closing the connection, with OpenAI's error body."""
    body = orjson.dumps({"error": {"message": message, "type": "invalid_request_error", "param": None,
                                   "code": code}})
    head = (f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            "connection: close\r\n\r\n")
    return head.encode() + body


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """One per connection; `moneta serve` passes it to uvicorn, with the limits bound, as `http=`."""

    def __init__(self, *args: Any, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits
        self._deadline = _NEVER  # by when the client must have sent what the server waits for
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = _NEVER
        self._refusal: bytes | None = None
        # Offsets in the bytes received on this connection. A head is in progress from the end of
        # the previous body until its headers are complete: it starts at or after `_head_from`, and
        # every byte after `_head_after` is part of it.
        self._in_head = True
        self._head_from = self._head_after = 0
        self._chunk_from = self._chunk_to = 0  # the chunk being parsed

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._expect_client(self.limits.header_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self._timer is not None:
            self._timer.cancel()

    def data_received(self, data: bytes) -> None:
        self._chunk_from = self._chunk_to
        self._chunk_to += len(data)
        if not self._in_head:  # a body
            self._expect_client(self.limits.body_timeout_s)
        elif self._deadline == _NEVER:  # the first byte after a request
            self._expect_client(self.limits.header_timeout_s)
        super().data_received(data)
        if self._in_head and self._chunk_to - self._head_after > self.limits.max_header_bytes:
            self._close_with(self._head_too_large())

    def on_headers_complete(self) -> None:
        self._in_head = False
        limits = self.limits
        if len(self.headers) > limits.max_header_count or (
                self._chunk_to - self._head_from > limits.max_header_bytes  # else it cannot be too large
                and len(self.url) + sum(len(n) + len(v) + 4 for n, v in self.headers) > limits.max_header_bytes):
            # Raising is the only way to stop httptools within a chunk; uvicorn takes it for a
            # malformed request and calls send_400_response, which answers this refusal instead.
            self._refusal = self._head_too_large()
            raise ValueError("request head too large")
        super().on_headers_complete()
        self._expect_client(limits.body_timeout_s)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._deadline = _NEVER
        self._in_head = True
        self._head_from, self._head_after = self._chunk_from, self._chunk_to

    def on_response_complete(self) -> None:
        if self.cycle.more_body and not self.pipeline:  # answered before the body ended: a 413, ...
            self.transport.close()
        super().on_response_complete()

    def send_400_response(self, msg: str) -> None:
        if self._refusal is None:
            super().send_400_response(msg)
        else:
            self._close_with(self._refusal)

    def _head_too_large(self) -> bytes:
        return _answer("431 Request Header Fields Too Large", "request_header_fields_too_large",
                       f"The request headers are too large: at most {self.limits.max_header_bytes} bytes "
                       f"in {self.limits.max_header_count} headers.")

    def _close_with(self, answer: bytes) -> None:
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is None or not cycle.response_started or cycle.response_complete:  # not amid another answer
            self.transport.write(answer)
        self.transport.close()

    # One timer per connection, moved only when a deadline comes sooner than it: setting a
    # deadline per request costs a clock read, and the timer fires about once per timeout.
    def _expect_client(self, within: float) -> None:
        self._deadline = deadline = self.loop.time() + within
        if deadline < self._timer_at:
            self._arm(deadline)

    def _arm(self, at: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.loop.call_at(at, self._on_timer)
        self._timer_at = at

    def _on_timer(self) -> None:
        self._timer, self._timer_at = None, _NEVER
        if self.transport.is_closing() or self._deadline == _NEVER:
            return
        if self.flow.read_paused:
            self._expect_client(self.limits.header_timeout_s if self._in_head else self.limits.body_timeout_s)
        elif self._deadline > self.loop.time():
            self._arm(self._deadline)
        else:
            self._close_with(_answer("408 Request Timeout", "request_timeout",
                                     "The request was not received in time."))
