"""Real Postgres and Redis for the tests: a fresh database per test session.

Outside CI a missing server skips its tests with the reason shown; under CI=true it fails
them, so a CI run can never pass without having exercised Postgres and Redis.
"""
from __future__ import annotations

import os
import uuid

import pytest

ADMIN_URL = os.environ.get("MONETA_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("MONETA_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def unavailable(what: str, error: Exception) -> None:
    message = f"{what} is not reachable ({type(error).__name__}: {error})"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message}; CI=true requires it", pytrace=False)
    pytest.skip(message)


def create_database() -> str:
    """Creates an empty database and returns its URL."""
    import psycopg

    name = f"moneta_test_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as error:
        unavailable("PostgreSQL", error)
    return ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"


def drop_database(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def redis_url() -> str:
    """A reachable, emptied Redis database for this test."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.flushdb()
    except redis.RedisError as error:
        unavailable("Redis", error)
    finally:
        client.close()
    return REDIS_URL
