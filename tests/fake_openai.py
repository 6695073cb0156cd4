"""A wire-level fake of OpenAI's API on loopback, running in a thread, recording each request.

It answers as OpenAI documents: chat completions (JSON and SSE with a usage chunk),
completions, embeddings, transcriptions, and OpenAI error bodies on demand.
"""
from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class FakeOpenAI:
    api_key: str = "sk-upstream-test-key"
    reply: str = "Hello from the fake upstream."
    usage: dict[str, int] = field(default_factory=lambda: {"prompt_tokens": 11, "completion_tokens": 7,
                                                           "total_tokens": 18})
    fail_with: tuple[int, dict[str, Any]] | None = None
    stream_error: dict[str, Any] | None = None  # an in-band error event sent after the first chunk
    delay_s: float = 0.0
    requests: list[Recorded] = field(default_factory=list)
    port: int = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> "FakeOpenAI":
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._serve, args=(ready,), daemon=True).start()
        ready.wait(10)
        return self

    def _serve(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application(client_max_size=50 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_post("/v1/embeddings", self._embeddings)
        app.router.add_post("/v1/audio/transcriptions", self._transcriptions)
        self._runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        ready.set()
        self._loop.run_forever()

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)

    # -- handlers --------------------------------------------------------------------------

    async def _record(self, request: web.Request, body: Any) -> web.Response | None:
        self.requests.append(Recorded(request.method, request.path, dict(request.headers), body))
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return _error(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.fail_with is not None:
            status, error = self.fail_with
            headers = {"retry-after": "1"} if status == 429 else {}
            return web.json_response({"error": error}, status=status, headers=headers)
        return None

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        refusal = await self._record(request, body)
        if refusal is not None:
            return refusal
        if body.get("stream"):
            return await self._chat_stream(request, body)
        return web.json_response({
            "id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()), "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": self.reply},
                         "finish_reason": "stop", "logprobs": None}],
            "usage": self.usage,
        })

    async def _chat_stream(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": int(time.time()),
                "model": body["model"]}
        words = self.reply.split(" ")
        for index, word in enumerate(words):
            delta = {"content": word if index == 0 else " " + word}
            if index == 0:
                delta["role"] = "assistant"
            await _send(response, {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
            if self.stream_error is not None:
                await _send(response, {"error": self.stream_error})
                await response.write_eof()
                return response
        await _send(response, {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        if (body.get("stream_options") or {}).get("include_usage"):
            await _send(response, {**base, "choices": [], "usage": self.usage})
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def _completions(self, request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        refusal = await self._record(request, body)
        if refusal is not None:
            return refusal
        return web.json_response({
            "id": "cmpl-fake", "object": "text_completion", "created": int(time.time()), "model": body["model"],
            "choices": [{"index": 0, "text": self.reply, "finish_reason": "stop", "logprobs": None}],
            "usage": self.usage,
        })

    async def _embeddings(self, request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        refusal = await self._record(request, body)
        if refusal is not None:
            return refusal
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        return web.json_response({
            "object": "list", "model": body["model"],
            "data": [{"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3]} for i in range(len(inputs))],
            "usage": {"prompt_tokens": self.usage["prompt_tokens"], "total_tokens": self.usage["prompt_tokens"]},
        })

    async def _transcriptions(self, request: web.Request) -> web.Response:
        form = await request.post()
        fields = {k: (v if isinstance(v, str) else f"<file {v.filename}>") for k, v in form.items()}
        refusal = await self._record(request, fields)
        if refusal is not None:
            return refusal
        if fields.get("response_format") == "verbose_json":
            return web.json_response({"task": "transcribe", "language": "english", "duration": 12.5,
                                      "text": self.reply, "segments": []})
        return web.json_response({"text": self.reply})


async def _send(response: web.StreamResponse, chunk: dict[str, Any]) -> None:
    await response.write(b"data: " + orjson.dumps(chunk) + b"\n\n")


def _error(status: int, message: str, kind: str, code: str | None) -> web.Response:
    return web.json_response({"error": {"message": message, "type": kind, "param": None, "code": code}},
                             status=status)
