"""A wire-level fake of OpenAI's Realtime API (and Azure's form of it) on loopback, in a thread.

It refuses a handshake without the expected credentials (401), records each handshake, sends
`session.created`, answers each `response.create` with a few events and a `response.done` that
carries `usage`, echoes binary frames back as binary, and ends the session itself when asked
with a (made-up) `fake.hang_up` event.
"""
from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import WSMsgType, web


@dataclass
class Handshake:
    path: str
    query: dict[str, str]
    headers: dict[str, str]


@dataclass
class FakeRealtime:
    api_key: str = "sk-upstream-realtime-key"
    usage: dict[str, Any] = field(default_factory=lambda: {
        "total_tokens": 180, "input_tokens": 120, "output_tokens": 60,
        "input_token_details": {"text_tokens": 20, "audio_tokens": 100, "cached_tokens": 10,
                                "cached_tokens_details": {"text_tokens": 10, "audio_tokens": 0}},
        "output_token_details": {"text_tokens": 10, "audio_tokens": 50}})
    handshakes: list[Handshake] = field(default_factory=list)
    closed: int = 0  # sessions that ended, from either side
    port: int = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "FakeRealtime":
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._serve, args=(ready,), daemon=True).start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)

    def _serve(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_get("/v1/realtime", self._openai)
        app.router.add_get("/openai/realtime", self._azure)
        self._runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        ready.set()
        self._loop.run_forever()

    async def _openai(self, request: web.Request) -> web.StreamResponse:
        return await self._session(request, request.headers.get("Authorization") == f"Bearer {self.api_key}")

    async def _azure(self, request: web.Request) -> web.StreamResponse:
        return await self._session(request, request.headers.get("api-key") == self.api_key)

    async def _session(self, request: web.Request, authorized: bool) -> web.StreamResponse:
        self.handshakes.append(Handshake(request.path, dict(request.query), dict(request.headers)))
        if not authorized:
            body = {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error",
                              "code": "invalid_api_key"}}
            return web.json_response(body, status=401)
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        await _send(socket, {"type": "session.created", "event_id": "evt_0",
                             "session": {"type": "realtime", "object": "realtime.session", "id": "sess_1",
                                         "model": request.query.get("model", "")}})
        responses = 0
        try:
            async for message in socket:
                if message.type == WSMsgType.BINARY:
                    await socket.send_bytes(message.data)
                    continue
                kind = orjson.loads(message.data).get("type")
                if kind == "response.create":
                    responses += 1
                    await self._respond(socket, f"resp_{responses}")
                elif kind == "fake.hang_up":
                    await socket.close()
        finally:
            self.closed += 1
        return socket

    async def _respond(self, socket: web.WebSocketResponse, response_id: str) -> None:
        await _send(socket, {"type": "response.created", "event_id": f"evt_{response_id}_0",
                             "response": {"id": response_id, "object": "realtime.response", "status": "in_progress"}})
        for i, delta in enumerate(("Hello", " there")):
            await _send(socket, {"type": "response.output_text.delta", "event_id": f"evt_{response_id}_{i + 1}",
                                 "response_id": response_id, "item_id": "item_1", "output_index": 0,
                                 "content_index": 0, "delta": delta})
        await _send(socket, {"type": "response.done", "event_id": f"evt_{response_id}_9",
                             "response": {"id": response_id, "object": "realtime.response", "status": "completed",
                                          "output": [], "usage": self.usage}})


async def _send(socket: web.WebSocketResponse, event: dict[str, Any]) -> None:
    await socket.send_str(orjson.dumps(event).decode())
