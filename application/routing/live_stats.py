"""This process's running view of each deployment, for the strategies that need one: calls in
flight (least-busy) and recent latency (latency-based). This minute's usage is the UsageMeter's.

Both stay per process even with Redis: sharing calls in flight would cost a second round trip
per request (the decrement when the call ends) and would leak the counts of a worker that dies
mid-call; what least-busy needs is this worker's own load, which it knows exactly.
"""
from __future__ import annotations

from collections import defaultdict, deque

LATENCY_SAMPLES = 20


class LiveStats:
    def __init__(self) -> None:
        self._in_flight: dict[str, int] = defaultdict(int)
        self._latencies: dict[str, deque[float]] = defaultdict(lambda: deque(maxlen=LATENCY_SAMPLES))

    def started(self, deployment_id: str) -> None:
        self._in_flight[deployment_id] += 1

    def finished(self, deployment_id: str) -> None:
        self._in_flight[deployment_id] -= 1

    def answered(self, deployment_id: str, latency_ms: float) -> None:
        self._latencies[deployment_id].append(latency_ms)

    def in_flight(self, deployment_id: str) -> int:
        return self._in_flight.get(deployment_id, 0)

    def average_latency(self, deployment_id: str) -> float | None:
        samples = self._latencies.get(deployment_id)
        return sum(samples) / len(samples) if samples else None
