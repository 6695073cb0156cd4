"""A wire-level fake of Cohere's v2 API: checks the bearer key, records each request, and
answers with JSON, with Cohere's error bodies, or with a v2 server-sent event stream."""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from tests.providers.fakes.server import start_loopback

API_KEY = "co-test-key-123"


@dataclass
class Reply:
    status: int = 200
    json: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    events: list[dict[str, Any]] | None = None


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    json: Any


class FakeCohere:
    def __init__(self) -> None:
        self.received: list[Received] = []
        self.reply: Callable[[Received], Reply] = lambda received: Reply(json={})
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> FakeCohere:
        app = web.Application()
        app.router.add_post("/v2/chat", self._handle)
        app.router.add_post("/v2/embed", self._handle)
        self._runner, port = await start_loopback(app)
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        received = Received(request.path, dict(request.headers), orjson.loads(await request.read()))
        self.received.append(received)
        if request.headers.get("Authorization") != f"Bearer {API_KEY}":
            return web.json_response({"message": "invalid api token"}, status=401)
        reply = self.reply(received)
        if reply.events is None:
            return web.Response(status=reply.status, body=orjson.dumps(reply.json),
                                headers={"Content-Type": "application/json", **reply.headers})
        return await _sse(request, reply.events)


async def _sse(request: web.Request, events: list[dict[str, Any]]) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    for event in events:
        await response.write(b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n")
        await asyncio.sleep(0.001)
    await response.write_eof()
    return response
