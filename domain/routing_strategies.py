"""Choosing one deployment among the healthy candidates of a model group (LiteLLM's strategies).

Pure arithmetic over what the router knows of each candidate; each pick comes with the
reason it was made, which is recorded in the request's ledger stream.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from decimal import Decimal
from typing import Callable, Sequence

STRATEGIES = (
    "simple-shuffle",
    "least-busy",
    "latency-based-routing",
    "usage-based-routing-v2",
    "cost-based-routing",
)
ALIASES = {"usage-based-routing": "usage-based-routing-v2", "latency-based": "latency-based-routing"}


@dataclass(frozen=True)
class Candidate:
    """What the router knows of one deployment at the moment of choosing."""

    id: str
    order: int | None = None
    weight: float | None = None
    rpm: int | None = None
    tpm: int | None = None
    in_flight: int = 0
    latency_ms: float | None = None  # recent average; None until it has answered
    rpm_used: int = 0  # this minute
    tpm_used: int = 0  # this minute
    cost_per_token: Decimal | None = None


@dataclass(frozen=True)
class Pick:
    candidate: Candidate
    reason: str


class NoCapacity(Exception):
    """Every candidate is at its tpm/rpm limit for this minute."""


def top_tier(candidates: Sequence[Candidate]) -> list[Candidate]:
    """Those with the lowest `order` (priority); a candidate without an order comes last."""
    best = min(_order(c) for c in candidates)
    return [c for c in candidates if _order(c) == best]


def simple_shuffle(candidates: Sequence[Candidate], rng: random.Random) -> Pick:
    """Random, weighted by `weight`, else `rpm`, else `tpm` (the first that any candidate sets)."""
    for name in ("weight", "rpm", "tpm"):
        weights = [float(getattr(c, name) or 0) for c in candidates]
        if any(weights):
            chosen = rng.choices(list(candidates), weights=weights)[0]
            return Pick(chosen, f"simple-shuffle by {name}: {getattr(chosen, name)} of {sum(weights):g}")
    return Pick(rng.choice(list(candidates)), f"simple-shuffle: 1 of {len(candidates)}")


def least_busy(candidates: Sequence[Candidate], rng: random.Random) -> Pick:
    chosen = _lowest(candidates, lambda c: c.in_flight, rng)
    return Pick(chosen, f"least-busy: {chosen.in_flight} in flight")


def latency_based(candidates: Sequence[Candidate], rng: random.Random, buffer: float = 0.0) -> Pick:
    """The fastest recent average; one with no measurement yet is tried first, so that every
    deployment gets measured. `buffer` (lowest_latency_buffer) spreads traffic over those
    within (1 + buffer) of the fastest."""
    unmeasured = [c for c in candidates if c.latency_ms is None]
    if unmeasured:
        return Pick(rng.choice(unmeasured), "latency-based-routing: not measured yet")
    fastest = min(c.latency_ms for c in candidates if c.latency_ms is not None)
    close = [c for c in candidates if c.latency_ms is not None and c.latency_ms <= fastest * (1 + buffer)]
    chosen = rng.choice(close)
    return Pick(chosen, f"latency-based-routing: {chosen.latency_ms:.1f} ms average")


def with_headroom(candidates: Sequence[Candidate], request_tokens: int) -> list[Candidate]:
    """Those with tpm and rpm headroom for this request; NoCapacity when none has."""
    fitting = [c for c in candidates if fits_limits(c.rpm_used, c.tpm_used, request_tokens, c.rpm, c.tpm)]
    if not fitting:
        raise NoCapacity(f"all {len(candidates)} deployments are at their tpm/rpm limit for this minute")
    return fitting


def usage_based(candidates: Sequence[Candidate], rng: random.Random, request_tokens: int) -> Pick:
    """The least used this minute among those with tpm and rpm headroom for this request."""
    fitting = with_headroom(candidates, request_tokens)
    chosen = _lowest(fitting, lambda c: (c.tpm_used, c.rpm_used), rng)
    return Pick(chosen, f"usage-based-routing-v2: {chosen.tpm_used} tpm, {chosen.rpm_used} rpm used")


def cost_based(candidates: Sequence[Candidate], rng: random.Random) -> Pick:
    """The cheapest per token; a deployment of unknown price comes after every priced one."""
    priced = [c for c in candidates if c.cost_per_token is not None]
    if not priced:
        return Pick(rng.choice(list(candidates)), "cost-based-routing: no prices known")
    chosen = _lowest(priced, lambda c: c.cost_per_token, rng)
    return Pick(chosen, f"cost-based-routing: ${chosen.cost_per_token} per token")


def fits_limits(requests: int, tokens_used: int, request_tokens: int, rpm: int | None, tpm: int | None) -> bool:
    """Whether one more request of `request_tokens` stays within this minute's rpm and tpm."""
    if tpm is not None and tokens_used + request_tokens > tpm:
        return False
    return rpm is None or requests + 1 <= rpm


def _lowest(candidates: Sequence[Candidate], key: Callable[[Candidate], object], rng: random.Random) -> Candidate:
    best = min(key(c) for c in candidates)  # type: ignore[type-var]
    return rng.choice([c for c in candidates if key(c) == best])


def _order(candidate: Candidate) -> float:
    return float("inf") if candidate.order is None else candidate.order
