"""Builds the served application from the environment (the CLI sets MONETA_CONFIG for workers)."""
from __future__ import annotations

from typing import Awaitable, Callable

from fastapi import FastAPI

from moneta.api.app import create_app
from moneta.api.read_side import SpendViews
from moneta.application.bootstrap import build, environment, load_gateway_config
from moneta.infrastructure.health_checks import background_health_checks


def app_from_environment() -> FastAPI:
    environ = environment()
    container = build(load_gateway_config(None, environ), environ)
    views = SpendViews(container.location)  # type: ignore[arg-type]
    checks = background_health_checks(container.config, container.gateway)
    redis_url = container.config.redis_url
    return create_app(container, background=[views, *([checks] if checks else [])], views=views.queries,
                      redis_ping=_redis_ping(redis_url) if redis_url else None)


def _redis_ping(url: str) -> Callable[[], Awaitable[bool]]:
    import redis.asyncio as redis

    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)

    async def ping() -> bool:
        try:
            return bool(await client.ping())
        except (redis.RedisError, OSError):
            return False

    return ping
