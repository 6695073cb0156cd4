"""Cooldowns and their failure counters in Redis, shared by every worker and host.

Each decision is one Lua script, so it is atomic across workers: the failure is counted in a
sliding window, and the one caller whose failure crosses the limit starts the cooldown (and
so records the event). The cooldowns are one sorted set (`moneta:router:cooldowns`, score =
end in epoch ms) that a thread of each process re-reads every CACHE_S: routing reads that copy
and never waits for Redis. A cooldown stays in the set after it lapses, until a success claims
its recovery.
"""
from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Callable

import redis

from moneta.application.ports import CooldownState

log = logging.getLogger("moneta.router")

PREFIX = "moneta:router:"
COOLDOWNS = PREFIX + "cooldowns"
CACHE_S = 0.25
_RETRY_AFTER_ERROR_S = 5.0

_COUNT_FAILURE = """
local now = tonumber(ARGV[1])
redis.call('ZADD', KEYS[1], now, ARGV[6])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
if redis.call('ZCARD', KEYS[1]) <= tonumber(ARGV[3]) then return 0 end
local running = redis.call('ZSCORE', KEYS[2], ARGV[5])
if running and tonumber(running) > now then return 0 end
redis.call('DEL', KEYS[1])
local ends = now + tonumber(ARGV[4])
redis.call('ZADD', KEYS[2], ends, ARGV[5])
return ends
"""

_CLAIM_RECOVERY = """
local ends = redis.call('ZSCORE', KEYS[1], ARGV[1])
if ends and tonumber(ends) <= tonumber(ARGV[2]) then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return 1
end
return 0
"""


class RedisCooldownStore:
    def __init__(self, url: str, *, cache_s: float = CACHE_S, clock: Callable[[], float] = time.time) -> None:
        self._redis = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self._count_failure = self._redis.register_script(_COUNT_FAILURE)
        self._claim_recovery = self._redis.register_script(_CLAIM_RECOVERY)
        self._cache_s = cache_s
        self._clock = clock
        self._lock = threading.Lock()
        self._ends: dict[str, float] = {}
        self._writes = 0  # local changes: a copy read before one of them is out of date
        self._closed = threading.Event()
        self._refresh()  # a new process routes on the shared view from its first request
        threading.Thread(target=self._keep_fresh, name="moneta-cooldowns", daemon=True).start()

    def count_failure(self, deployment_id: str, kind: str, allowed_fails: int, window_s: float,
                      cooldown_s: float) -> float | None:
        now_ms = int(self._clock() * 1000)
        try:
            ends_ms = self._count_failure(
                keys=[f"{PREFIX}fails:{deployment_id}:{kind}", COOLDOWNS],
                args=[now_ms, int(window_s * 1000), allowed_fails, int(cooldown_s * 1000), deployment_id,
                      f"{now_ms}:{uuid.uuid4().hex[:8]}"],
            )
        except redis.RedisError as error:
            log.warning("redis: failure of %s not counted (%s)", deployment_id, type(error).__name__)
            return None
        if not ends_ms:
            return None
        with self._lock:
            self._ends[deployment_id] = int(ends_ms) / 1000
            self._writes += 1
        return int(ends_ms) / 1000

    def start_cooldown(self, deployment_id: str, cooldown_s: float) -> float:
        """Raises redis.RedisError when Redis cannot be reached: an admin's request must not
        seem to succeed when no worker will see it."""
        ends_ms = int((self._clock() + cooldown_s) * 1000)
        self._redis.zadd(COOLDOWNS, {deployment_id: ends_ms})
        with self._lock:
            self._ends[deployment_id] = ends_ms / 1000
            self._writes += 1
        return ends_ms / 1000

    def state(self) -> CooldownState:
        now = self._clock()
        with self._lock:
            cooling = {d: ends for d, ends in self._ends.items() if ends > now}
            lapsed = frozenset(d for d, ends in self._ends.items() if ends <= now)
        return CooldownState(cooling, lapsed)

    def claim_recovery(self, deployment_id: str) -> bool:
        try:
            claimed = self._claim_recovery(keys=[COOLDOWNS], args=[deployment_id, int(self._clock() * 1000)])
        except redis.RedisError as error:
            log.warning("redis: recovery of %s not claimed (%s)", deployment_id, type(error).__name__)
            return False
        if not claimed:
            return False  # still cooling, or claimed elsewhere: the refresher brings the set
        with self._lock:
            self._ends.pop(deployment_id, None)
            self._writes += 1
        return True

    def close(self) -> None:
        self._closed.set()

    def _keep_fresh(self) -> None:
        pause = self._cache_s
        while not self._closed.wait(pause):
            # Keep routing on what we last knew while Redis fails, and try again after a while.
            pause = self._cache_s if self._refresh() else _RETRY_AFTER_ERROR_S

    def _refresh(self) -> bool:
        with self._lock:
            writes = self._writes
        try:
            rows = self._redis.zrange(COOLDOWNS, 0, -1, withscores=True)
        except redis.RedisError as error:
            log.warning("redis: cooldowns not refreshed (%s)", type(error).__name__)
            return False
        with self._lock:
            if writes == self._writes:
                self._ends = {member.decode(): score / 1000 for member, score in rows}
        return True
