"""Budgets as they stood at a past moment, computed from the events up to it (not from the views).

The ledger is read in order up to `at`: the events of keys, teams, users, organizations, customers
and reusable budgets are folded (`domain.access.evolve`) into their state then, which gives each
scope's budget line as the gateway computed it (`entity_line`: limit, soft limit, period); the
requests' Admitted events name the budgets each call reserved on, with their period, and its
outcome charges its cost there, as the budget view does. A reservation is in flight at `at` when
its call was admitted by then, had not ended by then, and its lease (`LEASE_S`) had not lapsed.

Memory holds the entities, the spend per scope and period, and the calls open at the point read.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import MAX_PREC, Decimal, localcontext
from typing import Any

from moneta.application.access_directory import Directory, with_money
from moneta.application.audit_window import stamped_until
from moneta.application.budget_check import BudgetSettings, entity_line
from moneta.domain.access import ENTITIES, AccessEntity, evolve
from moneta.domain.budgets import LEASE_S, BudgetLine, from_nanos
from moneta.domain.errors import BadRequestError, NotFoundError
from moneta.domain.request_record import RequestRecord

# scope prefix -> the directory's kind, and the field that names an entity of that kind
KINDS = {"key": "key", "team": "team", "user": "user", "org": "organization", "customer": "customer"}
_NAME_FIELD = {"key": "key_id", "team": "team_id", "user": "user_id", "organization": "organization_id",
               "customer": "user_id", "budget": "budget_id"}
_ENDINGS = (RequestRecord.Completed, RequestRecord.CacheHit, RequestRecord.Failed, RequestRecord.Abandoned)
EVENT_TYPES = (AccessEntity.Event, RequestRecord.Admitted, *_ENDINGS)
_LEASE = timedelta(seconds=LEASE_S)


def parse_scope(text: str) -> tuple[str, str]:
    """`key:<hash or alias>`, `team:<id>`, `user:<id>`, `org:<id>` or `customer:<id>` -> (prefix, name)."""
    prefix, _, name = text.partition(":")
    if prefix not in KINDS or not name:
        raise BadRequestError("scope must be key:<key hash or alias>, team:<id>, user:<id>, org:<id> or "
                              "customer:<id>", param="scope", code="invalid_scope")
    return prefix, name


@dataclass
class _Call:
    scopes: list[dict[str, Any]]
    reserved: Decimal
    admitted_at: datetime


class BudgetsAt:
    """Feed it the ledger's events in order (`read`), then ask for a scope or all of them."""

    def __init__(self, at: datetime, settings: BudgetSettings) -> None:
        self.at = at
        self.settings = settings
        self.position = 0  # the last event taken (stamped at or before `at`)
        self._directory = Directory()
        self._states: dict[str, tuple[str, dict[str, Any]]] = {}  # stream -> (kind, state)
        self._named: dict[tuple[str, str], dict[str, Any]] = {}  # (kind, name) -> state
        self._spend: dict[tuple[str, str], Decimal] = {}  # (scope, period) -> spend
        self._calls: dict[tuple[str, str], int] = {}
        self._open: dict[str, _Call] = {}

    def read(self, pages: Iterable[Sequence[tuple[int, Any]]]) -> "BudgetsAt":
        with localcontext() as context:
            context.prec = MAX_PREC  # sums of money are exact
            for position, event in stamped_until(pages, self.at):
                self._take(event)
                self.position = max(self.position, position)
        return self

    def _take(self, event: Any) -> None:
        if isinstance(event, AccessEntity.Event):
            self._fold(event)
        elif isinstance(event, RequestRecord.Admitted):
            budget = (event.decision or {}).get("budget")
            if budget and budget.get("scopes"):
                self._open[str(event.originator_id)] = _Call(budget["scopes"], Decimal(budget["reserved"]),
                                                             event.timestamp)
        else:
            self._end(event)

    def _fold(self, event: Any) -> None:
        stream = str(event.originator_id)
        kind, state = self._states.get(stream) or (_kind(event), {})
        state = evolve(state, event.change, event.payload(), event.timestamp)
        self._states[stream] = (kind, state)
        name = state.get(_NAME_FIELD[kind])
        if name:
            self._named[kind, str(name)] = state
            if kind == "budget":  # the reusable budgets entity_line looks up
                self._directory.put(kind, str(name), state)

    def _end(self, event: Any) -> None:
        call = self._open.pop(str(event.originator_id), None)
        if call is None:
            return
        cost = event.cost if isinstance(event, (RequestRecord.Completed, RequestRecord.CacheHit)) else Decimal(0)
        for line in call.scopes:
            key = (line["scope"], line["period"])
            self._spend[key] = self._spend.get(key, Decimal(0)) + cost
            self._calls[key] = self._calls.get(key, 0) + 1

    # -- answers ---------------------------------------------------------------------------------

    def scope(self, text: str) -> dict[str, Any]:
        prefix, name = parse_scope(text)
        entity = self._entity(prefix, name, given=True)
        if entity is not None:
            name = str(entity[_NAME_FIELD[KINDS[prefix]]])
        elif prefix == "key" or not self._recorded(f"{prefix}:{name}"):
            raise NotFoundError(f"{text} is not in the ledger at {self.at.isoformat()}", param="scope",
                                code="scope_not_found")
        return self._answer(prefix, name, entity)

    def every_scope(self) -> list[dict[str, Any]]:
        """Every key, team, user, organization and customer with a budget at `at`, and every such
        scope that calls were charged or held on by then."""
        scopes: dict[str, tuple[str, str, dict[str, Any] | None]] = {}
        for prefix, kind in KINDS.items():
            for entity in self._of_kind(kind):
                name = str(entity[_NAME_FIELD[kind]])
                if not entity.get("deleted") and self._line(prefix, name, entity) is not None:
                    scopes[f"{prefix}:{name}"] = (prefix, name, entity)
        charged = {scope for scope, _ in self._spend} | {line["scope"] for call in self._open.values()
                                                         for line in call.scopes}
        for scope in charged - set(scopes):
            prefix, _, name = scope.partition(":")
            if prefix in KINDS:
                scopes[scope] = (prefix, name, self._entity(prefix, name))
        return [self._answer(*scopes[scope]) for scope in sorted(scopes)]

    def _of_kind(self, kind: str) -> list[dict[str, Any]]:
        """Deleted ones too: a deleted key still had its budget and spend."""
        return [state for of, state in self._states.values() if of == kind]

    def _entity(self, prefix: str, name: str, given: bool = False) -> dict[str, Any] | None:
        """The entity a scope names; `given` by a caller, a key may be named by its hash or alias."""
        kind = KINDS[prefix]
        found = self._named.get((kind, name))
        if found is None and given and prefix == "key":
            keys = [key for key in self._of_kind("key") if name in (key.get("token"), key.get("key_alias"))]
            found = min(keys, key=lambda key: bool(key.get("deleted")), default=None)  # a live one first
        if found is None and prefix == "customer" and self.settings.end_user_budget_id:  # the default budget
            return {"user_id": name, "budget_id": self.settings.end_user_budget_id}
        return found

    def _line(self, prefix: str, name: str, entity: dict[str, Any] | None) -> BudgetLine | None:
        return entity_line(self._directory, self.settings, prefix, name, with_money(entity) if entity else None,
                           self.at)

    def _recorded(self, scope: str) -> bool:
        return any(key[0] == scope for key in self._spend) or any(
            line["scope"] == scope for call in self._open.values() for line in call.scopes)

    def _answer(self, prefix: str, name: str, entity: dict[str, Any] | None) -> dict[str, Any]:
        """In the budget's period at `at`; a scope without a budget then: over all its periods."""
        scope = f"{prefix}:{name}"
        line = self._line(prefix, name, entity)
        period = line.period if line is not None else None

        def counts(line_scope: str, line_period: str) -> bool:
            return line_scope == scope and (period is None or line_period == period)

        holding = [call.reserved for call in self._open.values() if self.at - call.admitted_at < _LEASE
                   and any(counts(held["scope"], held["period"]) for held in call.scopes)]
        answer: dict[str, Any] = {
            "scope": scope,
            "max_budget": None if line is None else _usd(line.limit),
            "soft_budget": None if line is None or line.soft is None else _usd(line.soft),
            "period_start": period, "budget_reset_at": None if line is None else line.resets_at,
            "spend": sum((total for key, total in self._spend.items() if counts(*key)), Decimal(0)),
            "calls": sum(n for key, n in self._calls.items() if counts(*key)),
            "reserved": sum(holding, Decimal(0)), "reservations": len(holding),
            "deleted": bool((entity or {}).get("deleted"))}
        if prefix == "key" and entity is not None:
            answer.update(key_alias=entity.get("key_alias"), token=entity.get("token"))
        return answer


def _usd(nanos: int) -> Decimal:
    """Nano-dollars as USD without trailing zeros, never in exponent form (10, not 1E+1)."""
    value = from_nanos(nanos).normalize()
    return value.quantize(Decimal(1)) if value == value.to_integral_value() else value


def _kind(event: Any) -> str:
    for entity in ENTITIES:
        if isinstance(event, entity.Event):
            return entity.kind
    raise TypeError(f"not an access event: {type(event).__qualname__}")


def budgets_at(pages: Iterable[Sequence[tuple[int, Any]]], settings: BudgetSettings, scope: str | None,
               at: datetime) -> dict[str, Any]:
    """`scope`'s budget at `at` (every scope's without one), with the moment and the last position
    read; `pages`: the ledger's events of EVENT_TYPES, in order, from the start."""
    if scope:
        parse_scope(scope)  # a bad scope is refused before the ledger is read
    found = BudgetsAt(at, settings).read(pages)
    head = {"at": at.isoformat(), "position": found.position}
    return {**head, **found.scope(scope)} if scope else {**head, "scopes": found.every_scope()}
