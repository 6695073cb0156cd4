"""The Lua scripts of the limit and budget stores, run on one pipelined Redis connection.

redis-py's asyncio client spends about 0.15 ms of CPU on each command (a pooled connection taken
and given back, the command packed, the reply read through its parser), which made a rate-limited
or budgeted call cost a third more than one without. Here a call is a command packed by hiredis,
written to one shared connection, and a future resolved by the reply, which hiredis parses:
requests of every coroutine are pipelined on it, in order, and Redis answers them in that order.
What is written in one turn of the event loop goes in one system call.

- The connection is opened by the first call (AUTH and SELECT as the URL says: `redis://`,
  `rediss://` for TLS, `unix://`), within `timeout_s`; a call whose reply has not come `timeout_s`
  after it was sent closes the connection, and every call waiting on it fails: the order of the
  replies can no longer be trusted. The next call opens a new one.
- Failures are redis-py's exceptions (`redis.exceptions.ConnectionError`, `TimeoutError`,
  `ResponseError`), so callers handle them as before.
- A script runs by EVALSHA; when Redis does not know it (restarted, flushed) it is sent once by
  EVAL, which loads it again.
"""
from __future__ import annotations

import asyncio
import hashlib
import ssl
from collections import deque
from typing import Any, Sequence

import hiredis
from redis import exceptions as errors
from redis.connection import parse_url


class RedisScripts:
    def __init__(self, url: str, *, timeout_s: float) -> None:
        self._where = parse_url(url)
        self._timeout_s = timeout_s
        self._connection: _Connection | None = None
        self._connecting: asyncio.Future[_Connection] | None = None

    def script(self, source: str) -> "Script":
        return Script(self, source)

    async def ping(self) -> None:
        await self.command(b"PING")

    async def command(self, *parts: bytes | str | int) -> Any:
        return await self.send(hiredis.pack_command(parts))

    async def send(self, payload: bytes) -> Any:
        """Sends one command, encoded, and returns its reply (an error reply raised)."""
        connection = self._connection
        if connection is None or connection.closed or connection.loop is not asyncio.get_running_loop():
            connection = await self._connect()
        reply = await connection.send(payload)
        if isinstance(reply, errors.ResponseError):
            raise reply
        return reply

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close(errors.ConnectionError("closed"))

    async def _connect(self) -> "_Connection":
        """One connection attempt at a time: the calls that arrive meanwhile wait for it."""
        if self._connecting is not None and not self._connecting.done() \
                and self._connecting.get_loop() is asyncio.get_running_loop():
            return await asyncio.shield(self._connecting)
        self._connecting = asyncio.get_running_loop().create_future()
        try:
            connection = await self._open()
        except BaseException as error:  # a RedisError, or this caller cancelled: those waiting are told
            failure = error if isinstance(error, errors.RedisError) else errors.ConnectionError("connecting cancelled")
            self._connecting.set_exception(failure)
            self._connecting.exception()  # retrieved: callers that wait get it through shield
            raise
        self._connection = connection
        self._connecting.set_result(connection)
        return connection

    async def _open(self) -> "_Connection":
        loop = asyncio.get_running_loop()
        where = self._where
        factory = lambda: _Connection(loop, self._timeout_s)  # noqa: E731
        try:
            async with asyncio.timeout(self._timeout_s):
                if "path" in where:
                    _, connection = await loop.create_unix_connection(factory, where["path"])
                else:
                    _, connection = await loop.create_connection(
                        factory, where.get("host", "localhost"), int(where.get("port", 6379)),
                        ssl=_tls(where) if "connection_class" in where else None)
                setup = []
                if where.get("password") is not None:
                    user = where.get("username")
                    setup.append(hiredis.pack_command((b"AUTH", user, where["password"]) if user
                                                      else (b"AUTH", where["password"])))
                if where.get("db"):
                    setup.append(hiredis.pack_command((b"SELECT", int(where["db"]))))
                for reply in await asyncio.gather(*(connection.send(step) for step in setup)):
                    if isinstance(reply, errors.ResponseError):
                        connection.close(reply)
                        raise reply
        except TimeoutError:
            raise errors.TimeoutError(f"Timeout connecting to redis (over {self._timeout_s} s)") from None
        except OSError as error:
            raise errors.ConnectionError(f"Error connecting to redis: {error}") from None
        return connection


class Script:
    def __init__(self, client: RedisScripts, source: str) -> None:
        self._client = client
        self._source = source.encode()
        self._sha = hashlib.sha1(self._source).hexdigest()

    async def __call__(self, keys: Sequence[str], args: Sequence[str | int]) -> Any:
        try:
            return await self._client.send(hiredis.pack_command((b"EVALSHA", self._sha, len(keys), *keys, *args)))
        except errors.ResponseError as error:
            if not str(error).startswith("NOSCRIPT"):
                raise
        return await self._client.send(hiredis.pack_command((b"EVAL", self._source, len(keys), *keys, *args)))


def _tls(where: dict[str, Any]) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if str(where.get("ssl_cert_reqs", "required")).lower() in ("none", "optional"):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class _Connection(asyncio.Protocol):
    """Replies come in the order of the requests: each resolves the oldest waiting future. One
    timer watches the oldest request's deadline, not one per request."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout_s: float) -> None:
        self.loop = loop
        self.closed = False
        self._timeout_s = timeout_s
        self._transport: asyncio.Transport | None = None
        self._waiting: deque[tuple[asyncio.Future[Any], float]] = deque()
        self._reader = hiredis.Reader(replyError=errors.ResponseError)
        self._timer: asyncio.TimerHandle | None = None
        self._unsent: list[bytes] = []  # written together once this turn of the loop is over: one system call

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(errors.ConnectionError(f"Connection to redis lost ({exc or 'closed by the server'})"))

    def send(self, payload: bytes) -> asyncio.Future[Any]:
        if self.closed or self._transport is None:
            raise errors.ConnectionError("Connection to redis closed")
        future = self.loop.create_future()
        deadline = self.loop.time() + self._timeout_s
        self._waiting.append((future, deadline))
        if not self._unsent:
            self.loop.call_soon(self._write)
        self._unsent.append(payload)
        if self._timer is None:
            self._timer = self.loop.call_at(deadline, self._check_deadline)
        return future

    def _write(self) -> None:
        unsent, self._unsent = self._unsent, []
        if not self.closed and self._transport is not None:
            self._transport.write(b"".join(unsent))

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        waiting = self._waiting
        while waiting:
            try:
                reply = self._reader.gets()
            except hiredis.ProtocolError as error:
                self.close(errors.ConnectionError(f"Protocol error from redis: {error}"))
                return
            if reply is False:  # not all of it yet
                return
            future, _ = waiting.popleft()
            if not future.done():
                future.set_result(reply)

    def close(self, error: errors.RedisError) -> None:
        self._fail(error)
        if self._transport is not None:
            self._transport.close()

    def _check_deadline(self) -> None:
        self._timer = None
        if not self._waiting or self.closed:
            return
        deadline = self._waiting[0][1]
        if deadline <= self.loop.time():
            self.close(errors.TimeoutError(f"Timeout reading from redis (no reply within {self._timeout_s} s)"))
        else:
            self._timer = self.loop.call_at(deadline, self._check_deadline)

    def _fail(self, error: errors.RedisError) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._waiting:
            future, _ = self._waiting.popleft()
            if not future.done():
                future.set_exception(error)
