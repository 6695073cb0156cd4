"""A wire-level fake of Lago's API (`/api/v1`), on loopback in a thread, written from its OpenAPI
description (`../shared/reference/lago-openapi.yaml`).

This module is the server: Bearer authentication (401 `{"status", "error"}` as Lago answers), a
log of every request, and injected faults (statuses with headers, stalls, an outage during which
the port refuses connections). The API's parts install their state and routes on it:
`fake_lago_billing` (customers, subscriptions, entitlements, wallets, webhook signing) and
`fake_lago_events` (usage events).
"""
from __future__ import annotations

import asyncio
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

import orjson
from aiohttp import web

Handler = Callable[[web.Request], Any]


@dataclass
class Fault:
    status: int | None = None  # None: no answer (a stall of `stall_s`, then the connection drops)
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    stall_s: float = 0.0
    path_prefix: str = ""  # only requests whose path (after /api/v1) starts with it


@dataclass
class Seen:
    method: str
    path: str  # after /api/v1
    query: dict[str, str]
    headers: dict[str, str]
    body: Any


class FakeLago:
    def __init__(self, api_key: str = "lago-test-api-key") -> None:
        self.api_key = api_key
        self.requests: list[Seen] = []
        self.faults: deque[Fault] = deque()
        self.port = 0
        self._routes: list[tuple[str, str, Handler]] = []
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None

    @property
    def url(self) -> str:
        """Lago's base URL, as `moneta_settings.lago.api_url` takes it."""
        return f"http://127.0.0.1:{self.port}"

    def route(self, method: str, path: str, handler: Handler) -> None:
        """`path` after /api/v1, in aiohttp's syntax ("/subscriptions/{external_id}"). Before start()."""
        self._routes.append((method, path, handler))

    # -- faults ------------------------------------------------------------------------------

    def fail_next(self, count: int, status: int, body: dict[str, Any] | None = None,
                  headers: dict[str, str] | None = None, path_prefix: str = "") -> None:
        for _ in range(count):
            self.faults.append(Fault(status, body or {"status": status, "error": _reason(status)}, headers or {},
                                     path_prefix=path_prefix))

    def stall_next(self, count: int, seconds: float, path_prefix: str = "") -> None:
        """The next requests get no answer for `seconds`, then the connection is dropped."""
        for _ in range(count):
            self.faults.append(Fault(stall_s=seconds, path_prefix=path_prefix))

    def down(self) -> None:
        """An outage: the port refuses connections until up(), and open (keep-alive) ones are dropped."""
        asyncio.run_coroutine_threadsafe(self._stop_site(), self._loop).result(10)

    def up(self) -> None:
        asyncio.run_coroutine_threadsafe(self._start_site(self.port), self._loop).result(10)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> "FakeLago":
        ready = threading.Event()
        threading.Thread(target=self._serve, args=(ready,), daemon=True).start()
        if not ready.wait(10):
            raise RuntimeError("the fake Lago did not start")
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)

    def _serve(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application(middlewares=[self._gate])
        for method, path, handler in self._routes:
            app.router.add_route(method, "/api/v1" + path, handler)
        self._runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        self._loop.run_until_complete(self._start_site(0))
        ready.set()
        self._loop.run_forever()

    async def _stop_site(self) -> None:
        await self._site.stop()
        for connection in self._runner.server.connections:  # type: ignore[union-attr]
            connection.force_close()

    async def _start_site(self, port: int) -> None:
        self._site = web.TCPSite(self._runner, "127.0.0.1", port, reuse_address=True)
        await self._site.start()
        self.port = self._site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    @web.middleware
    async def _gate(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        raw = await request.read()
        path = request.path.removeprefix("/api/v1")
        self.requests.append(Seen(request.method, path, dict(request.query), dict(request.headers),
                                  orjson.loads(raw) if raw else None))
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return json_response({"status": 401, "error": "Unauthorized"}, 401)
        fault = self._fault_for(path)
        if fault is not None:
            if fault.status is None:
                await asyncio.sleep(fault.stall_s)
                if request.transport is not None:  # the client may have given up already
                    request.transport.close()
                raise asyncio.CancelledError
            return json_response(fault.body, fault.status, fault.headers)
        return await handler(request)

    def _fault_for(self, path: str) -> Fault | None:
        for fault in list(self.faults):
            if path.startswith(fault.path_prefix):
                self.faults.remove(fault)
                return fault
        return None


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, headers=headers,
                        content_type="application/json")


def not_found(resource: str) -> web.Response:
    return json_response({"status": 404, "error": "Not Found", "code": f"{resource}_not_found"}, 404)


def unprocessable(details: dict[str, Any]) -> web.Response:
    return json_response({"status": 422, "error": "Unprocessable Entity", "code": "validation_errors",
                          "error_details": details}, 422)


def _reason(status: int) -> str:
    return {429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway",
            503: "Service Unavailable"}.get(status, "Error")
