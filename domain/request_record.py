"""One event stream per request: the ledger entry an auditor replays.

A request is either Denied (nothing reached a provider) or Admitted; an admitted request
then has zero or more AttemptFailed (and, for a session, UsageAdded per response) and ends Completed, Interrupted (the client went away
mid-stream: what was consumed is still recorded), Failed (no attempt succeeded) or CacheHit
(answered from the response cache: no provider was called).
Spend is the `cost` of Completed and Interrupted events, in USD, as Decimal.

Event classes whose shape grew carry a `class_version` and an `upcast_vN_vN+1` per step, which the
event store applies to older stored events as it reads them. Events stored before versions existed
all read as version 1 whatever fields they had, so each upcaster only adds what is missing.
"""
from __future__ import annotations

from decimal import Decimal
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate

from moneta.domain.usage import Usage


class RequestRecord(Aggregate):
    """Who asked for what, what was decided, what each attempt did, and what it cost."""

    class Admitted(Aggregate.Created):
        class_version = 3  # 2: `instance`; 3: `principal`
        call_type: str
        key_hash: str
        end_user: str
        model_group: str
        stream: bool
        decision: dict[str, Any]
        instance: str = ""  # the gateway process that runs the call ("" before instances were recorded)
        principal: dict[str, str] | None = None  # key alias, team, user, organization (None before keys existed)

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state.setdefault("instance", "")

        @staticmethod
        def upcast_v2_v3(state: dict[str, Any]) -> None:
            state.setdefault("principal", None)

        def apply(self, aggregate: "RequestRecord") -> None:
            aggregate.deployment_id = str(self.decision.get("deployment") or "")

    class Denied(Aggregate.Created):
        class_version = 2  # 2: `principal` and `decision`
        call_type: str
        key_hash: str
        end_user: str
        model_group: str
        status_code: int
        error_type: str
        code: str
        reason: str
        principal: dict[str, str] | None = None
        decision: dict[str, Any] | None = None  # the checks' numbers (e.g. the rate limits' counters)

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state.setdefault("principal", None)
            state.setdefault("decision", None)

        def apply(self, aggregate: "RequestRecord") -> None:
            aggregate.outcome = "denied"

    class AttemptFailed(Aggregate.Event):
        attempt: int
        deployment_id: str
        provider: str
        provider_model: str
        status_code: int
        error_type: str
        reason: str
        latency_ms: float

        def apply(self, aggregate: "RequestRecord") -> None:
            aggregate.attempts = self.attempt
            aggregate.deployment_id = self.deployment_id

    class Completed(Aggregate.Event):
        class_version = 2  # 2: `askii` and `askii_rate`
        deployment_id: str
        provider: str
        provider_model: str
        usage: dict[str, int]
        cost: Decimal
        price_source: str
        latency_ms: float
        first_token_ms: float | None
        finish_reason: str | None
        askii: Decimal | None = None  # the cost in askii at the rate in force at settlement (None before askii)
        askii_rate: Decimal | None = None  # askii per USD used for `askii`

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            _settled_before_askii(state)

        def apply(self, aggregate: "RequestRecord") -> None:
            aggregate.outcome, aggregate.cost, aggregate.provider = "completed", self.cost, self.provider
            aggregate.tokens = self.usage.get("prompt_tokens", 0) + self.usage.get("completion_tokens", 0)

    class Interrupted(Completed):
        """A stream that ended before its end: the client left (`client_disconnected`) or the
        provider failed after the first chunk (`upstream_error`, with its error). Usage counts
        what was streamed until then. (Events written before `cause` existed read as the client's.)"""

        class_version = 3  # 2: `cause`, `error_type`, `status_code`; 3: `askii` and `askii_rate`
        usage_estimated: bool = False
        cause: str = "client_disconnected"
        error_type: str | None = None
        status_code: int | None = None

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state.setdefault("cause", "client_disconnected")
            state.setdefault("error_type", None)
            state.setdefault("status_code", None)

        @staticmethod
        def upcast_v2_v3(state: dict[str, Any]) -> None:
            _settled_before_askii(state)

        def apply(self, aggregate: "RequestRecord") -> None:
            aggregate.outcome, aggregate.cost, aggregate.provider = "interrupted", self.cost, self.provider
            aggregate.tokens = self.usage.get("prompt_tokens", 0) + self.usage.get("completion_tokens", 0)

    class Failed(Aggregate.Event):
        status_code: int
        error_type: str
        reason: str

        def apply(self, aggregate: "RequestRecord") -> None:
            aggregate.outcome = "failed"

    class Abandoned(Aggregate.Event):
        """Admitted by a gateway process that ended (crashed, killed) before settling the call: what
        the call did after its last recorded event is not known, so it costs nothing here."""

        deployment_id: str  # the last deployment recorded for the call ("" if none)
        instance: str
        reason: str

        def apply(self, aggregate: "RequestRecord") -> None:
            aggregate.outcome = "abandoned"

    class CacheHit(Aggregate.Event):
        """Answered from the response cache, no provider called. Not a Completed: whatever counts
        provider calls (deployment health, provider tokens, billing) must not count it. `usage` is
        the cached answer's, which `filled_by` (the request that stored it) paid for."""

        cache_key: str
        filled_by: str
        usage: dict[str, int]
        cost: Decimal  # always 0: kept so that every outcome with usage states its cost
        latency_ms: float
        finish_reason: str | None

        def apply(self, aggregate: "RequestRecord") -> None:
            aggregate.outcome = "cache_hit"

    class UsageAdded(Aggregate.Event):
        """One response of a session that spans many (a Realtime API session): its usage and cost.
        The session's Completed event carries the totals, so spend counts each response once."""

        response_id: str
        usage: dict[str, int]
        cost: Decimal
        price_source: str

    class BudgetOverrun(Aggregate.Event):
        """The call cost more than its budgets had reserved for it: charged in full all the same."""

        reserved: Decimal
        charged: Decimal
        reason: str

    @classmethod
    def admit(
        cls,
        request_id: UUID,
        *,
        call_type: str,
        key_hash: str,
        end_user: str,
        model_group: str,
        stream: bool,
        decision: dict[str, Any] | None = None,
        instance: str = "",
        principal: dict[str, str] | None = None,
    ) -> "RequestRecord":
        return cls._create(
            cls.Admitted,
            id=request_id,
            call_type=call_type,
            key_hash=key_hash,
            end_user=end_user,
            model_group=model_group,
            stream=stream,
            decision=decision or {},
            instance=instance,
            principal=principal,
        )

    @classmethod
    def deny(
        cls,
        request_id: UUID,
        *,
        call_type: str,
        key_hash: str,
        end_user: str,
        model_group: str,
        status_code: int,
        error_type: str,
        code: str,
        reason: str,
        principal: dict[str, str] | None = None,
        decision: dict[str, Any] | None = None,
    ) -> "RequestRecord":
        return cls._create(
            cls.Denied,
            id=request_id,
            call_type=call_type,
            key_hash=key_hash,
            end_user=end_user,
            model_group=model_group,
            status_code=status_code,
            error_type=error_type,
            code=code,
            reason=reason,
            principal=principal,
            decision=decision,
        )

    def __init__(self, call_type: str, key_hash: str, model_group: str) -> None:
        # Both creation events carry these; Denied.apply then closes the record.
        self.call_type = call_type
        self.key_hash = key_hash
        self.model_group = model_group
        self.attempts = 0
        self.outcome: str | None = None
        self.cost = Decimal(0)
        self.tokens = 0  # prompt and completion tokens of the outcome
        self.deployment_id = ""
        self.provider = ""  # the provider that served the call, once it has

    def record_attempt_failure(
        self,
        *,
        deployment_id: str,
        provider: str,
        provider_model: str,
        status_code: int,
        error_type: str,
        reason: str,
        latency_ms: float,
    ) -> None:
        self._require_open()
        self.trigger_event(
            self.AttemptFailed,
            attempt=self.attempts + 1,
            deployment_id=deployment_id,
            provider=provider,
            provider_model=provider_model,
            status_code=status_code,
            error_type=error_type,
            reason=reason,
            latency_ms=latency_ms,
        )

    def complete(
        self,
        *,
        deployment_id: str,
        provider: str,
        provider_model: str,
        usage: Usage,
        cost: Decimal,
        price_source: str,
        latency_ms: float,
        first_token_ms: float | None = None,
        finish_reason: str | None = None,
        askii: Decimal | None = None,
        askii_rate: Decimal | None = None,
    ) -> None:
        self._require_open()
        self.trigger_event(
            self.Completed,
            deployment_id=deployment_id,
            provider=provider,
            provider_model=provider_model,
            usage=usage.as_event_fields(),
            cost=cost,
            price_source=price_source,
            latency_ms=latency_ms,
            first_token_ms=first_token_ms,
            finish_reason=finish_reason,
            askii=askii,
            askii_rate=askii_rate,
        )

    def interrupt(
        self,
        *,
        deployment_id: str,
        provider: str,
        provider_model: str,
        usage: Usage,
        cost: Decimal,
        price_source: str,
        latency_ms: float,
        first_token_ms: float | None,
        usage_estimated: bool,
        cause: str = "client_disconnected",
        error_type: str | None = None,
        status_code: int | None = None,
        askii: Decimal | None = None,
        askii_rate: Decimal | None = None,
    ) -> None:
        self._require_open()
        self.trigger_event(
            self.Interrupted,
            deployment_id=deployment_id,
            provider=provider,
            provider_model=provider_model,
            usage=usage.as_event_fields(),
            cost=cost,
            price_source=price_source,
            latency_ms=latency_ms,
            first_token_ms=first_token_ms,
            finish_reason=None,
            usage_estimated=usage_estimated,
            cause=cause,
            error_type=error_type,
            status_code=status_code,
            askii=askii,
            askii_rate=askii_rate,
        )

    def add_usage(self, *, response_id: str, usage: Usage, cost: Decimal, price_source: str) -> None:
        self._require_open()
        self.trigger_event(self.UsageAdded, response_id=response_id, usage=usage.as_event_fields(), cost=cost,
                           price_source=price_source)

    def overrun(self, *, reserved: Decimal, charged: Decimal, reason: str) -> None:
        self.trigger_event(self.BudgetOverrun, reserved=reserved, charged=charged, reason=reason)

    def serve_from_cache(self, *, cache_key: str, filled_by: str, usage: Usage, latency_ms: float,
                         finish_reason: str | None = None) -> None:
        self._require_open()
        self.trigger_event(self.CacheHit, cache_key=cache_key, filled_by=filled_by, usage=usage.as_event_fields(),
                           cost=Decimal(0), latency_ms=latency_ms, finish_reason=finish_reason)

    def fail(self, *, status_code: int, error_type: str, reason: str) -> None:
        self._require_open()
        self.trigger_event(self.Failed, status_code=status_code, error_type=error_type, reason=reason)

    def abandon(self, *, instance: str, reason: str) -> None:
        self._require_open()
        self.trigger_event(self.Abandoned, deployment_id=self.deployment_id, instance=instance, reason=reason)

    @property
    def is_open(self) -> bool:
        return self.outcome is None

    def _require_open(self) -> None:
        if not self.is_open:
            raise ValueError(f"request {self.id} is already {self.outcome}")


def _settled_before_askii(state: dict[str, Any]) -> None:
    state.setdefault("askii", None)
    state.setdefault("askii_rate", None)
