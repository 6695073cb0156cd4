"""A fixed-answer OpenAI upstream for the benchmark: a raw asyncio HTTP/1.1 server.

`POST /v1/chat/completions` answers one fixed `chat.completion` (with usage), keep-alive;
anything else is a 404. No framework, no JSON work per request: it must never be the
bottleneck of the benchmark. Run it on its own: `python -m benchmarks.upstream --port 0`
prints `READY <port>` on stdout once it listens.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys

CHAT_COMPLETION = json.dumps({
    "id": "chatcmpl-bench",
    "object": "chat.completion",
    "created": 1700000000,
    "model": "gpt-4o-mini",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello from the benchmark upstream."},
                 "finish_reason": "stop", "logprobs": None}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 8, "total_tokens": 20},
}, separators=(",", ":")).encode()


def _response(status: str, body: bytes, content_type: bytes = b"application/json") -> bytes:
    return (b"HTTP/1.1 " + status.encode() + b"\r\nContent-Type: " + content_type
            + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\nConnection: keep-alive\r\n\r\n" + body)


OK = _response("200 OK", CHAT_COMPLETION)
NOT_FOUND = _response("404 Not Found", b'{"error":{"message":"not found","type":"invalid_request_error"}}')
CHAT_PATHS = (b"/v1/chat/completions", b"/chat/completions")


class FixedAnswer(asyncio.Protocol):
    """Parses just enough HTTP/1.1: the request line, Content-Length, pipelined requests."""

    __slots__ = ("transport", "buffer")

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        out = []
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                break
            head = buffer[:end]
            length = 0
            start = head.lower().find(b"\r\ncontent-length:")
            if start >= 0:
                stop = head.find(b"\r\n", start + 2)
                length = int(head[start + 17: stop if stop >= 0 else len(head)].strip())
            total = end + 4 + length
            if len(buffer) < total:
                break
            method, _, rest = head.partition(b" ")
            path = rest.partition(b" ")[0]
            out.append(OK if method == b"POST" and path in CHAT_PATHS else NOT_FOUND)
            buffer = buffer[total:]
        self.buffer = buffer
        if out:
            self.transport.write(b"".join(out))  # type: ignore[attr-defined]


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(FixedAnswer, host, port, backlog=1024, reuse_address=True)
    bound = server.sockets[0].getsockname()[1]
    print(f"READY {bound}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--cpu", type=int, action="append", help="pin to this CPU (repeatable)")
    args = parser.parse_args(argv)
    if args.cpu:
        os.sched_setaffinity(0, set(args.cpu))
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        runner = asyncio.run
    try:
        runner(serve(args.host, args.port))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
