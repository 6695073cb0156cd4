"""`moneta.BudgetManager`: LiteLLM's per-user budgets, kept in the ledger.

A user's budget is the end user (customer) of that name: `create_budget` records its
`max_budget` and `budget_duration` and starts its periods now (`budget_start`); `reset_cost`
records a new `budget_start`, so spend starts again from zero and no history goes. Once a
BudgetManager exists in a process, library calls naming `user=` reserve on that user's budget and
are charged to it by their own ledger records; `check_budget` / `update_spend` and `update_cost`
are for calls made elsewhere, which become ledger records of call type "manual". Reads come from
the views, caught up with the ledger by this process first.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Mapping, Sequence

from moneta import bootstrap, library
from moneta.application.budget_check import Reservation
from moneta.application.config import Deployment
from moneta.cost import completion_cost, cost_per_token
from moneta.domain.access import Customer, duration_seconds, entity_id
from moneta.domain.request_record import RequestRecord
from moneta.domain.usage import Usage
from moneta.exceptions import raising_library_errors

# LiteLLM's named durations; a month is a calendar month here (LiteLLM counts 28 days).
DURATIONS = {"daily": "1d", "weekly": "1w", "monthly": "1mo", "yearly": "12mo"}


@dataclass(frozen=True)
class BudgetReservation:
    """What `check_budget` holds for a call, until `update_spend` replaces it with its cost."""

    request_id: str
    user: str
    model: str
    reservation: Reservation

    @property
    def call(self) -> dict[str, Any]:
        """The call as the budget lets it be made (`max_tokens` capped to what is left)."""
        return self.reservation.call


class BudgetManager:
    def __init__(self, project_name: str, client_type: str = "local", api_base: str | None = None,
                 headers: dict | None = None) -> None:
        if client_type != "local":
            raise ValueError("only client_type='local' is supported: budgets live in the ledger (DATABASE_URL)")
        self.project_name = project_name
        self._side = bootstrap.library_budgets()
        self._budgets = self._side.budgets

    # -- budgets ---------------------------------------------------------------------------------

    def create_budget(self, total_budget: Any, user: str, duration: str | None = None,
                      created_at: float | None = None) -> dict[str, Any]:
        """Records the user's budget (creating the end user if new); its periods start now."""
        fields = {"max_budget": _amount(total_budget), "budget_duration": _duration(duration),
                  "budget_start": _moment(created_at)}
        self._record(user, fields, create=True)
        return {"total_budget": fields["max_budget"], "duration": fields["budget_duration"],
                "created_at": fields["budget_start"], "last_updated_at": fields["budget_start"]}

    def reset_cost(self, user: str) -> dict[str, Any]:
        """Starts a new period now (an event on the end user's stream): spend counts from zero again;
        what was spent stays in the ledger and in the lifetime total."""
        self._valid(user)
        self._record(user, {"budget_start": _moment(None)}, create=False)
        return {"user": self.get_usage(user)}

    def get_total_budget(self, user: str) -> Decimal:
        return self._valid(user)["max_budget"]

    def is_valid_user(self, user: str) -> bool:
        customer = self._budgets.customer(user)
        return customer is not None and customer.get("max_budget") is not None

    def get_users(self) -> list[str]:
        """Every end user with a budget in the ledger (made by any BudgetManager or the proxy)."""
        return [c["user_id"] for c in self._side.caught_up().customers_with_budget()]

    # -- spend -----------------------------------------------------------------------------------

    def get_usage(self, user: str) -> dict[str, Any]:
        """The budget now: its limit and period, what the ledger holds spent in the period (in all, per
        model, and over its lifetime), and what calls in flight hold."""
        customer = self._valid(user)
        status = library.in_background(self._budgets.budgets(_no_group).status("customer", user, customer))
        views = self._side.caught_up()
        since = None if status["period_start"] == "lifetime" else datetime.fromisoformat(status["period_start"])
        return {"user": user, "total_budget": status["max_budget"], "duration": customer.get("budget_duration"),
                "period_start": status["period_start"], "budget_reset_at": status["budget_reset_at"],
                "current_cost": views.spend(status["scope"], status["period_start"]), "reserved": status["reserved"],
                "lifetime_cost": views.spend(status["scope"], "lifetime"),
                "model_cost": views.by_model(user, since)}

    def get_current_cost(self, user: str) -> Decimal:
        return self.get_usage(user)["current_cost"]

    def get_model_cost(self, user: str) -> dict[str, Decimal]:
        return self.get_usage(user)["model_cost"]

    def projected_cost(self, model: str, messages: Sequence[dict[str, Any]], user: str) -> Decimal:
        """The user's spend in the period plus the prompt's cost (LiteLLM's)."""
        prompt, _ = cost_per_token(model=model, prompt_tokens=library.token_counter(model=model, messages=messages))
        return self.get_current_cost(user) + prompt

    # -- reservations and charges ----------------------------------------------------------------

    @raising_library_errors
    def check_budget(self, user: str, model: str, messages: Sequence[dict[str, Any]] | None = None,
                     max_tokens: int | None = None, **params: Any) -> BudgetReservation:
        """Reserves the call's largest possible cost on the user's budget (moneta.BudgetExceededError
        when it does not fit), for a call made outside moneta; `update_spend` settles it."""
        self._valid(user)
        call = {"model": model, "messages": list(messages or []), **params}
        if max_tokens:
            call["max_tokens"] = max_tokens
        request_id = str(uuid.uuid4())
        reservation = library.in_background(self._budgets.reserve(request_id, user, "chat", call, _group))
        return BudgetReservation(request_id, user, model, reservation)

    def update_spend(self, reservation: BudgetReservation, response: Mapping[str, Any]) -> dict[str, Any]:
        """Replaces the reservation with the call's cost, recorded in the ledger; a moneta call that
        named the user charged itself already, and its reservation is only freed."""
        if _made_by_moneta(response, reservation.user):
            library.in_background(self._budgets.release(reservation.request_id, reservation.reservation))
        else:
            usage, cost = Usage.from_openai(response.get("usage")), completion_cost(response, model=reservation.model)
            library.in_background(self._settle(reservation, usage, cost))
        return {"user": self.get_usage(reservation.user)}

    def update_cost(self, user: str, completion_obj: Mapping[str, Any] | None = None, model: str | None = None,
                    input_text: str | None = None, output_text: str | None = None) -> dict[str, Any]:
        """Charges a call already made to the user's budget (LiteLLM's): its response, or its model and
        texts. A moneta call that named the user is in the ledger already: nothing is added."""
        self._valid(user)
        if completion_obj is not None and _made_by_moneta(completion_obj, user):
            return {"user": self.get_usage(user)}
        if model and input_text is not None and output_text is not None:
            usage = Usage(prompt_tokens=library.token_counter(model=model, messages=[{"role": "user",
                                                                                      "content": input_text}]),
                          completion_tokens=library.token_counter(model=model, text=output_text))
            cost = sum(cost_per_token(model=model, prompt_tokens=usage.prompt_tokens,
                                      completion_tokens=usage.completion_tokens), Decimal(0))
        elif completion_obj is not None:
            model = model or str(completion_obj.get("model") or "")
            usage, cost = Usage.from_openai(completion_obj.get("usage")), completion_cost(completion_obj, model=model)
        else:
            raise ValueError("update_cost needs completion_obj, or model with input_text and output_text")
        library.in_background(self._charge_after(user, model, usage, cost))
        return {"user": self.get_usage(user)}

    async def _settle(self, held: BudgetReservation, usage: Usage, cost: Decimal) -> None:
        record = _manual_record(held.request_id, held.user, held.model, {"budget": held.reservation.as_event()})
        _complete(record, held.model, usage, cost)
        self._budgets.settler(held.request_id, held.reservation)(record)
        await bootstrap.library_container().ledger.record(record)

    async def _charge_after(self, user: str, model: str, usage: Usage, cost: Decimal) -> None:
        request_id = str(uuid.uuid4())
        seen = await self._budgets.charge_after(request_id, user, model, cost)
        record = _manual_record(request_id, user, model, {"budget": seen} if seen else {})
        _complete(record, model, usage, cost)
        await bootstrap.library_container().ledger.record(record)

    # -- the end user's stream -------------------------------------------------------------------

    def _valid(self, user: str) -> dict[str, Any]:
        customer = self._budgets.customer(user)
        if customer is None or customer.get("max_budget") is None:
            raise KeyError(f"{user!r} has no budget (create_budget first)")
        return customer

    def _record(self, user: str, fields: dict[str, Any], create: bool) -> None:
        access = bootstrap.library_container().access
        actor = f"budget_manager:{self.project_name}"
        customer = access.store.get(entity_id("customer", user))
        if customer is None and create:
            customer = Customer.create(entity_id("customer", user), {"user_id": user, **fields}, actor)
        elif customer is None or customer.is_deleted:
            raise KeyError(f"the end user {user!r} does not exist (or was deleted: an id is never reused)")
        else:
            customer.record(Customer.CustomerUpdated, changes=fields, actor=actor)
        access.commit(customer)


def _manual_record(request_id: str, user: str, model: str, decision: dict[str, Any]) -> RequestRecord:
    return RequestRecord.admit(uuid.UUID(request_id), call_type="manual", key_hash="", end_user=user,
                               model_group=model, stream=False, decision=decision,
                               instance=bootstrap.library_container().instance)


def _complete(record: RequestRecord, model: str, usage: Usage, cost: Decimal) -> None:
    provider = model.split("/", 1)[0] if "/" in model else ""
    askii, askii_rate = bootstrap.library_container().askii.settle(cost, datetime.now(UTC))
    record.complete(deployment_id="manual", provider=provider, provider_model=model, usage=usage, cost=cost,
                    price_source="manual", latency_ms=0.0, askii=askii, askii_rate=askii_rate)


def _made_by_moneta(response: Any, user: str) -> bool:
    """True for a moneta response charged to `user`; ValueError for one charged to nobody (its cost
    is in the ledger already: charging it again would count it twice)."""
    hidden = getattr(response, "_hidden_params", None) or {}
    if not hidden.get("request_id"):
        return False
    if hidden.get("end_user") != user:
        raise ValueError(f"this moneta call was not made for {user!r}: pass user={user!r} to moneta.completion, "
                         "which charges the call to the budget itself")
    return True


def _group(model: str) -> Sequence[Deployment]:
    """The model's deployments, to price a call made elsewhere: the config's group, else `provider/model`."""
    return library._gateway(model, {}, None).router.group(model)


def _no_group(model: str) -> Sequence[Deployment]:
    return ()


def _amount(value: Any) -> Decimal:
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"total_budget is not a number: {value!r}") from None
    if not amount.is_finite() or amount < 0:
        raise ValueError(f"total_budget must be a number of USD, 0 or more: {value!r}")
    return amount


def _duration(duration: str | None) -> str | None:
    if duration is None:
        return None
    duration = DURATIONS.get(duration, duration)
    duration_seconds(duration)  # ValueError for anything else
    return duration


def _moment(epoch: float | None) -> str:
    return (datetime.fromtimestamp(epoch, UTC) if epoch is not None else datetime.now(UTC)).isoformat()
