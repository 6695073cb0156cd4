"""What every management command needs: the ledger's access streams, the in-memory directory,
the clock, and the rules of who may do what."""
from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Callable, Protocol, TypeVar
from uuid import UUID

from moneta.application.access_directory import Directory
from moneta.application.principal import Principal
from moneta.domain.access import AccessEntity, Budget, Customer, Organization, Team, User, entity_id
from moneta.domain.errors import NotFoundError, PermissionDeniedError

E = TypeVar("E", bound=AccessEntity)


class AccessStore(Protocol):
    def get(self, aggregate_id: UUID) -> AccessEntity | None:
        """The entity at its latest version, or None."""
        ...

    def save(self, *entities: AccessEntity) -> None:
        """Commits their new events at once; ConflictError when one of them was created or changed
        by someone else meanwhile. Returns once the access view shows the change (or a few seconds
        passed), so that every worker can find it from then on."""
        ...


class AccessView(Protocol):
    def shows(self, versions: dict[str, str]) -> bool:
        """True once the access view shows each stream (by id) at its `updated_at` or later."""
        ...


class SpendTotals(Protocol):
    def total_spend(self, column: str, value: str) -> Decimal:
        """All the spend of one key (`api_key`), team (`team_id`), user (`user_id`) or end user (`end_user`)."""
        ...


VISIBLE_WITHIN_S = 5.0


@dataclass
class Context:
    """`view` is None where no read side runs (then only this process sees a change at once)."""

    store: AccessStore
    directory: Directory
    clock: Callable[[], datetime]
    view: AccessView | None = None
    spend_totals: SpendTotals | None = None

    def spend(self, column: str, value: str) -> Decimal | None:
        """None where no read side runs."""
        return None if self.spend_totals is None else self.spend_totals.total_spend(column, value)

    def load(self, entity: type[E], name: str, what: str) -> E:
        """The live entity named `name` (404 naming `what` when missing or deleted)."""
        found = self.store.get(entity_id(entity.kind, name))
        if found is None or found.is_deleted:
            raise NotFoundError(f"{what} {name!r} does not exist.", param=_param(entity))
        return found  # type: ignore[return-value]

    def live(self, kind: str, name: str | None) -> dict[str, Any] | None:
        """The entity's state unless it does not exist or was deleted: from this worker's directory,
        else from the ledger (a change made through another server a moment ago)."""
        if not name:
            return None
        found = self.directory.live(kind, name)
        if found is None:
            stored = self.store.get(entity_id(KINDS[kind].kind, name))
            if stored is not None and not stored.is_deleted:
                self.directory.put(kind, name, stored.state)
                found = self.directory.live(kind, name)
        return found

    def exists(self, entity: type[AccessEntity], name: str) -> bool:
        return self.store.get(entity_id(entity.kind, name)) is not None

    def commit(self, *entities: AccessEntity) -> None:
        """Records the changes, shows them to this worker at once, and waits (a few seconds at
        most) until the access view shows them, so that every worker finds them from then on."""
        self.store.save(*entities)
        for entity in entities:
            self.directory.put(entity.kind, name_of(entity), entity.state)
        if self.view is not None:
            self._wait_visible({str(entity.id): entity.state["updated_at"] for entity in entities})

    def _wait_visible(self, versions: dict[str, str]) -> None:
        deadline = time.monotonic() + VISIBLE_WITHIN_S
        delay = 0.005
        while not self.view.shows(versions) and time.monotonic() < deadline:  # type: ignore[union-attr]
            time.sleep(delay)
            delay = min(delay * 2, 0.1)


def name_of(entity: AccessEntity) -> str:
    return str(entity.state[NAME_FIELD[entity.kind]])


KINDS = {"team": Team, "user": User, "organization": Organization, "customer": Customer, "budget": Budget}
NAME_FIELD = {"key": "key_id", "team": "team_id", "user": "user_id", "organization": "organization_id",
              "customer": "user_id", "budget": "budget_id"}


def _param(entity: type[AccessEntity]) -> str:
    return NAME_FIELD[entity.kind]


# -- who may do what --------------------------------------------------------------------------------

def require_admin(principal: Principal, action: str) -> None:
    if not principal.writes_everything:
        raise PermissionDeniedError(f"Only a proxy admin can {action}.", code="not_allowed")


def require_reader(principal: Principal, action: str) -> None:
    if not principal.reads_everything:
        raise PermissionDeniedError(f"Only a proxy admin or a proxy admin viewer can {action}.", code="not_allowed")


def is_team_admin(principal: Principal, team: dict[str, Any]) -> bool:
    member = (team.get("members") or {}).get(principal.user_id) if principal.user_id else None
    return bool(member) and member.get("role") == "admin" and principal.role == "internal_user"


def is_team_member(principal: Principal, team: dict[str, Any]) -> bool:
    return bool(principal.user_id) and principal.user_id in (team.get("members") or {})


def manages_team(principal: Principal, team: dict[str, Any], action: str) -> None:
    if not (principal.writes_everything or is_team_admin(principal, team)):
        raise PermissionDeniedError(f"Only a proxy admin or an admin of team {team.get('team_id')!r} can {action}.",
                                    code="not_allowed")


def reads_team(principal: Principal, team: dict[str, Any]) -> None:
    if not (principal.reads_everything or is_team_member(principal, team)):
        raise PermissionDeniedError(f"You are not a member of team {team.get('team_id')!r}.", code="not_allowed")


def public(state: dict[str, Any]) -> dict[str, Any]:
    """An entity's state as the API shows it (the bookkeeping flag `deleted` left out)."""
    return {name: value for name, value in state.items() if name != "deleted"}
