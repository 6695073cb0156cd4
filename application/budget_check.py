"""The budget step of admission: `check_budget()` reserves the call's largest possible cost on every
budget it falls under, all or nothing; `update_spend()` (the settler) replaces the reservation
with what the call cost once it has ended.

The reservation: the input tokens (counted with the tokenizer) at the input price, plus the
output the call may produce (`max_tokens`, else `max_completion_tokens`, else the deployment's
`model_info.max_output_tokens`, else DEFAULT_MAX_OUTPUT_TOKENS) at the output price, times `n`;
at the dearest deployment of the model group, since routing comes after. An embedding reserves its
input; a transcription its file at AUDIO_BYTES_PER_SECOND. When the tightest budget cannot pay
for all of that output but pays for at least one token, the call's output is capped to what it
pays for and that is reserved.

Provider budgets: the provider is known only once the call is routed, so the call reserves on the
budget of every provider it may be served by (its group's and its fallback groups' deployments).
A provider whose budget cannot pay is dropped from the reservation and barred from the call's
routing (`Reservation.barred`); when every deployment's provider is barred the call is refused.
Settlement charges the provider that served the call and releases the others.
"""
from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from decimal import Decimal
from typing import Any, Callable, Sequence

from moneta.application.access_directory import Directory
from moneta.application.budget_store import BudgetStore, BudgetUnverifiable
from moneta.application.config import Deployment, ProviderBudget
from moneta.application.ports import PriceBook, Tokenizer
from moneta.application.principal import Principal
from moneta.application.tokens import count_messages_async, count_text_async
from moneta.domain.budgets import (PROVIDER, BudgetDecision, BudgetLine, CallPrice, Headroom, decide, from_nanos,
                                   is_provider, paying_providers, period, provider_scope, roomiest_provider,
                                   seen_event, to_nanos)
from moneta.domain.errors import BudgetExceededError, ServiceUnavailableError
from moneta.domain.request_record import RequestRecord
from moneta.domain.usage import Usage

log = logging.getLogger("moneta.budgets")
DEFAULT_MAX_OUTPUT_TOKENS = 4096
AUDIO_BYTES_PER_SECOND = 4000  # 32 kbit/s, below any common speech encoding: never fewer seconds than the file holds
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLION = 1_000_000
_MAX_REMEMBERED = 10_000
_PRICES_FOR_S = 60.0


@dataclass(frozen=True)
class BudgetSettings:
    proxy_max_budget: Decimal | None = None  # litellm_settings.max_budget
    proxy_duration: str | None = None  # litellm_settings.budget_duration
    zone: tzinfo | None = None  # litellm_settings.timezone: day, week and month periods follow its calendar
    fail_open: bool = False  # general_settings.budget_fail_open
    alert_share: Decimal | None = None  # general_settings.budget_alert_share: alert at max_budget x share
    end_user_budget_id: str | None = None  # litellm_settings.max_end_user_budget_id
    providers: tuple[ProviderBudget, ...] = ()  # router_settings.provider_budget_config


@dataclass(frozen=True)
class ProviderLines:
    """The budgets of the providers that may serve a call, and whether a deployment it may reach
    has a provider without one (a call can then always be served there)."""

    lines: tuple[BudgetLine, ...] = ()
    unbudgeted: bool = True


NO_PROVIDERS = ProviderLines()


@dataclass(frozen=True)
class Reservation:
    decision: BudgetDecision
    lines: list[BudgetLine]  # what is held, provider budgets included
    call: dict[str, Any]  # the call, its output capped when the budget could not pay for all of it
    capped_to: int | None
    excluded: tuple[Headroom, ...] = ()  # provider budgets that cannot pay, as seen: the call must not reach them
    unverified: bool = False  # budget_fail_open let it through while the counters were unreachable

    @property
    def barred(self) -> frozenset[str]:
        """The providers the call must not be routed to."""
        return _names([headroom.line for headroom in self.excluded])

    def as_event(self) -> dict[str, Any]:
        event = self.decision.as_event()
        if self.capped_to is not None:
            event["max_tokens_capped_to"] = self.capped_to
        if self.excluded:
            event["providers_excluded"] = [seen_event(headroom) for headroom in self.excluded]
        if self.unverified:
            event["unverified"] = True
        return event


class BudgetRefused(BudgetExceededError):
    """A 429 from a budget, with the counters that refused (for the Denied event)."""

    def __init__(self, message: str, decision: BudgetDecision, **details: Any) -> None:
        super().__init__(message, **details)
        self.decision = decision


class Budgets:
    def __init__(self, store: BudgetStore, directory: Directory, prices: PriceBook, tokenizer: Tokenizer,
                 group: Callable[[str], Sequence[Deployment]], settings: BudgetSettings,
                 reachable: Callable[[str], Sequence[Deployment]] | None = None) -> None:
        """`group`: a model group's deployments; `reachable`: those a call to it may reach, its
        fallbacks' included (default: its group's)."""
        self.store = store
        self.directory = directory
        self.prices = prices
        self.tokenizer = tokenizer
        self.group = group
        self.reachable = reachable or group
        self.settings = settings
        self._provider_budgets = {budget.provider: budget for budget in settings.providers}
        self._provider_lines: dict[str, tuple[datetime, ProviderLines]] = {}
        self._settling: set[asyncio.Task[None]] = set()
        # Lines are kept while the directory does not change and their periods last; prices per
        # token for a minute (prices change by period, not by call).
        self._lines: dict[tuple[str, str, str], tuple[int, datetime | None, list[BudgetLine]]] = {}
        self._prices: dict[str, tuple[float, Decimal, Decimal]] = {}
        self._settle_now = getattr(store, "settle_now", None)

    # -- which budgets ---------------------------------------------------------------------------

    def lines(self, principal: Principal | None, model: str, end_user: str, now: datetime) -> list[BudgetLine]:
        """The budgets the call falls under, each in its period now."""
        known = (principal.key_id if principal is not None else "", model, end_user)
        cached = self._lines.get(known)
        if cached is not None and cached[0] == self.directory.version and (cached[1] is None or now < cached[1]):
            return cached[2]
        lines = self._lines_now(principal, model, end_user, now)
        ends = [datetime.fromisoformat(line.resets_at) for line in lines if line.resets_at]
        if len(self._lines) >= _MAX_REMEMBERED:
            self._lines.clear()
        self._lines[known] = (self.directory.version, min(ends) if ends else None, lines)
        return lines

    def _lines_now(self, principal: Principal | None, model: str, end_user: str, now: datetime) -> list[BudgetLine]:
        found: list[BudgetLine | None] = [self._proxy(now)]
        if principal is not None and principal.key_id:
            key, team = principal.key, principal.team
            found += [self._entity("key", principal.key_id, key, now), self._key_model(principal, model, now),
                      self._entity("user", principal.user_id, self.directory.live("user", principal.user_id), now),
                      self._entity("team", principal.team_id, team or None, now),
                      self._member(principal, now),
                      self._entity("org", principal.org_id, self.directory.live("organization", principal.org_id), now)]
        if end_user:
            found.append(self._customer(end_user, now))
        return [line for line in found if line is not None]

    def _proxy(self, now: datetime) -> BudgetLine | None:
        limit = self.settings.proxy_max_budget
        return None if limit is None else self._line("proxy", limit, None, self.settings.proxy_duration, _EPOCH, now)

    def _entity(self, scope: str, name: str, entity: dict[str, Any] | None, now: datetime) -> BudgetLine | None:
        return entity_line(self.directory, self.settings, scope, name, entity, now)

    def _key_model(self, principal: Principal, model: str, now: datetime) -> BudgetLine | None:
        budget = (principal.key.get("model_max_budget") or {}).get(model)
        if not budget:
            return None
        return self._line(f"key_model:{principal.key_id}:{model}", Decimal(str(budget["budget_limit"])), None,
                          budget.get("time_period"), _created(principal.key), now)

    def _member(self, principal: Principal, now: datetime) -> BudgetLine | None:
        member = (principal.team.get("members") or {}).get(principal.user_id) if principal.user_id else None
        if not member or member.get("max_budget_in_team") is None:
            return None
        return self._line(f"member:{principal.team_id}:{principal.user_id}", member["max_budget_in_team"], None,
                          principal.team.get("budget_duration"), _created(principal.team), now)

    def _customer(self, end_user: str, now: datetime) -> BudgetLine | None:
        customer = self.directory.live("customer", end_user)
        if customer is None and self.settings.end_user_budget_id:  # not recorded yet: the default budget
            customer = {"budget_id": self.settings.end_user_budget_id}
        return self._entity("customer", end_user, customer, now)

    def _line(self, scope: str, limit: Decimal, soft: Decimal | None, duration: str | None, anchor: datetime,
              now: datetime, restarted: bool = False) -> BudgetLine:
        return _line(self.settings, scope, limit, soft, duration, anchor, now, restarted)

    def provider_lines(self, model: str, now: datetime) -> ProviderLines:
        """The budgets of the providers that may serve a call to `model`, in their periods now."""
        if not self._provider_budgets:
            return NO_PROVIDERS
        cached = self._provider_lines.get(model)
        if cached is not None and now < cached[0]:
            return cached[1]
        names = {deployment.provider for deployment in self.reachable(model)}
        found = ProviderLines(tuple(self._provider_line(self._provider_budgets[name], now) for name in sorted(names)
                                    if name in self._provider_budgets),
                              unbudgeted=any(name not in self._provider_budgets for name in names))
        if len(self._provider_lines) >= _MAX_REMEMBERED:
            self._provider_lines.clear()
        ends = [datetime.fromisoformat(line.resets_at) for line in found.lines if line.resets_at]
        self._provider_lines[model] = (min(ends, default=datetime.max.replace(tzinfo=UTC)), found)
        return found

    def _provider_line(self, budget: ProviderBudget, now: datetime) -> BudgetLine:
        """Periods from 1970-01-01 UTC (a day is a UTC day), or the calendar of `timezone`."""
        return self._line(provider_scope(budget.provider), budget.budget_limit, None, budget.time_period, _EPOCH, now)

    async def status(self, scope: str, name: str, entity: dict[str, Any] | None) -> dict[str, Any] | None:
        """An entity's own budget now (None when it has none): its limit, its period, what is spent
        in it and what calls in flight hold."""
        now = datetime.now(UTC)
        line = self._entity(scope, name, entity, now)
        if line is None:
            return None
        (seen,) = await self._read([line], now)
        return {"scope": line.scope, "max_budget": _usd(line.limit), "period_start": line.period,
                "budget_reset_at": line.resets_at, "spend": _usd(seen.spent), "reserved": _usd(seen.reserved),
                "soft_budget": None if line.soft is None else _usd(line.soft)}

    async def provider_status(self) -> dict[str, dict[str, Any]]:
        """Each provider budget now, by provider (LiteLLM's `/provider/budgets`): its limit and
        period, what is spent in the period and what calls in flight hold. ServiceUnavailableError
        (503 budget_unverifiable) when the counters cannot be read, as for `status`."""
        now = datetime.now(UTC)
        budgets = self.settings.providers
        seen = await self._read([self._provider_line(budget, now) for budget in budgets], now) if budgets else ()
        return {budget.provider: {
            "budget_limit": budget.budget_limit, "time_period": budget.time_period,
            "spend": _usd(headroom.spent), "reserved": _usd(headroom.reserved), "period_start": headroom.line.period,
            "budget_reset_at": headroom.line.resets_at} for budget, headroom in zip(budgets, seen)}

    async def _read(self, lines: list[BudgetLine], now: datetime) -> tuple[Headroom, ...]:
        """The lines' counters: reserving nothing reads them on every store alike."""
        probe = f"status:{uuid.uuid4()}"
        try:
            decision = await self.store.reserve(probe, lines, 0, 0, now.timestamp())
            if decision.allowed:
                await self.store.settle(probe, lines, 0, now.timestamp())
        except BudgetUnverifiable:
            raise ServiceUnavailableError("The budgets cannot be read right now.", code="budget_unverifiable") from None
        return decision.seen

    # -- check_budget --------------------------------------------------------------------------------

    async def check_budget(self, request_id: str, lines: list[BudgetLine], call_type: str, call: dict[str, Any],
                           now: datetime, audio_bytes: int = 0, providers: ProviderLines = NO_PROVIDERS
                           ) -> Reservation:
        """Reserves on every line at once, and on the provider budgets that can pay;
        BudgetExceededError (429) when not even the input and one output token fit (or no provider
        the call may reach can pay that), ServiceUnavailableError (503 budget_unverifiable) when the
        counters cannot be read and the budgets fail closed."""
        price = await self._price(call_type, call, now, audio_bytes)
        n = int(call.get("n") or 1)
        output = self._output_limit(call_type, call)
        # A call of no known cost (a Realtime session, a free model) still needs some headroom.
        wanted = max(1, to_nanos(price.most(output, n), up=True))
        minimum = max(1, to_nanos(price.most(min(output, 1), n), up=True))
        try:
            decision, held, excluded = await self._reserve(request_id, lines, providers, wanted, minimum, now)
        except BudgetUnverifiable as error:
            if self.settings.fail_open:
                log.warning("budgets not verifiable (%s): admitting, as budget_fail_open says", error)
                return Reservation(BudgetDecision(True, 0, ()), [], call, None, unverified=True)
            raise ServiceUnavailableError("The budgets cannot be checked right now; the call was not made.",
                                          code="budget_unverifiable") from None
        if not decision.allowed:
            raise refusal(decision)
        if decision.reserved >= wanted or call_type not in ("chat", "text_completion"):
            return Reservation(decision, held, call, None, excluded)
        capped = max(1, price.affordable_output(decision.reserved, n))
        field = "max_completion_tokens" if "max_completion_tokens" in call else "max_tokens"
        return Reservation(decision, held, {**call, field: capped}, capped, excluded)

    async def _reserve(self, request_id: str, lines: list[BudgetLine], providers: ProviderLines, wanted: int,
                       minimum: int, now: datetime) -> tuple[BudgetDecision, list[BudgetLine], tuple[Headroom, ...]]:
        """Reserves on `lines` and the provider budgets; while some provider cannot pay (see
        `paying_providers`), releases and reserves again without it: one more round trip per
        provider dropped. Returns the decision, what it holds and the provider budgets dropped (as
        they were seen); refused, naming the roomiest provider, when none can pay."""
        kept = providers.lines
        excluded: tuple[Headroom, ...] = ()
        while True:
            held = [*lines, *kept]
            decision = (await self.store.reserve(request_id, held, wanted, minimum, now.timestamp()) if held
                        else decide((), wanted, minimum))
            keep = paying_providers(decision.seen, wanted, minimum, providers.unbudgeted)
            refused_by_others = decision.refused is not None and not is_provider(decision.refused.line)
            if len(keep) == len(kept) or refused_by_others:
                return decision, held, excluded
            if decision.allowed:
                await self.store.settle(request_id, held, 0, now.timestamp())
            excluded += tuple(h for h in decision.seen if is_provider(h.line) and h.line not in keep)
            if not keep and not providers.unbudgeted:
                seen = (*decision.seen, *(h for h in excluded if h not in decision.seen))
                return BudgetDecision(False, 0, seen, roomiest_provider(excluded)), held, excluded
            kept = keep

    def _output_limit(self, call_type: str, call: dict[str, Any]) -> int:
        if call_type not in ("chat", "text_completion"):
            return 0
        asked = call.get("max_tokens") or call.get("max_completion_tokens")
        if asked:
            return int(asked)
        limits = [int(d.model_info["max_output_tokens"]) for d in self.group(call["model"])
                  if d.model_info.get("max_output_tokens")]
        return max(limits) if limits else DEFAULT_MAX_OUTPUT_TOKENS

    async def _price(self, call_type: str, call: dict[str, Any], now: datetime, audio_bytes: int) -> CallPrice:
        model = call["model"]
        deployments = self.group(model)
        if call_type == "transcription":
            seconds = audio_bytes / AUDIO_BYTES_PER_SECOND
            return CallPrice(max(self.prices.quote(d, Usage(audio_seconds=seconds), now).cost for d in deployments),
                             Decimal(0))
        tokens = await self._input_tokens(call_type, call)
        per_input, per_output = self._per_token(model, deployments, now)
        return CallPrice(per_input * tokens, per_output)

    def _per_token(self, model: str, deployments: Sequence[Deployment], now: datetime) -> tuple[Decimal, Decimal]:
        """The dearest input and output price per token in the group, looked up once a minute."""
        cached = self._prices.get(model)
        if cached is not None and cached[0] > now.timestamp():
            return cached[1], cached[2]
        per_input = max(self.prices.quote(d, Usage(prompt_tokens=_MILLION), now).cost for d in deployments) / _MILLION
        per_output = max(self.prices.quote(d, Usage(completion_tokens=_MILLION), now).cost
                         for d in deployments) / _MILLION
        self._prices[model] = (now.timestamp() + _PRICES_FOR_S, per_input, per_output)
        return per_input, per_output

    async def _input_tokens(self, call_type: str, call: dict[str, Any]) -> int:
        if call_type == "chat":
            return await count_messages_async(self.tokenizer, call["model"], call.get("messages") or [])
        given = call.get("prompt") if call_type == "text_completion" else call.get("input")
        texts = given if isinstance(given, list) else [given]
        total = 0
        for text in texts:
            if isinstance(text, str):
                total += await count_text_async(self.tokenizer, call["model"], text)
            elif isinstance(text, list):  # token ids
                total += len(text)
        return total

    # -- update_spend ----------------------------------------------------------------------------

    def settler(self, request_id: str, reservation: Reservation) -> Callable[[RequestRecord], None]:
        """Told once when the call ends: its cost replaces its reservation; a cost above the
        reservation is charged in full and recorded as an overrun on the call's stream."""
        lines = reservation.lines
        reserved = reservation.decision.reserved

        def update_spend(record: RequestRecord) -> None:
            cost = to_nanos(record.cost, up=True)
            if cost > reserved and lines:
                record.overrun(reserved=from_nanos(reserved), charged=record.cost,
                               reason="the provider reported more usage than the call could produce as reserved")
            served = provider_scope(record.provider)  # of the providers' budgets, the one that served it pays
            charged = [line for line in lines if not is_provider(line) or line.scope == served]
            released = [line for line in lines if is_provider(line) and line.scope != served]
            if charged:
                self._settle(request_id, charged, cost)
            if released:
                self._settle(request_id, released, 0)
        return update_spend

    def _settle(self, request_id: str, lines: list[BudgetLine], cost: int) -> None:
        if self._settle_now is not None:
            self._settle_now(request_id, lines, cost, datetime.now(UTC).timestamp())
        else:
            self._spawn(self.store.settle(request_id, lines, cost, datetime.now(UTC).timestamp()))

    def _spawn(self, settling: Any) -> None:
        task = asyncio.get_running_loop().create_task(self._logged(settling))
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    @staticmethod
    async def _logged(settling: Any) -> None:
        try:
            await settling
        except Exception as error:  # the reservation's lease ends it anyway
            log.warning("budget settlement failed (%s); the reservation lapses with its lease", type(error).__name__)


def entity_line(directory: Directory, settings: BudgetSettings, scope: str, name: str, entity: dict[str, Any] | None,
                now: datetime) -> BudgetLine | None:
    """An entity's own max_budget, else that of the reusable budget it names, in its period at `now`."""
    if not name or entity is None:
        return None
    holder = entity if entity.get("max_budget") is not None else directory.live("budget", entity.get("budget_id"))
    if holder is None or holder.get("max_budget") is None:
        return None
    limit = holder["max_budget"] + _temporary_raise(holder, now)
    return _line(settings, f"{scope}:{name}", limit, holder.get("soft_budget"), holder.get("budget_duration"),
                 _created(holder), now, restarted=bool(holder.get("budget_start")))


def _line(settings: BudgetSettings, scope: str, limit: Decimal, soft: Decimal | None, duration: str | None,
          anchor: datetime, now: datetime, restarted: bool = False) -> BudgetLine:
    """`restarted`: the budget's periods start at its `budget_start` (a budget without duration
    then has one period from there, not "lifetime")."""
    start, end = period(duration, anchor, now, settings.zone)
    if soft is None and settings.alert_share is not None:
        soft = limit * settings.alert_share
    return BudgetLine(scope, start.astimezone(UTC).isoformat() if duration or restarted else "lifetime",
                      to_nanos(limit, up=False), end.astimezone(UTC).isoformat() if end else None,
                      None if soft is None else to_nanos(soft, up=False))


def refusal(decision: BudgetDecision) -> BudgetRefused:
    refused = decision.refused
    assert refused is not None
    line = refused.line
    limit, spent, held = (_usd(nanos) for nanos in (line.limit, refused.spent, refused.reserved))
    resets = f"; it resets at {line.resets_at}" if line.resets_at else ""
    return BudgetRefused(
        f"Budget exceeded for {line.scope}: limit {limit} USD, spent {spent} USD, {held} USD held by calls in flight"
        f"{resets}.", decision, current_cost=spent + held, max_budget=limit)


def _names(lines: Sequence[BudgetLine]) -> frozenset[str]:
    """The providers of provider budget lines."""
    return frozenset(line.scope[len(PROVIDER):] for line in lines)


def _usd(nanos: int) -> Decimal:
    """Nano-dollars as USD without trailing zeros (0.0005, not 0.000500000)."""
    return from_nanos(nanos).normalize() if nanos else Decimal(0)


def _temporary_raise(holder: dict[str, Any], now: datetime) -> Decimal:
    expiry = holder.get("temp_budget_expiry")
    raise_by = holder.get("temp_budget_increase")
    if raise_by is None or not expiry or datetime.fromisoformat(expiry) <= now:
        return Decimal(0)
    return Decimal(str(raise_by))


def _created(entity: dict[str, Any]) -> datetime:
    """Where the entity's budget periods start: its `budget_start` (set when its budget was
    created or its spend reset by the library's BudgetManager), else its creation."""
    created = entity.get("budget_start") or entity.get("created_at")
    return datetime.fromisoformat(created) if created else _EPOCH
