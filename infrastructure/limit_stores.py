"""Which rate-limit store a server uses (called by the composition root, in each worker process)."""
from __future__ import annotations

from moneta.application.rate_limits import LimitStore
from moneta.infrastructure.limits_database import DatabaseLimitStore
from moneta.infrastructure.limits_in_process import InProcessLimitStore
from moneta.infrastructure.limits_redis import RedisLimitStore


def limit_store_for(redis_url: str | None, database_url: str | None, workers: int) -> LimitStore:
    """- `redis_url`: the Redis configured (`REDIS_URL` or `router_settings.redis_url`), or None.
       When set, every worker and host shares the counters there (each process on its own while
       Redis is unreachable).
    - `database_url`: the ledger's URL, `postgresql://...` or `sqlite:///path` (None: the default
       SQLite file). Used without Redis when `workers` > 1, so that a limit holds for the whole
       server and not once per worker.
    - `workers`: the number of worker processes serving requests on this host.
    Otherwise (one worker, no Redis) the counters live in the process's memory."""
    if redis_url:
        return RedisLimitStore(redis_url)
    if workers > 1:
        return DatabaseLimitStore.open(database_url)
    return InProcessLimitStore()
