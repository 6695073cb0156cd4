"""Trying a call until one attempt succeeds: retries within the model group, then its fallbacks.

Each failed attempt is an AttemptFailed event on the request's stream. A retry goes at once
to another healthy deployment when there is one; on the same deployment it waits (the
upstream's Retry-After, else exponential backoff, bounded). Attempts are bounded three
ways: the retry policy, the fallback list (`max_fallbacks`), and MAX_ATTEMPTS overall.
"""
from __future__ import annotations

import asyncio
import time
from typing import Any, Awaitable, Callable, Collection

from moneta.application.config import Deployment
from moneta.application.routing import DeploymentRouter, Route
from moneta.domain.errors import GatewayError, InternalServerError, ModelNotFoundError
from moneta.domain.errors import TimeoutError as UpstreamTimeout
from moneta.domain.failure_kinds import is_transient
from moneta.domain.redaction import redact
from moneta.domain.request_record import RequestRecord

MAX_ATTEMPTS = 25


def as_gateway_error(exc: Exception, deployment: Deployment) -> GatewayError:
    if isinstance(exc, GatewayError):
        return exc
    return InternalServerError(
        f"{type(exc).__name__} from {deployment.provider}: {exc}",
        provider=deployment.provider,
        model=deployment.provider_model,
    )


async def first_route(router: DeploymentRouter, model_group: str, body: dict[str, Any],
                      barred: Collection[str] = ()) -> Route | GatewayError:
    """The first attempt's route, or why the group cannot serve when its fallbacks might;
    raises when nothing could serve (an unknown group, or no fallback for the error). No
    deployment of a provider in `barred` is chosen (see `DeploymentRouter.route`)."""
    try:
        return await router.route(model_group, body, barred=barred)
    except GatewayError as error:
        if isinstance(error, ModelNotFoundError) or not router.settings.fallbacks_for(model_group, error):
            raise
        return error


def route_decision(first: Route | GatewayError) -> dict[str, Any]:
    if isinstance(first, GatewayError):
        return {"route_error": first.message}
    return {"deployment": first.deployment.id, "reason": first.reason}


class Attempts:
    """One request's attempts, across its model group and the group's fallbacks."""

    def __init__(
        self,
        record: RequestRecord,
        router: DeploymentRouter,
        body: dict[str, Any],
        invoke: Callable[[Deployment], Awaitable[Any]],
        *,
        stream: bool,
        secrets: tuple[str, ...],
        precheck: Callable[[Deployment], None],
        barred: Collection[str] = (),
    ) -> None:
        """`precheck` vets each deployment of a fallback group before it is tried (the primary
        group was vetted at admission); no deployment of a provider in `barred` is tried."""
        self.record = record
        self.router = router
        self.body = body
        self.invoke = invoke
        self.stream = stream
        self.secrets = secrets
        self.precheck = precheck
        self.barred = barred
        self.count = 0

    async def run(self, model_group: str, first: Route | GatewayError) -> tuple[Any, Deployment, float]:
        """Returns (result, deployment, latency_ms) of the first attempt that succeeds; else
        raises the primary group's error."""
        try:
            if isinstance(first, GatewayError):
                raise first
            return await self._in_group(model_group, first)
        except GatewayError as error:
            primary = error
        for group in self.router.settings.fallbacks_for(model_group, primary):
            if self.count >= MAX_ATTEMPTS:
                break
            try:
                for deployment in self.router.group(group):
                    self.precheck(deployment)
                return await self._in_group(group, await self.router.route(group, self.body, barred=self.barred))
            except GatewayError:
                continue
        raise primary

    async def _in_group(self, model_group: str, route: Route) -> tuple[Any, Deployment, float]:
        tried: set[str] = set()
        retries = 0
        while True:
            try:
                return await self._once(route)
            except GatewayError as error:
                tried.add(route.deployment.id)
                retries += 1
                route = await self._next(model_group, tried, retries, error)

    async def _next(self, model_group: str, tried: set[str], retry: int, error: GatewayError) -> Route:
        """The route for retry number `retry`, after waiting if it goes back to a tried
        deployment; re-raises `error` when the policy allows no more."""
        if self.count >= MAX_ATTEMPTS:
            raise error
        try:
            candidate = await self.router.route(model_group, self.body, exclude=tried, barred=self.barred)
        except GatewayError:
            raise error from None
        elsewhere = candidate.deployment.id not in tried
        if retry > self.router.settings.retry.retries_for(error) and not (elsewhere and is_transient(error)):
            raise error
        wait = self.router.settings.retry.wait_s(retry, error, other_deployment=elsewhere)
        if wait is None:
            raise error
        if wait == 0:
            return candidate
        await asyncio.sleep(wait)
        try:
            return await self.router.route(model_group, self.body, exclude=tried, barred=self.barred)
        except GatewayError:
            raise error from None

    async def _once(self, route: Route) -> tuple[Any, Deployment, float]:
        deployment = route.deployment
        self.count += 1
        started = time.perf_counter()
        try:
            with self.router.attempting(route):
                async with asyncio.timeout(self.router.settings.timeout_for(deployment, self.stream)):
                    result = await self.invoke(deployment)
        except Exception as exc:  # every failure is recorded, then mapped or re-raised
            error = _timeout_error(deployment) if isinstance(exc, TimeoutError) else as_gateway_error(exc, deployment)
            await self._failed(deployment, error, (time.perf_counter() - started) * 1000)
            if error is exc:
                raise
            raise error from exc
        latency_ms = (time.perf_counter() - started) * 1000
        await self.router.on_success(deployment, latency_ms)
        return result, deployment, latency_ms

    async def _failed(self, deployment: Deployment, error: GatewayError, latency_ms: float) -> None:
        self.record.record_attempt_failure(
            deployment_id=deployment.id,
            provider=deployment.provider,
            provider_model=deployment.provider_model,
            status_code=error.status_code,
            error_type=error.error_type,
            reason=redact(error.message, self.secrets)[:500],
            latency_ms=round(latency_ms, 3),
        )
        await self.router.on_failure(deployment, error)


def _timeout_error(deployment: Deployment) -> GatewayError:
    return UpstreamTimeout(f"{deployment.label} did not answer within the deployment's timeout",
                           provider=deployment.provider, model=deployment.provider_model)
