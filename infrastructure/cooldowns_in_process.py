"""Cooldowns and the failure counters that decide them, in this process only (the default)."""
from __future__ import annotations

import threading
import time
from collections import deque
from typing import Callable

from moneta.application.ports import CooldownState


class InProcessCooldownStore:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._failures: dict[tuple[str, str], deque[float]] = {}
        self._until: dict[str, float] = {}  # kept after it lapses, until the recovery is claimed

    def count_failure(self, deployment_id: str, kind: str, allowed_fails: int, window_s: float,
                      cooldown_s: float) -> float | None:
        now = self._clock()
        with self._lock:
            times = self._failures.setdefault((deployment_id, kind), deque())
            times.append(now)
            while times[0] <= now - window_s:
                times.popleft()
            if len(times) <= allowed_fails or self._until.get(deployment_id, 0.0) > now:
                return None
            times.clear()
            self._until[deployment_id] = now + cooldown_s
            return now + cooldown_s

    def start_cooldown(self, deployment_id: str, cooldown_s: float) -> float:
        until = self._clock() + cooldown_s
        with self._lock:
            self._until[deployment_id] = until
        return until

    def state(self) -> CooldownState:
        now = self._clock()
        with self._lock:
            cooling = {d: until for d, until in self._until.items() if until > now}
            lapsed = frozenset(d for d, until in self._until.items() if until <= now)
        return CooldownState(cooling, lapsed)

    def claim_recovery(self, deployment_id: str) -> bool:
        with self._lock:
            until = self._until.get(deployment_id)
            if until is None or until > self._clock():
                return False
            del self._until[deployment_id]
            return True

    def close(self) -> None:
        """Nothing runs beside an in-process store."""
