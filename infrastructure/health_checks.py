"""Background health checks (`general_settings.background_health_checks: true`), as in LiteLLM:
every `health_check_interval` seconds (default 300) each deployment gets a one-token request,
and its outcome counts for the router like a real call's, so a dead deployment cools down
before a caller meets it and a recovered one returns. Checks are not requests of a caller:
they reach no ledger stream of their own, only the deployment's when its health changes.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from moneta.application.attempts import as_gateway_error
from moneta.application.config import Deployment, GatewayConfig
from moneta.application.ports import ProviderRegistry
from moneta.application.routing import DeploymentRouter

log = logging.getLogger("moneta.health_checks")
DEFAULT_INTERVAL_S = 300.0
STOP_WAIT_S = 10.0
_PING = [{"role": "user", "content": "ping"}]


def background_health_checks(config: GatewayConfig, router: DeploymentRouter,
                             providers: ProviderRegistry) -> "HealthChecks | None":
    """The checks the config asks for, or None."""
    settings = config.general_settings
    if not settings.get("background_health_checks"):
        return None
    interval_s = float(settings.get("health_check_interval") or DEFAULT_INTERVAL_S)
    # A pattern entry (`openai/*`) names no model to ask.
    deployments = tuple(d for d in config.deployments if not d.is_pattern)
    return HealthChecks(deployments, router, providers, interval_s)


class HealthChecks:
    """Started and stopped by the app's lifespan, inside its event loop."""

    def __init__(self, deployments: tuple[Deployment, ...], router: DeploymentRouter, providers: ProviderRegistry,
                 interval_s: float) -> None:
        self.deployments = deployments
        self.router = router
        self.providers = providers
        self.interval_s = interval_s
        self._scheduler: AsyncIOScheduler | None = None
        self._running: set[asyncio.Task] = set()

    def start(self) -> None:
        self._scheduler = AsyncIOScheduler()
        self._scheduler.add_job(self.run_once, "interval", seconds=self.interval_s, max_instances=1,
                                coalesce=True, id="moneta-health-checks")
        self._scheduler.start()

    async def stop(self) -> None:
        """Stops scheduling, then waits for a round in flight (it reads the ledger on threads)."""
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
        if self._running:
            await asyncio.wait(self._running, timeout=STOP_WAIT_S)

    async def run_once(self) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._running.add(task)
        try:
            await asyncio.gather(*(self._check(d) for d in self.deployments))
        finally:
            self._running.discard(task)

    async def _check(self, deployment: Deployment) -> None:
        router = self.router
        started = time.perf_counter()
        try:
            timeout = router.settings.timeout_for(deployment, stream=False)
            async with asyncio.timeout(timeout):
                await self._ping(deployment)
        except Exception as exc:  # the outcome of a check is data, never a crash of the scheduler
            error = as_gateway_error(exc, deployment)
            log.warning("health check of %s failed: %s", deployment.id, error.error_type)
            await router.on_failure(deployment, error)
            return
        await router.on_success(deployment, (time.perf_counter() - started) * 1000)

    async def _ping(self, deployment: Deployment) -> Any:
        provider = self.providers.for_deployment(deployment)
        body = {"model": deployment.provider_model}
        if deployment.model_info.get("mode") == "embedding":
            return await provider.embedding(deployment, {**body, "input": "ping"})
        return await provider.chat(deployment, {**body, "messages": _PING, "max_tokens": 1})
