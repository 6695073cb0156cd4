"""Writes a deployment's changes of health (cooldown, recovery) to its stream in the ledger.

The cooldown store already decided that this caller, and no other worker, makes the change;
the stream is read afresh before each change because another worker may have appended since.
"""
from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from datetime import datetime, timezone
from typing import Callable

from moneta.application.config import Deployment
from moneta.application.ports import AggregateReader, Ledger
from moneta.domain.deployment_health import DeploymentHealth, health_id
from moneta.domain.errors import GatewayError

log = logging.getLogger("moneta.router")
_TRIES = 3  # a version conflict means another worker appended meanwhile: read again


class HealthJournal:
    def __init__(self, reader: AggregateReader, ledger: Ledger) -> None:
        self._reader = reader
        self._ledger = ledger
        self._locks: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    async def cooled_down(self, deployment: Deployment, until: float, error: GatewayError, reason: str) -> None:
        at = datetime.fromtimestamp(until, timezone.utc)

        def cool(health: DeploymentHealth) -> bool:
            health.cool_down(until=at, status_code=error.status_code, error_type=error.error_type, reason=reason)
            return True

        await self._change(deployment, cool)

    async def cooled_down_manually(self, deployment: Deployment, until: float, reason: str, requested_by: str) -> None:
        at = datetime.fromtimestamp(until, timezone.utc)

        def cool(health: DeploymentHealth) -> bool:
            health.cool_down(until=at, status_code=0, error_type="manual", reason=reason, requested_by=requested_by)
            return True

        await self._change(deployment, cool)

    async def recovered(self, deployment: Deployment) -> None:
        await self._change(deployment, DeploymentHealth.recover)

    async def _change(self, deployment: Deployment, change: Callable[[DeploymentHealth], bool]) -> None:
        async with self._locks[deployment.id]:
            for _ in range(_TRIES):
                try:
                    health = await asyncio.to_thread(self._load, deployment)
                    if not change(health):
                        return
                    await self._ledger.record(health)
                    return
                except Exception as exc:  # a health event must never fail the request that caused it
                    log.warning("deployment %s: health event not recorded (%s)", deployment.id, type(exc).__name__)

    def _load(self, deployment: Deployment) -> DeploymentHealth:
        found = self._reader.get(health_id(deployment.id))
        return found if found is not None else DeploymentHealth.register(deployment.id, deployment.model_name)
