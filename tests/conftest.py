from __future__ import annotations

from typing import Iterator

import pytest

from tests import services
from tests.ledger_world import World


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database (dropped afterwards)."""
    url = services.create_database()
    try:
        yield url
    finally:
        services.drop_database(url)


@pytest.fixture
def redis_url() -> str:
    return services.redis_url()


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.db'}"


@pytest.fixture(params=["sqlite", "postgres"])
def ledger_url(request) -> Iterator[str]:
    """Runs a test once on the embedded SQLite ledger and once on PostgreSQL."""
    if request.param == "sqlite":
        yield request.getfixturevalue("sqlite_url")
    else:
        yield request.getfixturevalue("postgres_url")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def world(request) -> Iterator[World]:
    url = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "postgres_url")
    world = World(url)
    try:
        yield world
    finally:
        world.close()
