"""Readiness: does Redis answer within a second?"""
from __future__ import annotations

import redis.asyncio as redis


class RedisProbe:
    field = "cache"  # LiteLLM's readiness names it so
    label = "redis"

    def __init__(self, url: str) -> None:
        self._client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)

    async def __call__(self) -> bool:
        try:
            return bool(await self._client.ping())
        except (redis.RedisError, OSError):
            return False
