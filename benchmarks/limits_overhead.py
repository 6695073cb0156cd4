"""What the connection and body limits cost per request, without sockets.

Feeds one keep-alive connection requests as the OpenAI SDK sends them (16 headers, a small JSON
body), through uvicorn's `HttpToolsProtocol` and through `LimitedHttpToolsProtocol`; then calls an
ASGI app that reads the body and answers, with and without `BodySizeLimit`.
Prints the microseconds per request of each, best and median of 25 rounds, and the differences.
Run: `python -m benchmarks.limits_overhead`.
"""
from __future__ import annotations

import asyncio
import functools
import statistics
import time
from typing import Any, Callable

import uvloop
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from moneta.api.http_protocol import LimitedHttpToolsProtocol
from moneta.api.limits import BodySizeLimit
from moneta.application.config import ConnectionLimits

BODY = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello in one short sentence."}]}'
HEADERS = [
    "Host: gateway.example", "Accept-Encoding: gzip, deflate", "Connection: keep-alive", "Accept: application/json",
    "Content-Type: application/json", "User-Agent: OpenAI/Python 1.99.0", "X-Stainless-Lang: python",
    "X-Stainless-Package-Version: 1.99.0", "X-Stainless-OS: Linux", "X-Stainless-Arch: x64",
    "X-Stainless-Runtime: CPython", "X-Stainless-Runtime-Version: 3.11.9", "Authorization: Bearer sk-bench-key",
    "X-Stainless-Async: false", "X-Stainless-Retry-Count: 0", f"Content-Length: {len(BODY)}",
]
REQUEST = ("POST /v1/chat/completions HTTP/1.1\r\n" + "\r\n".join(HEADERS) + "\r\n\r\n").encode() + BODY
ANSWER = b'{"ok":true}'


async def app(scope: dict, receive: Callable, send: Callable) -> None:
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"11")]})
    await send({"type": "http.response.body", "body": ANSWER})


class Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.responses = 0
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 4000), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def write(self, data: bytes) -> None:
        if data.endswith(ANSWER):
            self.responses += 1

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def protocol_us(protocol_class: Callable, requests: int) -> float:
    """The protocol's own work per request on a keep-alive connection: parse it, start its cycle,
    complete the response. The app's task is left out (the cycle is answered at once): measured
    with it, this machine's noise is larger than the difference."""
    config = Config(app, http="httptools", log_level="warning", access_log=False)
    config.load()
    protocol = protocol_class(config=config, server_state=ServerState(), app_state={})
    transport = Transport()
    protocol.connection_made(transport)

    protocol._start_asgi_task = lambda cycle, app: None
    started = time.thread_time()
    for _ in range(requests):
        protocol.data_received(REQUEST)
        protocol.cycle.response_complete = True  # as the cycle's last send does
        protocol.on_response_complete()
    elapsed = time.thread_time() - started
    assert not transport.closed, "the server closed the connection"
    protocol.connection_lost(None)
    return elapsed / requests * 1e6


async def asgi_call_us(asgi: Callable, requests: int) -> float:
    scope = {"type": "http"}
    message = {"type": "http.request", "body": BODY, "more_body": False}

    async def receive() -> dict:
        return message

    async def send(_: dict) -> None:
        pass

    started = time.thread_time()
    for _ in range(requests):
        await asgi(scope, receive, send)
    return (time.thread_time() - started) / requests * 1e6


def best(measures: list[Callable[[], Any]], rounds: int = 25) -> list[tuple[float, float]]:
    """(best, median) of each measure, run in turns so that a busy moment of the machine hits all;
    CPU time of this thread, not wall time: other processes on the machine do not count."""
    times: list[list[float]] = [[] for _ in measures]
    for _ in range(rounds):
        for measure, kept in zip(measures, times):
            kept.append(uvloop.run(measure()))
    return [(min(kept), statistics.median(kept)) for kept in times]


def main() -> None:
    limited = functools.partial(LimitedHttpToolsProtocol, limits=ConnectionLimits())
    protocols = best([lambda: protocol_us(HttpToolsProtocol, 20_000), lambda: protocol_us(limited, 20_000)])
    apps = best([lambda: asgi_call_us(app, 50_000),
                 lambda: asgi_call_us(BodySizeLimit(app, 10 * 1024 * 1024), 50_000)])
    for what, (plain, with_limits) in (("protocol", protocols), ("ASGI call", apps)):
        print(f"{what}: best {plain[0]:.2f} -> {with_limits[0]:.2f} us (+{with_limits[0] - plain[0]:.2f}), "
              f"median {plain[1]:.2f} -> {with_limits[1]:.2f} us (+{with_limits[1] - plain[1]:.2f})")


if __name__ == "__main__":
    main()
