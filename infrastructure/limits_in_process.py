"""Rate-limit counters in this process's memory: the store for a single worker.

The check and the count run with no await between them, so on the event loop an acquire is
atomic without a lock. Per scope it keeps the sliding window's two buckets
(`domain.rate_limits`) and the parallel slots' leases; a minute's sweep drops idle windows and
expired leases, and a scope at its max_parallel drops its expired leases before refusing.
"""
from __future__ import annotations

from typing import Sequence

from moneta.domain.rate_limits import SLOT_LEASE_S, WINDOW_MS, Limit, LimitDecision, Seen, decide, millis, rolled

SWEEP_S = 60.0


class InProcessLimitStore:
    mode = "in_process"

    def __init__(self, lease_s: float = SLOT_LEASE_S) -> None:
        self._lease_s = lease_s
        # scope -> [bucket, previous requests, current requests, previous tokens, current tokens]
        self._windows: dict[str, list[int]] = {}
        self._slots: dict[str, dict[str, float]] = {}  # scope -> request id -> lease expiry
        self._swept_at = 0.0

    async def acquire(self, request_id: str, limits: Sequence[Limit], now: float) -> LimitDecision:
        return self.acquire_now(request_id, limits, now)

    async def settle(self, request_id: str, limits: Sequence[Limit], tokens: int, now: float) -> None:
        self.settle_now(request_id, limits, tokens, now)

    async def close(self) -> None:
        self._windows.clear()
        self._slots.clear()

    def acquire_now(self, request_id: str, limits: Sequence[Limit], now: float) -> LimitDecision:
        if now - self._swept_at >= SWEEP_S:
            self._sweep(now)
        bucket = millis(now) // WINDOW_MS
        limits = [limit for limit in limits if limit.is_set]
        windows = [self._window(limit.scope, bucket) for limit in limits]
        seen = [Seen(w[1], w[2], w[3], w[4], self._held(limit, now)) for limit, w in zip(limits, windows)]
        decision = decide(limits, seen, now)
        if decision.allowed:
            expiry = now + self._lease_s
            for limit, window in zip(limits, windows):
                window[2] += 1
                if limit.max_parallel is not None:
                    self._slots.setdefault(limit.scope, {})[request_id] = expiry
        return decision

    def settle_now(self, request_id: str, limits: Sequence[Limit], tokens: int, now: float) -> None:
        bucket = millis(now) // WINDOW_MS
        for limit in limits:
            if limit.is_set:
                self._window(limit.scope, bucket)[4] += tokens
                leases = self._slots.get(limit.scope)
                if leases:
                    leases.pop(request_id, None)

    def _window(self, scope: str, bucket: int) -> list[int]:
        window = self._windows.get(scope)
        if window is None:
            window = self._windows[scope] = [bucket, 0, 0, 0, 0]
        elif bucket > window[0]:
            window[1], window[2] = rolled(window[0], window[1], window[2], bucket)
            window[3], window[4] = rolled(window[0], window[3], window[4], bucket)
            window[0] = bucket
        return window

    def _held(self, limit: Limit, now: float) -> int:
        if limit.max_parallel is None:
            return 0
        leases = self._slots.get(limit.scope)
        if not leases:
            return 0
        if len(leases) >= limit.max_parallel:  # only expired leases can make room: drop them
            for request_id in [r for r, expiry in leases.items() if expiry <= now]:
                del leases[request_id]
        return len(leases)

    def _sweep(self, now: float) -> None:
        bucket = millis(now) // WINDOW_MS
        self._windows = {scope: w for scope, w in self._windows.items() if w[0] >= bucket - 1}
        slots = {scope: {r: e for r, e in leases.items() if e > now} for scope, leases in self._slots.items()}
        self._slots = {scope: leases for scope, leases in slots.items() if leases}
        self._swept_at = now
