"""The response cache in Redis, shared by every worker and host.

A cache is an optimisation: when Redis fails or does not answer within `timeout_s`, a read is a
miss and a write is dropped, the outage is logged once, and Redis is left alone for `retry_s`
so that calls do not wait on a server known to be down.
"""
from __future__ import annotations

import logging
import time

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

log = logging.getLogger("moneta.cache")

TIMEOUT_S = 0.25
RETRY_S = 3.0


class RedisCacheStore:
    kind = "redis"

    def __init__(self, url: str, timeout_s: float = TIMEOUT_S, retry_s: float = RETRY_S) -> None:
        self._client = redis.Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s,
                                            retry=Retry(NoBackoff(), 0), max_connections=32)
        self._retry_s = retry_s
        self._down_until = 0.0
        self._down = False

    async def get(self, key: str) -> bytes | None:
        if self._skipping():
            return None
        try:
            value = await self._client.get(key)
        except (redis.RedisError, OSError) as error:
            self._went_down(error)
            return None
        self._came_back()
        return value

    async def set(self, key: str, value: bytes, ttl_s: float | None) -> None:
        if self._skipping():
            return
        try:
            await self._client.set(key, value, px=None if ttl_s is None else max(int(ttl_s * 1000), 1))
        except (redis.RedisError, OSError) as error:
            self._went_down(error)
            return
        self._came_back()

    async def ping(self) -> bool:
        try:
            return bool(await self._client.ping())
        except (redis.RedisError, OSError):
            return False

    async def close(self) -> None:
        await self._client.aclose()

    def _skipping(self) -> bool:
        return self._down and time.monotonic() < self._down_until

    def _went_down(self, error: Exception) -> None:
        if not self._down:
            log.warning("the response cache's Redis is unreachable (%s): calls go to the providers until it"
                        " answers", type(error).__name__)
        self._down = True
        self._down_until = time.monotonic() + self._retry_s

    def _came_back(self) -> None:
        if self._down:
            log.warning("the response cache's Redis answers again")
            self._down = False
