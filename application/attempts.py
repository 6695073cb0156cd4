"""Trying a call on the planned deployments, one attempt after another, each in the ledger."""
from __future__ import annotations

import time
from typing import Any, Awaitable, Callable, Sequence, TypeVar

from application.config import Deployment
from application.ports import Router
from domain.errors import GatewayError, InternalServerError
from domain.redaction import redact
from domain.request_record import RequestRecord

T = TypeVar("T")

RETRYABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})


def as_gateway_error(exc: Exception, deployment: Deployment) -> GatewayError:
    if isinstance(exc, GatewayError):
        return exc
    return InternalServerError(
        f"{type(exc).__name__} from {deployment.provider}: {exc}",
        provider=deployment.provider,
        model=deployment.provider_model,
    )


def is_retryable(error: GatewayError) -> bool:
    return error.status_code in RETRYABLE_STATUSES


async def attempt_in_turn(
    record: RequestRecord,
    plan: Sequence[Deployment],
    max_attempts: int,
    router: Router,
    secrets: tuple[str, ...],
    invoke: Callable[[Deployment], Awaitable[T]],
) -> tuple[T, Deployment, float]:
    """Returns (result, deployment, latency_ms) of the first attempt that succeeds.

    Each failed attempt becomes an AttemptFailed event on the request's stream. A
    non-retryable error (a 4xx other than 408/409/429) ends the loop at once.
    """
    error: GatewayError | None = None
    for attempt in range(max_attempts):
        deployment = plan[attempt % len(plan)]
        started = time.perf_counter()
        try:
            result = await invoke(deployment)
        except Exception as exc:  # every failure is recorded, then mapped or re-raised
            latency_ms = (time.perf_counter() - started) * 1000
            error = as_gateway_error(exc, deployment)
            router.on_failure(deployment, error)
            record.record_attempt_failure(
                deployment_id=deployment.id,
                provider=deployment.provider,
                provider_model=deployment.provider_model,
                status_code=error.status_code,
                error_type=error.error_type,
                reason=redact(error.message, secrets)[:500],
                latency_ms=round(latency_ms, 3),
            )
            if not is_retryable(error):
                break
            continue
        latency_ms = (time.perf_counter() - started) * 1000
        router.on_success(deployment, latency_ms)
        return result, deployment, latency_ms
    assert error is not None
    raise error


def plan_attempts(plan: Sequence[Any], num_retries: int) -> int:
    """At least one attempt per planned deployment, and no more than 1 + num_retries overall
    unless there are more deployments than that (each gets its one try)."""
    return max(len(plan), 1 + num_retries) if num_retries else len(plan)
