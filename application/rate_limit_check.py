"""The rate-limit step of admission: the limits a call falls under (its key, the key's limits for
the model, its user, team, organization and end user), taken at once from the limit store, and
given back when the call ends with the tokens it used.

An entity's own `rpm_limit`, `tpm_limit` and `max_parallel_requests` apply; a field it leaves
unset is taken from the reusable budget it names by `budget_id`.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable

from moneta.application.access_directory import Directory
from moneta.application.principal import Principal
from moneta.application.rate_limits import LimitStore
from moneta.domain.errors import RateLimitError
from moneta.domain.rate_limits import Limit, LimitDecision
from moneta.domain.request_record import RequestRecord

log = logging.getLogger("moneta.limits")
_FIELDS = (("rpm", "rpm_limit"), ("tpm", "tpm_limit"), ("max_parallel", "max_parallel_requests"))


_MAX_REMEMBERED = 10_000


class RateLimits:
    def __init__(self, store: LimitStore, directory: Directory) -> None:
        self.store = store
        self.directory = directory
        self._settling: set[asyncio.Task[None]] = set()
        self._known: dict[tuple[str, str, str], tuple[int, list[Limit]]] = {}
        # The in-process store answers without awaiting: called directly, it saves a coroutine and
        # a task per call.
        self._acquire_now = getattr(store, "acquire_now", None)
        self._settle_now = getattr(store, "settle_now", None)

    def limits(self, principal: Principal | None, model: str, end_user: str) -> list[Limit]:
        """The limits of the call's scopes, kept while the directory does not change."""
        if (principal is None or not principal.key_id) and not end_user:
            return []
        found = (principal.key_id if principal is not None else "", model, end_user)
        known = self._known.get(found)
        if known is not None and known[0] == self.directory.version:
            return known[1]
        limits = self._limits(principal, model, end_user)
        if len(self._known) >= _MAX_REMEMBERED:
            self._known.clear()
        self._known[found] = (self.directory.version, limits)
        return limits

    def _limits(self, principal: Principal | None, model: str, end_user: str) -> list[Limit]:
        scopes: list[Limit] = []
        if principal is not None and principal.key_id:
            key = principal.key
            scopes.append(self._limit(f"key:{principal.key_id}", key))
            scopes.append(Limit(f"key_model:{principal.key_id}:{model}",
                                rpm=(key.get("model_rpm_limit") or {}).get(model),
                                tpm=(key.get("model_tpm_limit") or {}).get(model)))
            for kind, scope, name in (("user", "user", principal.user_id), ("team", "team", principal.team_id),
                                      ("organization", "org", principal.org_id)):
                entity = self.directory.live(kind, name)
                if entity is not None:
                    scopes.append(self._limit(f"{scope}:{name}", entity))
        customer = self.directory.live("customer", end_user) if end_user else None
        if customer is not None:
            scopes.append(self._limit(f"customer:{end_user}", customer))
        return [limit for limit in scopes if limit.is_set]

    async def take(self, request_id: str, limits: list[Limit]) -> LimitDecision | None:
        """The decision when any limit applies (None when none does); RateLimitError (429) when a
        limit refuses, naming it, with the decision as the error's `decision`."""
        if not limits:
            return None
        if self._acquire_now is not None:
            decision = self._acquire_now(request_id, limits, time.time())
        else:
            decision = await self.store.acquire(request_id, limits, time.time())
        if not decision.allowed:
            raise refusal(decision)
        return decision

    def settler(self, request_id: str, limits: list[Limit]) -> Callable[[RequestRecord], None]:
        """Called once when the call ends: adds its tokens and frees its parallel slots."""
        def settle(record: RequestRecord) -> None:
            if self._settle_now is not None:
                self._settle_now(request_id, limits, record.tokens, time.time())
                return
            task = asyncio.get_running_loop().create_task(self._settle(request_id, limits, record.tokens))
            self._settling.add(task)
            task.add_done_callback(self._settling.discard)
        return settle

    def release(self, request_id: str, limits: list[Limit]) -> None:
        """Gives back what a call that will not run took (a later check refused it)."""
        if self._settle_now is not None:
            self._settle_now(request_id, limits, 0, time.time())
            return
        task = asyncio.get_running_loop().create_task(self._settle(request_id, limits, 0))
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    async def _settle(self, request_id: str, limits: list[Limit], tokens: int) -> None:
        try:
            await self.store.settle(request_id, limits, tokens, time.time())
        except Exception as error:  # the slot's lease ends it anyway
            log.warning("rate-limit settlement failed (%s)", type(error).__name__)

    def _limit(self, scope: str, entity: dict[str, Any]) -> Limit:
        budget = self.directory.live("budget", entity.get("budget_id")) or {}
        values = {field: entity.get(name) if entity.get(name) is not None else budget.get(name)
                  for field, name in _FIELDS}
        return Limit(scope, **values)


class LimitRefused(RateLimitError):
    """A 429 from a rate limit, with the counters that refused (for the Denied event)."""

    def __init__(self, message: str, decision: LimitDecision) -> None:
        super().__init__(message, code="rate_limit_exceeded", retry_after=decision.retry_after_s)
        self.decision = decision


def refusal(decision: LimitDecision) -> LimitRefused:
    count = next(count for count in decision.counts if count.scope == decision.refused_scope)
    used = {"rpm": (count.limit.rpm, f"{count.requests} requests in the last minute"),
            "tpm": (count.limit.tpm, f"{count.tokens} tokens in the last minute"),
            "max_parallel": (count.limit.max_parallel, f"{count.parallel} calls in flight")}
    limit, seen = used[decision.refused_limit or "rpm"]
    name = {"max_parallel": "max_parallel_requests", "rpm": "rpm_limit", "tpm": "tpm_limit"}[decision.refused_limit
                                                                                            or "rpm"]
    return LimitRefused(f"Rate limit reached for {decision.refused_scope}: {name} {limit} ({seen}). "
                        f"Retry after {decision.retry_after_s:.1f} s.", decision)


def headers(decision: LimitDecision | None) -> list[tuple[bytes, bytes]]:
    """OpenAI's x-ratelimit-* response headers: each limit's tightest scope, what is left of it
    and when it resets."""
    if decision is None:
        return []
    found: list[tuple[bytes, bytes]] = []
    requests = decision.requests_headline()
    if requests is not None:
        limit, left, reset = requests
        found += [(b"x-ratelimit-limit-requests", b"%d" % limit), (b"x-ratelimit-remaining-requests", b"%d" % left),
                  (b"x-ratelimit-reset-requests", b"%.3fs" % max(reset, 0.0))]
    tokens = decision.tokens_headline()
    if tokens is not None:
        limit, left, reset = tokens
        found += [(b"x-ratelimit-limit-tokens", b"%d" % limit), (b"x-ratelimit-remaining-tokens", b"%d" % left),
                  (b"x-ratelimit-reset-tokens", b"%.3fs" % max(reset, 0.0))]
    return found
