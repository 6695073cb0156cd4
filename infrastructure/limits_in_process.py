"""Rate-limit counters in this process's memory: the store for a single worker.

The check and the count run with no await between them, so on the event loop an acquire is
atomic without a lock. Per scope it keeps the sliding window's two buckets
(`domain.rate_limits`) and the parallel slots' leases; a minute's sweep drops idle windows and
expired leases, and a scope at its max_parallel drops its expired leases before refusing.
"""
from __future__ import annotations

from typing import Sequence

from moneta.domain.rate_limits import SLOT_LEASE_S, WINDOW_MS, Limit, LimitDecision, decide, millis, rolled

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
        windows = self._windows
        kept, seen, counted = [], [], []
        for limit in limits:
            parallel = limit.max_parallel
            if parallel is None and limit.rpm is None and limit.tpm is None:
                continue
            window = windows.get(limit.scope)
            if window is None or bucket > window[0]:
                window = self._window(limit.scope, bucket)
            kept.append(limit)
            counted.append(window)
            seen.append((window[1], window[2], window[3], window[4],
                         0 if parallel is None else self._held(limit.scope, parallel, now)))
        decision = decide(kept, seen, now)
        if decision.allowed:
            expiry = now + self._lease_s
            for limit, window in zip(kept, counted):
                window[2] += 1
                if limit.max_parallel is not None:
                    self._slots.setdefault(limit.scope, {})[request_id] = expiry
        return decision

    def settle_now(self, request_id: str, limits: Sequence[Limit], tokens: int, now: float) -> None:
        bucket = millis(now) // WINDOW_MS
        windows, slots = self._windows, self._slots
        for limit in limits:
            if limit.max_parallel is None and limit.rpm is None and limit.tpm is None:
                continue
            window = windows.get(limit.scope)
            if window is None or bucket > window[0]:
                window = self._window(limit.scope, bucket)
            window[4] += tokens
            leases = slots.get(limit.scope)
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

    def _held(self, scope: str, max_parallel: int, now: float) -> int:
        leases = self._slots.get(scope)
        if not leases:
            return 0
        if len(leases) >= max_parallel:  # only expired leases can make room: drop them
            for request_id in [r for r, expiry in leases.items() if expiry <= now]:
                del leases[request_id]
        return len(leases)

    def _sweep(self, now: float) -> None:
        bucket = millis(now) // WINDOW_MS
        self._windows = {scope: w for scope, w in self._windows.items() if w[0] >= bucket - 1}
        slots = {scope: {r: e for r, e in leases.items() if e > now} for scope, leases in self._slots.items()}
        self._slots = {scope: leases for scope, leases in slots.items() if leases}
        self._swept_at = now
