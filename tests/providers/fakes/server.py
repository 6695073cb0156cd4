"""A loopback HTTP server for wire-level provider fakes: routes, recorded requests, canned failures."""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from moneta.infrastructure.http_session import close_session


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: Any  # JSON, or the fields of a form post (file fields as bytes)


Handler = Callable[[Seen, web.Request], Awaitable[web.StreamResponse]]


@dataclass
class FakeServer:
    seen: list[Seen] = field(default_factory=list)
    failure: tuple[int, Any, dict[str, str]] | None = None  # status, body, headers of the next answers
    port: int = 0

    def __post_init__(self) -> None:
        self.app = web.Application()
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def last(self) -> Seen:
        return self.seen[-1]

    def route(self, method: str, path: str, handler: Handler) -> None:
        async def serve(request: web.Request) -> web.StreamResponse:
            seen = await _record(request)
            self.seen.append(seen)
            if self.failure:
                status, body, headers = self.failure
                return web.Response(status=status, body=orjson.dumps(body), headers=headers,
                                    content_type="application/json")
            return await handler(seen, request)

        self.app.router.add_route(method, path, serve)

    async def start(self) -> FakeServer:
        self._runner, self.port = await start_loopback(self.app)
        return self

    async def stop(self) -> None:
        await close_session()
        if self._runner:
            await self._runner.cleanup()


async def start_loopback(app: web.Application) -> tuple[web.AppRunner, int]:
    """Serves `app` on a free loopback port; returns its runner (for cleanup) and the port."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]


async def _record(request: web.Request) -> Seen:
    if request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        body: Any = {k: v.file.read() if isinstance(v, web.FileField) else v for k, v in (await request.post()).items()}
    else:
        raw = await request.read()
        body = orjson.loads(raw) if raw else None
    return Seen(request.method, request.path, dict(request.query),
                {k.lower(): v for k, v in request.headers.items()}, body)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), headers=headers, content_type="application/json")


async def stream_lines(request: web.Request, lines: list[bytes], content_type: str) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": content_type})
    await response.prepare(request)
    for line in lines:
        await response.write(line)
    await response.write_eof()
    return response


def sse(events: list[tuple[str | None, Any]]) -> list[bytes]:
    """SSE frames: `event:` (when named) and `data:` lines, then a blank line."""
    frames = []
    for name, data in events:
        head = f"event: {name}\n".encode() if name else b""
        frames.append(head + b"data: " + orjson.dumps(data) + b"\n\n")
    return frames
