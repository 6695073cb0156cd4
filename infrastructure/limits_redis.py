"""Rate-limit counters in Redis, shared by every worker and host.

Per scope, a hash `moneta:limits:w:<scope>` holds the sliding window's two buckets (fields b,
pr, cr, pt, ct: the current bucket's number, previous and current requests, previous and current
tokens; it expires WINDOW_TTL_S after its last write, by which time both buckets would read 0), and
a sorted set `moneta:limits:s:<scope>` holds the parallel slots (request id, scored by its lease's
expiry in epoch ms; expired members are pruned by the script, and the set expires with its last
lease). One Lua script checks and counts all the scopes of a request in one round trip (EVALSHA,
loaded once), so the check and the count are one atomic step for every worker. Its arithmetic is
`domain.rate_limits` restated; the time is the `now` the caller passes, in integer milliseconds.

When Redis fails or does not answer within `timeout_s`, the store counts in this process only
(`mode` "per_process_fallback", logged once), and a background task pings Redis every `retry_s`:
requests never wait on a Redis known to be down. Once it answers, counting is shared again; a
request admitted meanwhile is settled in the process that admitted it.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Sequence

import redis.asyncio as redis
from redis.backoff import NoBackoff
from redis.asyncio.retry import Retry

from moneta.domain.rate_limits import SLOT_LEASE_S, Limit, LimitDecision, Seen, decide, millis
from moneta.infrastructure.limits_in_process import InProcessLimitStore

log = logging.getLogger("moneta.limits")

PREFIX = "moneta:limits:"
WINDOW_TTL_S = 180  # two buckets and a margin: an older window counts nothing
TIMEOUT_S = 0.25
RETRY_S = 3.0
MAX_CONNECTIONS = 32

# KEYS: per scope, its window hash then its slots set. ARGV: now (ms), lease (ms), request id,
# window TTL (s), then per scope rpm, tpm, max_parallel (-1: not limited).
_ACQUIRE = """
local now, lease, id, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], ARGV[4]
local W = 60000
local bucket = math.floor(now / W)
local share = W - now % W
local seen, fits = {}, true
for i = 1, #KEYS / 2 do
  local rpm, tpm, par = tonumber(ARGV[3 * i + 2]), tonumber(ARGV[3 * i + 3]), tonumber(ARGV[3 * i + 4])
  local w = redis.call('HMGET', KEYS[2 * i - 1], 'b', 'pr', 'cr', 'pt', 'ct')
  local b = tonumber(w[1]) or bucket
  local pr, cr, pt, ct = tonumber(w[2]) or 0, tonumber(w[3]) or 0, tonumber(w[4]) or 0, tonumber(w[5]) or 0
  if bucket == b + 1 then
    pr, cr, pt, ct = cr, 0, ct, 0
  elseif bucket > b + 1 then
    pr, cr, pt, ct = 0, 0, 0, 0
  end
  local held = 0
  if par >= 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[2 * i], '-inf', now)
    held = redis.call('ZCARD', KEYS[2 * i])
  end
  local requests = cr + math.floor((pr * share + W - 1) / W)
  local tokens = ct + math.floor((pt * share + W - 1) / W)
  if (rpm >= 0 and requests + 1 > rpm) or (tpm >= 0 and tokens >= tpm) or (par >= 0 and held >= par) then
    fits = false
  end
  seen[i] = {math.max(b, bucket), pr, cr, pt, ct, held, par}
end
if fits then
  for i, s in ipairs(seen) do
    redis.call('HSET', KEYS[2 * i - 1], 'b', s[1], 'pr', s[2], 'cr', s[3] + 1, 'pt', s[4], 'ct', s[5])
    redis.call('EXPIRE', KEYS[2 * i - 1], ttl)
    if s[7] >= 0 then
      redis.call('ZADD', KEYS[2 * i], now + lease, id)
      redis.call('PEXPIRE', KEYS[2 * i], lease)
    end
  end
end
local reply = {fits and 1 or 0}
for _, s in ipairs(seen) do
  for j = 2, 6 do reply[#reply + 1] = s[j] end
end
return reply
"""

# KEYS: as for _ACQUIRE. ARGV: now (ms), tokens, request id, window TTL (s).
_SETTLE = """
local now, tokens, id, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], ARGV[4]
local bucket = math.floor(now / 60000)
for i = 1, #KEYS / 2 do
  local w = redis.call('HMGET', KEYS[2 * i - 1], 'b', 'cr', 'ct')
  local b = tonumber(w[1])
  if b == nil or bucket > b + 1 then
    redis.call('HSET', KEYS[2 * i - 1], 'b', bucket, 'pr', 0, 'cr', 0, 'pt', 0, 'ct', tokens)
  elseif bucket == b + 1 then
    redis.call('HSET', KEYS[2 * i - 1], 'b', bucket, 'pr', w[2] or 0, 'cr', 0, 'pt', w[3] or 0, 'ct', tokens)
  else
    redis.call('HINCRBY', KEYS[2 * i - 1], 'ct', tokens)
  end
  redis.call('EXPIRE', KEYS[2 * i - 1], ttl)
  redis.call('ZREM', KEYS[2 * i], id)
end
"""


class RedisLimitStore:
    def __init__(self, url: str, *, lease_s: float = SLOT_LEASE_S, timeout_s: float = TIMEOUT_S,
                 retry_s: float = RETRY_S) -> None:
        # A burst of requests queues for a connection (an unbounded pool would open one per request,
        # and the default one fails past 100); waiting longer than the timeout means Redis is too slow.
        pool = redis.BlockingConnectionPool.from_url(
            url, max_connections=MAX_CONNECTIONS, timeout=timeout_s * 4, socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s, retry=Retry(NoBackoff(), 0))
        self._redis = redis.Redis.from_pool(pool)
        self._acquire = self._redis.register_script(_ACQUIRE)
        self._settle = self._redis.register_script(_SETTLE)
        self._lease_ms = int(lease_s * 1000)
        self._retry_s = retry_s
        self._own = InProcessLimitStore(lease_s)
        self._admitted_here: set[str] = set()  # admitted by the fallback: settled by it too
        self._probe: asyncio.Task | None = None  # set while Redis is down

    @property
    def mode(self) -> str:
        return "redis" if self._probe is None else "per_process_fallback"

    def healthy(self) -> bool:
        """False while the limits hold in each process on its own (Redis unreachable)."""
        return self._probe is None

    async def acquire(self, request_id: str, limits: Sequence[Limit], now: float) -> LimitDecision:
        if self._probe is None:
            try:
                return await self._acquire_shared(request_id, [limit for limit in limits if limit.is_set], now)
            except (redis.RedisError, OSError) as error:
                self._fall_back(error)
        decision = self._own.acquire_now(request_id, limits, now)
        if decision.allowed:
            self._admitted_here.add(request_id)
        return decision

    async def settle(self, request_id: str, limits: Sequence[Limit], tokens: int, now: float) -> None:
        if request_id in self._admitted_here:
            self._admitted_here.discard(request_id)
            self._own.settle_now(request_id, limits, tokens, now)
        elif self._probe is None:
            try:
                await self._settle_shared(request_id, [limit for limit in limits if limit.is_set], tokens, now)
            except (redis.RedisError, OSError) as error:
                self._fall_back(error)  # its slot is held in Redis until its lease expires

    async def close(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
        await self._redis.aclose()

    async def _acquire_shared(self, request_id: str, limits: list[Limit], now: float) -> LimitDecision:
        if not limits:
            return decide(limits, [], now)
        args: list[int | str] = [millis(now), self._lease_ms, request_id, WINDOW_TTL_S]
        for limit in limits:
            args += [_or_none(limit.rpm), _or_none(limit.tpm), _or_none(limit.max_parallel)]
        reply = await self._acquire(keys=_keys(limits), args=args)
        seen = [Seen(*(int(n) for n in reply[1 + 5 * i: 6 + 5 * i])) for i in range(len(limits))]
        return decide(limits, seen, now)  # the same arithmetic as the script: the same verdict

    async def _settle_shared(self, request_id: str, limits: list[Limit], tokens: int, now: float) -> None:
        if limits:
            await self._settle(keys=_keys(limits), args=[millis(now), tokens, request_id, WINDOW_TTL_S])

    def _fall_back(self, error: BaseException) -> None:
        if self._probe is None:
            log.warning("redis unreachable (%s: %s): rate limits hold in each process on its own until it answers",
                        type(error).__name__, error)
            self._probe = asyncio.get_running_loop().create_task(self._wait_for_redis())

    async def _wait_for_redis(self) -> None:
        while True:
            await asyncio.sleep(self._retry_s)
            try:
                await self._redis.ping()
            except (redis.RedisError, OSError):
                continue
            log.warning("redis answers again: rate limits are shared again")
            self._probe = None
            return


def _keys(limits: list[Limit]) -> list[str]:
    return [key for limit in limits for key in (f"{PREFIX}w:{limit.scope}", f"{PREFIX}s:{limit.scope}")]


def _or_none(value: int | None) -> int:
    return -1 if value is None else value
