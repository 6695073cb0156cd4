"""Rate limits (rpm, tpm, max parallel requests) per scope: the sliding window counter.

Each scope counts requests and tokens in fixed 60-second buckets and keeps two: the current one
and the one before. The count "in the last 60 seconds" is estimated as

    previous bucket x (1 - elapsed fraction of the current bucket) + current bucket

which assumes the previous bucket's events were spread evenly over it. Its error is bounded by
the previous bucket's unevenness, it needs two counters per scope (not one entry per request),
and unlike a fixed window it never lets 2 x rpm through around a bucket edge. The arithmetic is
in integer milliseconds, the previous bucket's share rounded up (`weighted`): then
`weighted + 1 <= rpm` is exactly `estimate + 1 <= rpm`, and a share never rounds down to 0 (which
would let rpm=1 pass twice within a second across a bucket edge). Integers let the Redis script
restate it exactly, with no float drift between stores; the database store runs this module under
row locks.

- rpm: a request is admitted when `weighted requests + 1 <= rpm`.
- tpm: a call's tokens are known only once it ends, so a request is admitted while the window's
  weighted tokens are `< tpm`, and its tokens are added to the current bucket at settlement.
- max_parallel: a request takes a slot, a lease (request id -> expiry, SLOT_LEASE_S later) that
  settlement releases; a lease of a process that died expires instead of holding a slot for
  ever. Slots are taken only in scopes that set max_parallel.

A check is all or nothing: the request is counted in every scope or in none.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Sequence

WINDOW_MS = 60_000
SLOT_LEASE_S = 600.0
MIN_RETRY_S = 1.0  # an rpm/tpm refusal never tells a client to retry sooner than this
# Slots are released when calls end, which nothing can foresee: a refused client is told to try again soon.
PARALLEL_RETRY_S = 1.0


@dataclass(frozen=True)
class Limit:
    scope: str  # "key:<key_id>", "user:<id>", "team:<id>", "org:<id>", "customer:<id>", "key_model:<key_id>:<model>"
    rpm: int | None = None
    tpm: int | None = None
    max_parallel: int | None = None

    @property
    def is_set(self) -> bool:
        return self.rpm is not None or self.tpm is not None or self.max_parallel is not None


class Seen(NamedTuple):
    """One scope's counters as a store read them, rolled to the bucket of the check."""

    previous_requests: int
    current_requests: int
    previous_tokens: int
    current_tokens: int
    parallel: int


class ScopeCount(NamedTuple):
    """One scope's counters as the check saw them, before this request."""

    scope: str
    requests: int  # weighted count in the sliding window, the previous bucket's share rounded up
    tokens: int
    parallel: int
    limit: Limit
    seen: Seen  # the two buckets the weighted counts come from


class LimitDecision(NamedTuple):
    allowed: bool
    counts: tuple[ScopeCount, ...]
    refused_scope: str | None = None
    refused_limit: str | None = None  # "rpm" | "tpm" | "max_parallel"
    retry_after_s: float = 0.0  # when refused: when a retry can pass
    at: float = 0.0  # when the check was made (epoch seconds)

    def remaining_requests(self) -> int | None:
        spent = 1 if self.allowed else 0
        left = [max(0, c.limit.rpm - c.requests - spent) for c in self.counts if c.limit.rpm is not None]
        return min(left) if left else None

    def remaining_tokens(self) -> int | None:
        left = [max(0, c.limit.tpm - c.tokens) for c in self.counts if c.limit.tpm is not None]
        return min(left) if left else None

    def reset_requests_s(self) -> float | None:
        """For the scope with the fewest requests left: when it has room for another request (after
        this one), or, while it has room, when its window next rolls."""
        spent = 1 if self.allowed else 0
        tightest = [(c.limit.rpm - c.requests, c.seen.previous_requests, c.seen.current_requests + spent, c.limit.rpm)
                    for c in self.counts if c.limit.rpm is not None]
        return _reset(tightest, self.at)

    def reset_tokens_s(self) -> float | None:
        tightest = [(c.limit.tpm - c.tokens, c.seen.previous_tokens, c.seen.current_tokens, c.limit.tpm)
                    for c in self.counts if c.limit.tpm is not None]
        return _reset(tightest, self.at)

    def as_event(self) -> dict:
        """What the ledger keeps of the decision: per scope its limits and the counts it saw (in
        the sliding window, before this request), and on a refusal which limit and the wait."""
        event: dict = {"allowed": self.allowed, "scopes": [_scope_event(c) for c in self.counts]}
        if not self.allowed:
            event.update(refused_scope=self.refused_scope, refused_limit=self.refused_limit,
                         retry_after_s=self.retry_after_s)
        return event


def _scope_event(count: ScopeCount) -> dict:
    scope = {"scope": count.scope, "requests": count.requests, "tokens": count.tokens, "parallel": count.parallel}
    limit = count.limit
    for name, value in (("rpm", limit.rpm), ("tpm", limit.tpm), ("max_parallel", limit.max_parallel)):
        if value is not None:
            scope[name] = value
    return scope


def millis(now: float) -> int:
    return int(now * 1000)


def rolled(seen_bucket: int, previous: int, current: int, bucket: int) -> tuple[int, int]:
    """A scope's (previous, current) counts as of `bucket`, from those kept at `seen_bucket`.
    A clock behind the one that counted last (another host's) reads the counts as they are."""
    if bucket <= seen_bucket:
        return previous, current
    if bucket == seen_bucket + 1:
        return current, 0
    return 0, 0


def weighted(previous: int, current: int, now_ms: int) -> int:
    """The sliding window's estimate, rounded up, in integers (the Redis script says the same)."""
    return current + (previous * (WINDOW_MS - now_ms % WINDOW_MS) + WINDOW_MS - 1) // WINDOW_MS


def seconds_until_room(previous: int, current: int, limit: int, now_ms: int) -> float:
    """How long until `weighted(previous, current) + 1 <= limit`, counting nothing new meanwhile."""
    elapsed_ms = now_ms % WINDOW_MS
    if limit <= 0:
        return (2 * WINDOW_MS - elapsed_ms) / 1000  # never: a whole window after this one, as a figure to show
    room = limit - 1 - current  # what the previous bucket's weighted share may still be
    if room >= 0:
        return max(0, _fades_at(previous, room) - elapsed_ms) / 1000
    # The current bucket alone is over: wait for it to become the previous one and fade enough.
    return (WINDOW_MS - elapsed_ms + _fades_at(current, limit - 1)) / 1000


def _fades_at(previous: int, room: int) -> int:
    """The first millisecond of a bucket at which the previous bucket's share is at most `room`:
    ceil(previous x (WINDOW_MS - ms) / WINDOW_MS) <= room  <=>  WINDOW_MS - ms <= room x WINDOW_MS / previous."""
    if previous <= room:
        return 0
    return WINDOW_MS - room * WINDOW_MS // previous


def decide(limits: Sequence[Limit], seen: Sequence[Seen], now: float) -> LimitDecision:
    """The verdict on one request, from each set scope's counters before it (same order as `limits`)."""
    now_ms = millis(now)
    counts = []
    refused = False
    for limit, s in zip(limits, seen):
        count = ScopeCount(limit.scope, weighted(s.previous_requests, s.current_requests, now_ms),
                           weighted(s.previous_tokens, s.current_tokens, now_ms), s.parallel, limit, s)
        counts.append(count)
        refused = refused or _over(count)
    if not refused:
        return LimitDecision(True, tuple(counts), at=now)
    wait, scope, name = max(_refusals(count, now_ms) for count in counts if _over(count))
    return LimitDecision(False, tuple(counts), scope, name, wait, now)


def _over(count: ScopeCount) -> bool:
    limit = count.limit
    return (limit.rpm is not None and count.requests + 1 > limit.rpm) or \
        (limit.tpm is not None and count.tokens >= limit.tpm) or \
        (limit.max_parallel is not None and count.parallel >= limit.max_parallel)


def _refusals(count: ScopeCount, now_ms: int) -> tuple[float, str, str]:
    """The longest wait among the limits this scope is over, with the scope and the limit's name."""
    limit, s = count.limit, count.seen
    refused = []
    if limit.rpm is not None and count.requests + 1 > limit.rpm:
        wait = seconds_until_room(s.previous_requests, s.current_requests, limit.rpm, now_ms)
        refused.append((max(MIN_RETRY_S, wait), count.scope, "rpm"))
    if limit.tpm is not None and count.tokens >= limit.tpm:
        wait = seconds_until_room(s.previous_tokens, s.current_tokens, limit.tpm, now_ms)
        refused.append((max(MIN_RETRY_S, wait), count.scope, "tpm"))
    if limit.max_parallel is not None and count.parallel >= limit.max_parallel:
        refused.append((PARALLEL_RETRY_S, count.scope, "max_parallel"))
    return max(refused)


def _reset(scopes: list[tuple[int, int, int, int]], at: float) -> float | None:
    """(left, previous, current, limit) per scope -> the reset of the one with the least left."""
    if not scopes:
        return None
    now_ms = millis(at)
    _, previous, current, limit = min(scopes, key=lambda s: s[0])
    wait = seconds_until_room(previous, current, limit, now_ms)
    return wait if wait > 0 else (WINDOW_MS - now_ms % WINDOW_MS) / 1000
