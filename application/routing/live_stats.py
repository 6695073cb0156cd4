"""This process's running view of each deployment, for the strategies that need one: calls in
flight (least-busy), recent latency (latency-based), requests and tokens this minute (usage-based)."""
from __future__ import annotations

from collections import defaultdict, deque
from typing import Callable

LATENCY_SAMPLES = 20


class LiveStats:
    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._in_flight: dict[str, int] = defaultdict(int)
        self._latencies: dict[str, deque[float]] = defaultdict(lambda: deque(maxlen=LATENCY_SAMPLES))
        self._minute: dict[str, tuple[int, int, int]] = {}  # id -> (minute, requests, tokens)

    def started(self, deployment_id: str, tokens: int) -> None:
        self._in_flight[deployment_id] += 1
        minute = int(self._clock() // 60)
        seen, requests, used = self._minute.get(deployment_id, (minute, 0, 0))
        if seen != minute:
            requests, used = 0, 0
        self._minute[deployment_id] = (minute, requests + 1, used + tokens)

    def finished(self, deployment_id: str) -> None:
        self._in_flight[deployment_id] -= 1

    def answered(self, deployment_id: str, latency_ms: float) -> None:
        self._latencies[deployment_id].append(latency_ms)

    def in_flight(self, deployment_id: str) -> int:
        return self._in_flight.get(deployment_id, 0)

    def average_latency(self, deployment_id: str) -> float | None:
        samples = self._latencies.get(deployment_id)
        return sum(samples) / len(samples) if samples else None

    def usage_this_minute(self, deployment_id: str) -> tuple[int, int]:
        """(requests, tokens) started in the current minute."""
        minute, requests, tokens = self._minute.get(deployment_id, (0, 0, 0))
        return (requests, tokens) if minute == int(self._clock() // 60) else (0, 0)
