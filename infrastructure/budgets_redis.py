"""Budget counters in Redis, shared by every worker and host.

Per budget line (scope and period) three keys: the hash `moneta:budgets:c:<scope>@<period>` holds
`spent` (settled, nano-dollars) and `held` (the sum of the live reservations), the sorted set
`...:l:...` the reservations' request ids scored by their lease's end (epoch ms), and the hash
`...:a:...` each reservation's amount. One Lua script reserves for all the lines of a request
(EVALSHA, loaded once): it drops the expired leases, decides as `domain.budgets.decide` does, and
holds the amount on every line or on none. A counter never seen is reported by the script instead;
its spend is read from the SpentReader and set (HSETNX: two workers initialising at once agree) by
the next call, which then decides. The scripts run on one pipelined connection (`redis_scripts`).
Settlements go in batches (`settlement_batches`): one script call settles every call that ended
while the previous one was on its way, each exactly once.

A reservation of nothing (a status probe) holds "0", which is never subtracted: Redis takes no
"-0" for a number. Lua numbers are doubles: the arithmetic is exact while limits, amounts and counters stay within
2^53 nano-dollars (about 9 million dollars). A larger limit or amount is refused (ValueError)
rather than compared inexactly. Amounts travel to Redis as decimal strings.

The keys expire KEEP_S after their period ends (`BudgetLine.resets_at`, counted from the caller's
`now`); a lifetime budget's never do. When Redis fails or does not answer within the deadline
(0.5 s) the call raises BudgetUnverifiable, and until a background ping succeeds again (every
`retry_s`) calls raise it at once: no request waits on a Redis known to be down. A settlement that fails leaves its
reservation to expire with its lease and its cost out of the shared counter. So does one lost in a
crash: a kill -9 can lose the settlements queued or on their way, those of the calls that ended
within one Redis round trip before it (`settlement_batches`); their reservations are held until
their leases end (LEASE_S), as those of a call whose process died before it settled.
"""
from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Sequence

import redis

from moneta.application.budget_store import BudgetUnverifiable, SpentReader
from moneta.domain.budgets import LEASE_S, BudgetDecision, BudgetLine, Headroom, decide
from moneta.infrastructure.redis_scripts import RedisScripts, Script
from moneta.infrastructure.settlement_batches import SettlementBatches

log = logging.getLogger("moneta.budgets")

PREFIX = "moneta:budgets:"
MAX_EXACT = 2**53  # nano-dollars: what a Lua number holds exactly
KEEP_S = 86_400  # a counter outlives its period by a day: late settlements still find it
TIMEOUT_S = 0.25
RETRY_S = 3.0
ATTEMPTS = 3  # a counter set by the second call is there; a third covers one evicted meanwhile

# KEYS: per line its counter, leases and amounts. ARGV: now (ms), lease end (ms), request id,
# wanted, minimum, then per line: limit, lifetime of its keys (s, 0: for ever), spent to start from ('': none).
# Reply: {-1, missing line numbers...} or {1, reserved, per line spent, held} or
# {0, tightest line number, per line spent, held}.
_RESERVE = """
local now, lease_end, id = tonumber(ARGV[1]), ARGV[2], ARGV[3]
local wanted, minimum = tonumber(ARGV[4]), tonumber(ARGV[5])
local lines = #KEYS / 3
local missing = {-1}
for i = 1, lines do
  local c, ttl, init = KEYS[3 * i - 2], ARGV[4 + 3 * i], ARGV[5 + 3 * i]
  if init ~= '' and redis.call('HSETNX', c, 'spent', init) == 1 and ttl ~= '0' then
    redis.call('EXPIRE', c, ttl)
  end
  if redis.call('HEXISTS', c, 'spent') == 0 then missing[#missing + 1] = i end
end
if #missing > 1 then return missing end
local seen, tightest, least = {}, 0, 0
for i = 1, lines do
  local c, l, a = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  for _, gone in ipairs(redis.call('ZRANGEBYSCORE', l, '-inf', now)) do
    local amount = redis.call('HGET', a, gone)
    if amount then
      if amount ~= '0' then redis.call('HINCRBY', c, 'held', '-' .. amount) end
      redis.call('HDEL', a, gone)
    end
  end
  redis.call('ZREMRANGEBYSCORE', l, '-inf', now)
  local counter = redis.call('HMGET', c, 'spent', 'held')
  local held = tonumber(counter[2]) or 0
  local room = tonumber(ARGV[3 + 3 * i]) - tonumber(counter[1]) - held
  if i == 1 or room < least then tightest, least = i, room end
  seen[#seen + 1] = counter[1]
  seen[#seen + 1] = held
end
local amount
if least >= wanted then
  amount = ARGV[4]
elseif least >= minimum and least > 0 then
  amount = string.format('%d', least)
else
  return {0, tightest, unpack(seen)}
end
for i = 1, lines do
  local c, l, a, ttl = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i], ARGV[4 + 3 * i]
  local previous = redis.call('HGET', a, id)
  if previous and previous ~= '0' then redis.call('HINCRBY', c, 'held', '-' .. previous) end
  redis.call('HINCRBY', c, 'held', amount)
  redis.call('HSET', a, id, amount)
  redis.call('ZADD', l, lease_end, id)
  if ttl ~= '0' then
    redis.call('EXPIRE', l, ttl)
    redis.call('EXPIRE', a, ttl)
  end
end
return {1, amount, unpack(seen)}
"""

# KEYS: per settlement, per line its counter, leases and amounts. ARGV: per settlement: its number of
# lines, request id, cost.
_SETTLE = """
local k, a = 0, 1
while a <= #ARGV do
  local lines, id, cost = tonumber(ARGV[a]), ARGV[a + 1], ARGV[a + 2]
  for i = 1, lines do
    local c, l, h = KEYS[k + 3 * i - 2], KEYS[k + 3 * i - 1], KEYS[k + 3 * i]
    if redis.call('HEXISTS', c, 'spent') == 1 then
      local amount = redis.call('HGET', h, id)
      if amount then
        if amount ~= '0' then redis.call('HINCRBY', c, 'held', '-' .. amount) end
        redis.call('HDEL', h, id)
        redis.call('ZREM', l, id)
      end
      redis.call('HINCRBY', c, 'spent', cost)
    end
  end
  k = k + 3 * lines
  a = a + 3
end
"""


class RedisBudgetStore:
    mode = "redis"

    def __init__(self, redis_url: str, reader: SpentReader, *, timeout_s: float = TIMEOUT_S,
                 retry_s: float = RETRY_S) -> None:
        self._redis = RedisScripts(redis_url, timeout_s=timeout_s)  # a connection, then an answer: each within it
        self._reserve = self._redis.script(_RESERVE)
        self._settlements = SettlementBatches(self._redis.script(_SETTLE), self._settling_failed)
        self._reader = reader
        self._retry_s = retry_s
        self._probe: asyncio.Task | None = None  # set while Redis is down

    def healthy(self) -> bool:
        return self._probe is None

    async def reserve(self, request_id: str, lines: Sequence[BudgetLine], wanted: int, minimum: int,
                      now: float) -> BudgetDecision:
        if not lines:
            return decide((), wanted, minimum)
        _check_exact([*(line.limit for line in lines), wanted, minimum])
        keys = _keys(lines)
        starts: dict[int, int] = {}  # line index -> spent read from the ledger's view
        for _ in range(ATTEMPTS):
            reply = await self._call(self._reserve, keys, _reserve_args(request_id, lines, wanted, minimum, now,
                                                                        starts))
            if int(reply[0]) != -1:
                return _decision(reply, lines)
            missing = [int(number) - 1 for number in reply[1:]]
            spent = await asyncio.to_thread(self._reader.spent, [lines[i] for i in missing])
            starts.update(zip(missing, spent))
        raise BudgetUnverifiable("budget counters in redis vanish as they are set (evicted?)")

    async def settle(self, request_id: str, lines: Sequence[BudgetLine], cost: int, now: float) -> None:
        if lines:
            if self._probe is not None:
                raise BudgetUnverifiable("redis is unreachable")
            try:
                await self._settlements.add(_keys(lines), [len(lines), request_id, str(cost)])
            except (redis.RedisError, OSError) as error:
                raise BudgetUnverifiable(f"redis: {type(error).__name__}: {error}") from error

    def settle_now(self, request_id: str, lines: Sequence[BudgetLine], cost: int, now: float) -> None:
        """`settle` without waiting for Redis: the settlement goes with the next batch."""
        if not lines:
            return
        if self._probe is not None:
            log.warning("budget settlement dropped: redis is unreachable; the reservation lapses with its lease")
            return
        self._settlements.add(_keys(lines), [len(lines), request_id, str(cost)])

    async def close(self) -> None:
        await self._settlements.drain()
        if self._probe is not None:
            self._probe.cancel()
        await self._redis.close()

    async def _call(self, script: Script, keys: list[str], args: list[str]) -> list:
        if self._probe is not None:
            raise BudgetUnverifiable("redis is unreachable")
        try:
            return await script(keys=keys, args=args)
        except (redis.RedisError, OSError) as error:
            self._fall_out(error)
            raise BudgetUnverifiable(f"redis: {type(error).__name__}: {error}") from error

    def _settling_failed(self, error: Exception) -> None:
        log.warning("budget settlements failed (%s); their reservations lapse with their leases", type(error).__name__)
        if isinstance(error, (redis.RedisError, OSError)):
            self._fall_out(error)

    def _fall_out(self, error: BaseException) -> None:
        if self._probe is None:
            log.warning("redis unreachable (%s: %s): budgeted calls cannot be verified until it answers",
                        type(error).__name__, error)
            self._probe = asyncio.get_running_loop().create_task(self._wait_for_redis())

    async def _wait_for_redis(self) -> None:
        while True:
            await asyncio.sleep(self._retry_s)
            try:
                await self._redis.ping()
            except (redis.RedisError, OSError):
                continue
            log.warning("redis answers again: budgets are verified again")
            self._probe = None
            return


def _check_exact(amounts: list[int]) -> None:
    if max(amounts) > MAX_EXACT:
        raise ValueError(f"a budget amount above 2^53 nano-dollars (${MAX_EXACT / 1e9:,.0f}) cannot be kept exactly")


def _keys(lines: Sequence[BudgetLine]) -> list[str]:
    return [f"{PREFIX}{kind}:{line.scope}@{line.period}" for line in lines for kind in "cla"]


def _reserve_args(request_id: str, lines: Sequence[BudgetLine], wanted: int, minimum: int, now: float,
                  starts: dict[int, int]) -> list[str]:
    args = [str(int(now * 1000)), str(int((now + LEASE_S) * 1000)), request_id, str(wanted), str(minimum)]
    for i, line in enumerate(lines):
        args += [str(line.limit), str(_lifetime(line, now)), str(starts[i]) if i in starts else ""]
    return args


def _lifetime(line: BudgetLine, now: float) -> int:
    """Seconds from `now` (the caller's clock, as the leases') to a day after the period's end."""
    if line.resets_at is None:
        return 0
    return max(0, int(datetime.fromisoformat(line.resets_at).timestamp() - now)) + KEEP_S


def _decision(reply: list, lines: Sequence[BudgetLine]) -> BudgetDecision:
    seen = tuple(Headroom(line, int(reply[2 + 2 * i]), int(reply[3 + 2 * i])) for i, line in enumerate(lines))
    if int(reply[0]) == 1:
        return BudgetDecision(True, int(reply[1]), seen)
    return BudgetDecision(False, 0, seen, seen[int(reply[1]) - 1])
