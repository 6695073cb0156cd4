"""Background health checks feed the router like real calls (APScheduler runs them on a timer)."""
from __future__ import annotations

import asyncio
from typing import Any

from moneta.bootstrap import build
from moneta.infrastructure.config_loader import parse_config
from moneta.infrastructure.health_checks import background_health_checks

MODELS = [
    {"model_name": "g", "model_info": {"id": "dead"},
     "litellm_params": {"model": "mock/dead", "mock_failure_rate": 1, "mock_failure_status": 503}},
    {"model_name": "g", "model_info": {"id": "alive"}, "litellm_params": {"model": "mock/alive"}},
    {"model_name": "e", "model_info": {"id": "vectors", "mode": "embedding"},
     "litellm_params": {"model": "mock/vectors"}},
]


def _container(sqlite_url: str, general: dict[str, Any]):
    config = parse_config({"model_list": MODELS, "router_settings": {"allowed_fails": 0},
                           "general_settings": {"database_url": sqlite_url, **general}}, {})
    return build(config, {}, migrate=True)


async def test_a_dead_deployment_is_cooled_down_by_the_checks_before_any_caller_meets_it(sqlite_url):
    container = _container(sqlite_url, {"background_health_checks": True, "health_check_interval": 0.05})
    try:
        checks = background_health_checks(container.config, container.gateway.router, container.providers)
        assert checks is not None
        await checks.run_once()
        router = container.gateway.router
        assert router.cooldowns.state().cooling.keys() == {"dead"}
        assert router.stats.average_latency("alive") is not None
        assert router.stats.average_latency("vectors") is not None
    finally:
        container.close()


async def test_the_scheduler_runs_the_checks_on_its_interval(sqlite_url):
    container = _container(sqlite_url, {"background_health_checks": True, "health_check_interval": 0.05})
    try:
        checks = background_health_checks(container.config, container.gateway.router, container.providers)
        checks.start()
        try:
            for _ in range(100):
                if container.gateway.router.cooldowns.state().cooling:
                    break
                await asyncio.sleep(0.05)
        finally:
            await checks.stop()
        assert container.gateway.router.cooldowns.state().cooling.keys() == {"dead"}
    finally:
        container.close()


def test_no_checks_unless_asked_for(sqlite_url):
    container = _container(sqlite_url, {})
    try:
        assert background_health_checks(container.config, container.gateway.router, container.providers) is None
    finally:
        container.close()
