"""The Router use case: which deployment of a model group serves the next attempt, and what a
success or a failure does to the deployment's standing.

Cooldowns live in the CooldownStore and this minute's requests and tokens per deployment in
the UsageMeter (both shared by every worker when they are Redis); cooldowns' starts and ends
are events on the deployment's stream. Latency and calls in flight are this process's own view.

A request is counted against its deployment's minute when it is routed, and only in a group
that needs the count: under usage-based routing, or when a deployment sets rpm or tpm, whose
limits then hold under every strategy.
"""
from __future__ import annotations

import asyncio
import random
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Callable, Collection, Iterator, Mapping, Sequence

from moneta.application.config import Deployment, GatewayConfig
from moneta.application.ports import CooldownStore, PriceBook, Tokenizer, UsageMeter
from moneta.application.routing.health_journal import HealthJournal
from moneta.application.routing.live_stats import LiveStats
from moneta.application.routing.settings import RouterSettings
from moneta.application.routing.wildcards import WildcardGroups
from moneta.application.tokens import count_messages_async, count_text_async
from moneta.domain import routing_strategies as strategies
from moneta.domain.budgets import provider_scope
from moneta.domain.cooldown_policy import manual_cooldown_s
from moneta.domain.errors import (BudgetExceededError, ContextWindowExceededError, GatewayError, ModelNotFoundError,
                                  NotFoundError, RateLimitError)
from moneta.domain.failure_kinds import failure_kind
from moneta.domain.usage import Usage

_PRICE_PROBE = Usage(prompt_tokens=1000, completion_tokens=1000)


@dataclass(frozen=True)
class Route:
    deployment: Deployment
    reason: str
    prompt_tokens: int = 0  # counted only when a strategy or the pre-call check needs it


class DeploymentRouter:
    def __init__(
        self,
        config: GatewayConfig,
        cooldowns: CooldownStore,
        usage: UsageMeter,
        journal: HealthJournal | None = None,
        tokenizer: Tokenizer | None = None,
        prices: PriceBook | None = None,
        *,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = RouterSettings.from_config(config)
        self.cooldowns = cooldowns
        self.usage = usage
        self.stats = LiveStats()
        self._journal = journal
        self._tokenizer = tokenizer
        self._prices = prices
        self._rng = rng or random.Random()
        self._clock = clock
        self._groups: dict[str, list[Deployment]] = {}
        for deployment in config.deployments:
            if not deployment.is_pattern:
                self._groups.setdefault(deployment.model_name, []).append(deployment)
        self._wildcards = WildcardGroups(config.deployments)
        self._listed: list[str] | None = None
        self._usage_based = self.settings.strategy == "usage-based-routing-v2"
        self._cost_per_token: dict[str, Decimal | None] = {}

    # -- choosing ----------------------------------------------------------------------------

    def group(self, model_group: str) -> Sequence[Deployment]:
        """The deployments of a model group: an explicit one, else the one a pattern serves."""
        group = self._find(model_group)
        if not group:
            raise ModelNotFoundError(
                f"The model '{model_group}' does not exist or you do not have access to it.", param="model"
            )
        return group

    def _find(self, model_group: str) -> list[Deployment] | None:
        return self._groups.get(model_group) or self._wildcards.group(model_group)

    def reachable(self, model_group: str) -> list[Deployment]:
        """The deployments a call to `model_group` may reach: its group's and its fallback groups'."""
        found = list(self.group(model_group))
        for fallback in self.settings.every_fallback(model_group):
            found += self._find(fallback) or []
        return found

    def groups(self) -> dict[str, list[Deployment]]:
        """The explicit groups, and those the patterns serve that are in use."""
        return {**self._groups, **self._wildcards.made()}

    def model_names(self) -> list[str]:
        """What `/v1/models` lists: the explicit groups, and the priced models the patterns serve."""
        if self._listed is None:
            listed = self._wildcards.listed(self._prices) if self._prices is not None else set()
            self._listed = sorted(set(self._groups) | listed)
        return self._listed

    def deployment(self, deployment_id: str) -> Deployment:
        for group in self._groups.values():
            for deployment in group:
                if deployment.id == deployment_id:
                    return deployment
        raise NotFoundError(f"No deployment has the id '{deployment_id}'.", param="deployment_id",
                            code="deployment_not_found")

    async def route(self, model_group: str, body: dict[str, Any], exclude: Collection[str] = (),
                    barred: Collection[str] = ()) -> Route:
        """The deployment for the next attempt: among those not cooling down (and, with pre-call
        checks, whose context window fits the prompt; with rpm/tpm, that have headroom this
        minute), preferring those not in `exclude` (tried already), in the best `order` tier, by
        the strategy; never one of a provider in `barred` (its budget cannot pay for the call).
        Raises a 429 when all are barred, cooling or at their limits."""
        group = self.group(model_group)
        if barred:
            group = self._unbarred(model_group, group, barred)
        cooling = self.cooldowns.state().cooling
        available = [d for d in group if d.id not in cooling]
        if not available:
            raise self._all_cooling(model_group, group, cooling)
        tokens = await self._prompt_tokens(group, body)
        if self.settings.pre_call_checks:
            available = self._fitting(model_group, available, tokens)
        fresh = [d for d in available if d.id not in exclude] or available
        if self._usage_based or any(d.rpm is not None or d.tpm is not None for d in group):
            return await self._counted(model_group, fresh, tokens)
        return self._route(fresh, self._pick(fresh, tokens), tokens)

    async def _counted(self, model_group: str, deployments: list[Deployment], tokens: int) -> Route:
        """Picks among those with headroom as last seen, then counts the request against the
        pick; when the pick filled up meanwhile (another worker), picks again on the counts the
        refusal brought back."""
        ids = [d.id for d in deployments]
        for _ in deployments:
            pick = self._pick(deployments, tokens, self.usage.seen(ids))
            route = self._route(deployments, pick, tokens)
            if await self.usage.take(route.deployment.id, tokens, route.deployment.rpm, route.deployment.tpm, ids):
                return route
        raise self._no_capacity(model_group, f"all {len(ids)} deployments are at their tpm/rpm limit for this minute")

    def _route(self, deployments: list[Deployment], pick: strategies.Pick, tokens: int) -> Route:
        return Route(next(d for d in deployments if d.id == pick.candidate.id), pick.reason, tokens)

    def _pick(self, deployments: list[Deployment], tokens: int,
              usage: Mapping[str, tuple[int, int]] | None = None) -> strategies.Pick:
        candidates = [self._candidate(d, usage or {}) for d in deployments]
        if usage is not None:
            try:
                candidates = strategies.with_headroom(candidates, tokens)
            except strategies.NoCapacity as full:
                raise self._no_capacity(deployments[0].model_name, str(full)) from None
        tier = strategies.top_tier(candidates)
        if len(tier) == 1:
            return strategies.Pick(tier[0], "only candidate" if len(candidates) == 1 else "highest priority (order)")
        name = self.settings.strategy
        if name == "least-busy":
            return strategies.least_busy(tier, self._rng)
        if name == "latency-based-routing":
            return strategies.latency_based(tier, self._rng, self.settings.latency_buffer)
        if name == "usage-based-routing-v2":
            return strategies.usage_based(tier, self._rng, tokens)
        if name == "cost-based-routing":
            return strategies.cost_based(tier, self._rng)
        return strategies.simple_shuffle(tier, self._rng)

    def _candidate(self, deployment: Deployment, usage: Mapping[str, tuple[int, int]]) -> strategies.Candidate:
        requests, tokens = usage.get(deployment.id, (0, 0))
        return strategies.Candidate(
            id=deployment.id, order=deployment.order, weight=deployment.weight, rpm=deployment.rpm,
            tpm=deployment.tpm, in_flight=self.stats.in_flight(deployment.id),
            latency_ms=self.stats.average_latency(deployment.id), rpm_used=requests, tpm_used=tokens,
            cost_per_token=self._cost(deployment) if self.settings.strategy == "cost-based-routing" else None,
        )

    def _cost(self, deployment: Deployment) -> Decimal | None:
        if deployment.id not in self._cost_per_token:
            self._cost_per_token[deployment.id] = self._price_per_token(deployment)
        return self._cost_per_token[deployment.id]

    def _price_per_token(self, deployment: Deployment) -> Decimal | None:
        if self._prices is None:
            return None
        try:
            quote = self._prices.quote(deployment, _PRICE_PROBE, datetime.now(timezone.utc))
        except GatewayError:
            return None
        return quote.cost / _PRICE_PROBE.total_tokens if quote.cost else None

    async def _prompt_tokens(self, group: Sequence[Deployment], body: dict[str, Any]) -> int:
        needed = (self.settings.pre_call_checks or self._usage_based
                  or any(d.tpm is not None for d in group))
        if not needed or self._tokenizer is None:
            return 0
        model = group[0].provider_model
        messages = body.get("messages")
        if isinstance(messages, list):
            return await count_messages_async(self._tokenizer, model, messages)
        return await count_text_async(self._tokenizer, model, str(body.get("prompt") or body.get("input") or ""))

    def _fitting(self, model_group: str, deployments: list[Deployment], tokens: int) -> list[Deployment]:
        fitting = [d for d in deployments if tokens <= _context_window(d)]
        if not fitting:
            raise ContextWindowExceededError(
                f"The prompt ({tokens} tokens) exceeds the context window of every deployment of "
                f"model group '{model_group}'.", param="messages")
        return fitting

    @staticmethod
    def _unbarred(model_group: str, group: Sequence[Deployment], barred: Collection[str]) -> list[Deployment]:
        allowed = [d for d in group if d.provider not in barred]
        if not allowed:
            scopes = ", ".join(sorted({provider_scope(d.provider) for d in group}))
            raise BudgetExceededError(f"No deployments available for model group '{model_group}': the budget of "
                                      f"every provider it uses cannot pay for the call ({scopes}).")
        return allowed

    def _no_capacity(self, model_group: str, why: str) -> RateLimitError:
        return RateLimitError(f"No deployments available for model group '{model_group}': {why}",
                              retry_after=60 - self._clock() % 60)

    def _all_cooling(self, model_group: str, group: Sequence[Deployment], cooling: Mapping[str, float]) -> RateLimitError:
        wait = max(0.0, min(cooling[d.id] for d in group) - self._clock())
        return RateLimitError(
            f"No deployments available for model group '{model_group}': all {len(group)} are cooling down "
            f"after failures. Try again in {wait:.1f} seconds.",
            code="model_group_cooling_down", retry_after=wait)

    # -- outcomes ------------------------------------------------------------------------------

    @contextmanager
    def attempting(self, route: Route) -> Iterator[None]:
        """Counts the call as in flight while it runs."""
        self.stats.started(route.deployment.id)
        try:
            yield
        finally:
            self.stats.finished(route.deployment.id)

    async def on_success(self, deployment: Deployment, latency_ms: float) -> None:
        self.stats.answered(deployment.id, latency_ms)
        if deployment.id not in self.cooldowns.state().lapsed:
            return
        if await asyncio.to_thread(self.cooldowns.claim_recovery, deployment.id):
            if self._journal is not None:
                await self._journal.recovered(deployment)

    async def on_failure(self, deployment: Deployment, error: GatewayError) -> None:
        policy = self.settings.cooldown
        allowed = policy.allowed_fails_for(error, len(self._find(deployment.model_name) or ()))
        if allowed is None:
            return
        until = await asyncio.to_thread(self.cooldowns.count_failure, deployment.id, failure_kind(error), allowed,
                                        policy.window_s, policy.cooldown_for(error))
        if until is not None and self._journal is not None:
            reason = f"{failure_kind(error)}: more than {allowed} in {policy.window_s:g}s"
            await self._journal.cooled_down(deployment, until, error, reason)

    async def cool_down(self, deployment_id: str, seconds: float, reason: str, requested_by: str) -> float:
        """A manual cooldown, recorded with who asked; it ends, and recovers, as any other.
        Returns its end (epoch seconds)."""
        deployment = self.deployment(deployment_id)
        seconds = manual_cooldown_s(seconds)
        until = await asyncio.to_thread(self.cooldowns.start_cooldown, deployment.id, seconds)
        if self._journal is not None:
            await self._journal.cooled_down_manually(deployment, until, reason, requested_by)
        return until


def _context_window(deployment: Deployment) -> float:
    info = deployment.model_info
    window = info.get("max_input_tokens") or info.get("max_tokens")
    return float(window) if window else float("inf")
