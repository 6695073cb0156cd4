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
    """One scope's counters as a store read them, rolled to the bucket of the check. A store may
    pass plain tuples in this order: the check reads them by position."""

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


class LimitDecision:
    """The verdict on one request, with each scope's counters before it (`limits`, `seen` and the
    weighted `requests` and `tokens` in one order). It runs on every limited call, so it keeps
    flat per-scope values and builds the ScopeCount view only when asked."""

    __slots__ = ("allowed", "limits", "seen", "requests", "tokens", "refused_scope", "refused_limit",
                 "retry_after_s", "at")

    def __init__(self, allowed: bool, limits: Sequence[Limit], seen: Sequence[Sequence[int]], requests: Sequence[int],
                 tokens: Sequence[int], refused_scope: str | None = None, refused_limit: str | None = None,
                 retry_after_s: float = 0.0, at: float = 0.0) -> None:
        self.allowed = allowed
        self.limits = limits
        self.seen = seen
        self.requests = requests
        self.tokens = tokens
        self.refused_scope = refused_scope
        self.refused_limit = refused_limit  # "rpm" | "tpm" | "max_parallel"
        self.retry_after_s = retry_after_s  # when refused: when a retry can pass
        self.at = at  # when the check was made (epoch seconds)

    @property
    def counts(self) -> tuple[ScopeCount, ...]:
        return tuple(ScopeCount(limit.scope, requests, tokens, s[4], limit, Seen(*s)) for limit, s, requests, tokens
                     in zip(self.limits, self.seen, self.requests, self.tokens))

    def requests_headline(self) -> tuple[int, int, float] | None:
        """(the smallest rpm, requests left after this one in the scope with the fewest, when that
        scope has room for another request, or, while it has room, when its window next rolls);
        None when no scope sets an rpm."""
        spent = 1 if self.allowed else 0
        tightest, least, tight, smallest = -1, 0, 0, 0
        for i, limit in enumerate(self.limits):
            rpm = limit.rpm
            if rpm is not None:
                left = rpm - self.requests[i]
                if tightest < 0:
                    tightest, least, tight, smallest = i, left, rpm, rpm
                    continue
                if left < least:
                    tightest, least, tight = i, left, rpm
                smallest = min(smallest, rpm)
        if tightest < 0:
            return None
        s = self.seen[tightest]
        return smallest, max(0, least - spent), _reset(s[0], s[1] + spent, tight, self.at)

    def tokens_headline(self) -> tuple[int, int, float] | None:
        """As `requests_headline`, for tpm: what is left of the window's tokens and when it resets."""
        tightest, least, tight, smallest = -1, 0, 0, 0
        for i, limit in enumerate(self.limits):
            tpm = limit.tpm
            if tpm is not None:
                left = tpm - self.tokens[i]
                if tightest < 0:
                    tightest, least, tight, smallest = i, left, tpm, tpm
                    continue
                if left < least:
                    tightest, least, tight = i, left, tpm
                smallest = min(smallest, tpm)
        if tightest < 0:
            return None
        s = self.seen[tightest]
        return smallest, max(0, least), _reset(s[2], s[3], tight, self.at)

    def remaining_requests(self) -> int | None:
        headline = self.requests_headline()
        return None if headline is None else headline[1]

    def remaining_tokens(self) -> int | None:
        headline = self.tokens_headline()
        return None if headline is None else headline[1]

    def reset_requests_s(self) -> float | None:
        """For the scope with the fewest requests left: when it has room for another request (after
        this one), or, while it has room, when its window next rolls."""
        headline = self.requests_headline()
        return None if headline is None else headline[2]

    def reset_tokens_s(self) -> float | None:
        headline = self.tokens_headline()
        return None if headline is None else headline[2]

    def as_event(self) -> dict:
        """What the ledger keeps of the decision: per scope its limits and the counts it saw (in
        the sliding window, before this request), and on a refusal which limit and the wait."""
        scopes = []
        for limit, requests, tokens, s in zip(self.limits, self.requests, self.tokens, self.seen):
            scope = {"scope": limit.scope, "requests": requests, "tokens": tokens, "parallel": s[4]}
            if limit.rpm is not None:
                scope["rpm"] = limit.rpm
            if limit.tpm is not None:
                scope["tpm"] = limit.tpm
            if limit.max_parallel is not None:
                scope["max_parallel"] = limit.max_parallel
            scopes.append(scope)
        event: dict = {"allowed": self.allowed, "scopes": scopes}
        if not self.allowed:
            event.update(refused_scope=self.refused_scope, refused_limit=self.refused_limit,
                         retry_after_s=self.retry_after_s)
        return event


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


def decide(limits: Sequence[Limit], seen: Sequence[Sequence[int]], now: float) -> LimitDecision:
    """The verdict on one request, from each set scope's counters before it (same order as `limits`).
    `weighted` and the limits' tests, written out: this runs on every limited call."""
    now_ms = millis(now)
    share = WINDOW_MS - now_ms % WINDOW_MS
    requests, tokens = [], []
    over = False
    for limit, s in zip(limits, seen):
        weighted_requests = s[1] + (s[0] * share + WINDOW_MS - 1) // WINDOW_MS
        weighted_tokens = s[3] + (s[2] * share + WINDOW_MS - 1) // WINDOW_MS
        requests.append(weighted_requests)
        tokens.append(weighted_tokens)
        if not over:
            rpm, tpm, parallel = limit.rpm, limit.tpm, limit.max_parallel
            over = (rpm is not None and weighted_requests >= rpm) or (tpm is not None and weighted_tokens >= tpm) \
                or (parallel is not None and s[4] >= parallel)
    if not over:
        return LimitDecision(True, limits, seen, requests, tokens, at=now)
    wait, scope, name = max(_refusals(limit, s, r, t, now_ms) for limit, s, r, t in zip(limits, seen, requests, tokens)
                            if _over(limit, s, r, t))
    return LimitDecision(False, limits, seen, requests, tokens, scope, name, wait, now)


def _over(limit: Limit, seen: Sequence[int], requests: int, tokens: int) -> bool:
    return (limit.rpm is not None and requests + 1 > limit.rpm) or \
        (limit.tpm is not None and tokens >= limit.tpm) or \
        (limit.max_parallel is not None and seen[4] >= limit.max_parallel)


def _refusals(limit: Limit, s: Sequence[int], requests: int, tokens: int, now_ms: int) -> tuple[float, str, str]:
    """The longest wait among the limits this scope is over, with the scope and the limit's name."""
    refused = []
    if limit.rpm is not None and requests + 1 > limit.rpm:
        wait = seconds_until_room(s[0], s[1], limit.rpm, now_ms)
        refused.append((max(MIN_RETRY_S, wait), limit.scope, "rpm"))
    if limit.tpm is not None and tokens >= limit.tpm:
        wait = seconds_until_room(s[2], s[3], limit.tpm, now_ms)
        refused.append((max(MIN_RETRY_S, wait), limit.scope, "tpm"))
    if limit.max_parallel is not None and s[4] >= limit.max_parallel:
        refused.append((PARALLEL_RETRY_S, limit.scope, "max_parallel"))
    return max(refused)


def _reset(previous: int, current: int, limit: int, at: float) -> float:
    """When the tightest scope has room again (see `seconds_until_room`), or while it has room,
    when its window next rolls."""
    now_ms = millis(at)
    if previous > limit - 1 - current:  # no room now, or the previous bucket's share must fade first
        wait = seconds_until_room(previous, current, limit, now_ms)
        if wait > 0:
            return wait
    return (WINDOW_MS - now_ms % WINDOW_MS) / 1000
