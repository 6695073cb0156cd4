"""This minute's requests and tokens per deployment, in this process only (the default)."""
from __future__ import annotations

import threading
import time
from typing import Callable, Sequence

from moneta.domain.routing_strategies import fits_limits


class InProcessUsageMeter:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._counts: dict[str, tuple[int, int, int]] = {}  # id -> (minute, requests, tokens)

    def seen(self, deployment_ids: Sequence[str]) -> dict[str, tuple[int, int]]:
        minute = self._minute()
        with self._lock:
            return {d: self._in(minute, d) for d in deployment_ids}

    async def take(self, deployment_id: str, tokens: int, rpm: int | None, tpm: int | None,
                   group: Sequence[str]) -> bool:
        return self.take_now(deployment_id, tokens, rpm, tpm)

    def take_now(self, deployment_id: str, tokens: int, rpm: int | None, tpm: int | None) -> bool:
        minute = self._minute()
        with self._lock:
            requests, used = self._in(minute, deployment_id)
            if not fits_limits(requests, used, tokens, rpm, tpm):
                return False
            self._counts[deployment_id] = (minute, requests + 1, used + tokens)
            return True

    def _in(self, minute: int, deployment_id: str) -> tuple[int, int]:
        seen, requests, tokens = self._counts.get(deployment_id, (minute, 0, 0))
        return (requests, tokens) if seen == minute else (0, 0)

    def _minute(self) -> int:
        return int(self._clock() // 60)
