"""Rate-limit counters in Redis, shared by every worker and host.

Per scope, a hash `moneta:limits:w:<scope>` holds the sliding window's two buckets (fields b,
pr, cr, pt, ct: the current bucket's number, previous and current requests, previous and current
tokens; it expires WINDOW_TTL_S after its last write, by which time both buckets would read 0), and
a sorted set `moneta:limits:s:<scope>` holds the parallel slots (request id, scored by its lease's
expiry in epoch ms; expired members are pruned by the script, and the set expires with its last
lease). One Lua script checks and counts all the scopes of a request in one round trip (EVALSHA,
loaded once), so the check and the count are one atomic step for every worker. Its arithmetic is
`domain.rate_limits` restated; the time is the `now` the caller passes, in integer milliseconds.
The scripts run on one pipelined connection (`redis_scripts`). Settlements go in batches
(`settlement_batches`): one script call for those of every call that ended while the previous one
was on its way; what a crash can lose of them is bounded there, and is released by the slots' leases.

When Redis fails or does not answer within `timeout_s`, the store counts in this process only
(`mode` "per_process_fallback", logged once), and a background task pings Redis every `retry_s`:
requests never wait on a Redis known to be down. Once it answers, counting is shared again; a
request admitted meanwhile is settled in the process that admitted it.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Sequence

import redis

from moneta.domain.rate_limits import SLOT_LEASE_S, Limit, LimitDecision, decide, millis
from moneta.infrastructure.limits_in_process import InProcessLimitStore
from moneta.infrastructure.redis_scripts import RedisScripts
from moneta.infrastructure.settlement_batches import SettlementBatches

log = logging.getLogger("moneta.limits")

PREFIX = "moneta:limits:"
WINDOW_TTL_S = 180  # two buckets and a margin: an older window counts nothing
TIMEOUT_S = 0.25
RETRY_S = 3.0

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

# KEYS: per settlement, per scope its window hash then its slots set. ARGV: window TTL (s), then per
# settlement: its number of scopes, now (ms), tokens, request id.
_SETTLE = """
local ttl = ARGV[1]
local k, a = 0, 2
while a <= #ARGV do
  local scopes, tokens, id = tonumber(ARGV[a]), tonumber(ARGV[a + 2]), ARGV[a + 3]
  local bucket = math.floor(tonumber(ARGV[a + 1]) / 60000)
  for i = 1, scopes do
    local window, slots = KEYS[k + 2 * i - 1], KEYS[k + 2 * i]
    local w = redis.call('HMGET', window, 'b', 'cr', 'ct')
    local b = tonumber(w[1])
    if b == nil or bucket > b + 1 then
      redis.call('HSET', window, 'b', bucket, 'pr', 0, 'cr', 0, 'pt', 0, 'ct', tokens)
    elseif bucket == b + 1 then
      redis.call('HSET', window, 'b', bucket, 'pr', w[2] or 0, 'cr', 0, 'pt', w[3] or 0, 'ct', tokens)
    else
      redis.call('HINCRBY', window, 'ct', tokens)
    end
    redis.call('EXPIRE', window, ttl)
    redis.call('ZREM', slots, id)
  end
  k = k + 2 * scopes
  a = a + 4
end
"""


class RedisLimitStore:
    def __init__(self, url: str, *, lease_s: float = SLOT_LEASE_S, timeout_s: float = TIMEOUT_S,
                 retry_s: float = RETRY_S) -> None:
        self._redis = RedisScripts(url, timeout_s=timeout_s)
        self._acquire = self._redis.script(_ACQUIRE)
        self._settlements = SettlementBatches(self._redis.script(_SETTLE), self._settling_failed, head=[WINDOW_TTL_S])
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
        applied = self._settle(request_id, limits, tokens, now)
        if applied is not None:
            await asyncio.gather(applied, return_exceptions=True)  # a failure is logged by the batch

    def settle_now(self, request_id: str, limits: Sequence[Limit], tokens: int, now: float) -> None:
        """`settle` without waiting for Redis: the settlement goes with the next batch."""
        self._settle(request_id, limits, tokens, now)

    async def close(self) -> None:
        await self._settlements.drain()
        if self._probe is not None:
            self._probe.cancel()
        await self._redis.close()

    def _settle(self, request_id: str, limits: Sequence[Limit], tokens: int, now: float) -> asyncio.Future | None:
        if request_id in self._admitted_here:
            self._admitted_here.discard(request_id)
            self._own.settle_now(request_id, limits, tokens, now)
            return None
        if self._probe is not None:
            return None  # its slot is held in Redis until its lease expires
        kept = [limit for limit in limits if limit.is_set]
        if not kept:
            return None
        return self._settlements.add(_keys(kept), [len(kept), millis(now), tokens, request_id])

    def _settling_failed(self, error: Exception) -> None:
        if isinstance(error, (redis.RedisError, OSError)):
            self._fall_back(error)  # the slots are held in Redis until their leases expire
        else:
            log.warning("rate-limit settlement failed (%s)", type(error).__name__)

    async def _acquire_shared(self, request_id: str, limits: list[Limit], now: float) -> LimitDecision:
        if not limits:
            return decide(limits, [], now)
        args: list[int | str] = [millis(now), self._lease_ms, request_id, WINDOW_TTL_S]
        for limit in limits:
            args += [_or_none(limit.rpm), _or_none(limit.tpm), _or_none(limit.max_parallel)]
        reply = await self._acquire(keys=_keys(limits), args=args)
        seen = [tuple(reply[1 + 5 * i: 6 + 5 * i]) for i in range(len(limits))]
        return decide(limits, seen, now)  # the same arithmetic as the script: the same verdict

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
