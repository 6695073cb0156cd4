"""This minute's requests and tokens per deployment in Redis, shared by every worker and host.

One hash per deployment and minute, `moneta:router:usage:{deployment_id}:{minute}` (fields
`requests` and `tokens`, expiring after USAGE_TTL_S). Routing picks on the counts the last
reply brought (no round trip), then one Lua script checks the pick's rpm/tpm headroom, counts
the request if it fits, and returns the group's counts: one round trip per routed request, and
the limits hold across workers because the check and the count are one atomic step. The rpm/tpm
test in the script is `domain.routing_strategies.fits_limits`, restated in Lua for that reason.

When Redis fails, the process counts and decides on its own view (it counts its own requests
all along) for _RETRY_AFTER_ERROR_S, then tries Redis again.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable, Sequence

import redis

from moneta.infrastructure.cooldowns_redis import PREFIX
from moneta.infrastructure.usage_in_process import InProcessUsageMeter

log = logging.getLogger("moneta.router")

USAGE_TTL_S = 120
_RETRY_AFTER_ERROR_S = 5.0

_TAKE = """
local chosen = KEYS[1]
local tokens, rpm, tpm = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local used = redis.call('HMGET', chosen, 'requests', 'tokens')
local requests, spent = tonumber(used[1]) or 0, tonumber(used[2]) or 0
local fits = (tpm < 0 or spent + tokens <= tpm) and (rpm < 0 or requests + 1 <= rpm)
if fits then
  redis.call('HINCRBY', chosen, 'requests', 1)
  redis.call('HINCRBY', chosen, 'tokens', tokens)
  redis.call('EXPIRE', chosen, ARGV[4])
end
local reply = {fits and 1 or 0}
for _, key in ipairs(KEYS) do
  local counts = redis.call('HMGET', key, 'requests', 'tokens')
  reply[#reply + 1] = tonumber(counts[1]) or 0
  reply[#reply + 1] = tonumber(counts[2]) or 0
end
return reply
"""


def usage_key(deployment_id: str, minute: int) -> str:
    return f"{PREFIX}usage:{deployment_id}:{minute}"


class RedisUsageMeter:
    def __init__(self, url: str, *, clock: Callable[[], float] = time.time) -> None:
        self._redis = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self._take = self._redis.register_script(_TAKE)
        self._clock = clock
        self._own = InProcessUsageMeter(clock)
        self._shared: dict[str, tuple[int, int, int]] = {}  # id -> (minute, requests, tokens) last seen
        self._down_until = 0.0

    def seen(self, deployment_ids: Sequence[str]) -> dict[str, tuple[int, int]]:
        if self._clock() < self._down_until:
            return self._own.seen(deployment_ids)
        minute = self._minute()
        return {d: self._shared_in(minute, d) for d in deployment_ids}

    async def take(self, deployment_id: str, tokens: int, rpm: int | None, tpm: int | None,
                   group: Sequence[str]) -> bool:
        now = self._clock()
        if now >= self._down_until:
            try:
                fits = await asyncio.to_thread(self._take_shared, deployment_id, tokens, rpm, tpm, group)
            except redis.RedisError as error:
                log.warning("redis: usage counted in this process only for the next %gs (%s)",
                            _RETRY_AFTER_ERROR_S, type(error).__name__)
                self._down_until = now + _RETRY_AFTER_ERROR_S
            else:
                if fits:
                    self._own.take_now(deployment_id, tokens, None, None)
                return fits
        return self._own.take_now(deployment_id, tokens, rpm, tpm)

    def _take_shared(self, deployment_id: str, tokens: int, rpm: int | None, tpm: int | None,
                     group: Sequence[str]) -> bool:
        minute = self._minute()
        ids = list(dict.fromkeys([deployment_id, *group]))  # the script counts against the first
        reply = self._take(keys=[usage_key(d, minute) for d in ids],
                           args=[tokens, _limit(rpm), _limit(tpm), USAGE_TTL_S])
        for i, d in enumerate(ids):
            self._shared[d] = (minute, int(reply[1 + 2 * i]), int(reply[2 + 2 * i]))
        return bool(reply[0])

    def _shared_in(self, minute: int, deployment_id: str) -> tuple[int, int]:
        seen, requests, tokens = self._shared.get(deployment_id, (minute, 0, 0))
        return (requests, tokens) if seen == minute else (0, 0)

    def _minute(self) -> int:
        return int(self._clock() // 60)


def _limit(value: int | None) -> int:
    return -1 if value is None else value
