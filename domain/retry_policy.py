"""How often to try again after a failed attempt, and how long to wait first (LiteLLM's `retry_policy`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from moneta.domain.errors import GatewayError
from moneta.domain.failure_kinds import failure_kind, is_transient

FIRST_BACKOFF_S = 0.5


@dataclass(frozen=True)
class RetryPolicy:
    num_retries: int = 0
    retries_by_kind: Mapping[str, int] = field(default_factory=dict)
    min_wait_s: float = 0.0  # router_settings.retry_after
    max_wait_s: float = 10.0

    def retries_for(self, error: GatewayError) -> int:
        """Retries allowed after this error: the policy's number for its kind, else `num_retries`
        for a transient error and none for the caller's own mistakes."""
        kind = failure_kind(error)
        if kind in self.retries_by_kind:
            return max(0, self.retries_by_kind[kind])
        return self.num_retries if is_transient(error) else 0

    def wait_s(self, retry_number: int, error: GatewayError, other_deployment: bool) -> float | None:
        """Seconds to wait before retry `retry_number` (1-based); None when the wait the upstream
        asks for is longer than we are willing to hold the caller (fall back instead)."""
        if other_deployment:
            return 0.0
        backoff = FIRST_BACKOFF_S * 2 ** (retry_number - 1)
        wait = max(self.min_wait_s, error.retry_after if error.retry_after is not None else backoff)
        if error.retry_after is not None and wait > self.max_wait_s:
            return None
        return min(wait, self.max_wait_s)
