"""The port to the rate-limit counters (`infrastructure.limits_*` implement it)."""
from __future__ import annotations

from typing import Protocol, Sequence

from moneta.domain.rate_limits import Limit, LimitDecision


class LimitStore(Protocol):
    mode: str  # "in_process" | "redis" | "database" | "per_process_fallback" (Redis unreachable, each process on its own)

    async def acquire(self, request_id: str, limits: Sequence[Limit], now: float) -> LimitDecision:
        """All or nothing: when every scope is within its rpm, tpm and max_parallel, counts one
        request and takes one parallel slot in each, else counts nothing. Scopes whose Limit has
        no limits set are skipped; each scope appears at most once."""
        ...

    async def settle(self, request_id: str, limits: Sequence[Limit], tokens: int, now: float) -> None:
        """Adds the call's tokens to each scope's current window and releases its parallel slot."""
        ...

    async def close(self) -> None: ...
