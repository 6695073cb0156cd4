"""Who may use the gateway: virtual keys, teams, users, organizations, customers (end users) and
reusable budgets, each a low-traffic stream of its own in the ledger.

Every change is an event carrying who made it (`actor`, never a secret). An entity's state is a
plain dict built by `evolve`, the one fold of its events: the aggregate applies it on the write
side and the access projection applies it to its rows, so both always agree.
"""
from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta
from typing import Any, ClassVar

from eventsourcing.domain import Aggregate

PROXY_ADMIN = "proxy_admin"
PROXY_ADMIN_VIEWER = "proxy_admin_viewer"
INTERNAL_USER = "internal_user"
INTERNAL_USER_VIEWER = "internal_user_viewer"
USER_ROLES = (PROXY_ADMIN, PROXY_ADMIN_VIEWER, INTERNAL_USER, INTERNAL_USER_VIEWER)
MEMBER_ROLES = ("admin", "user")
ORG_ROLES = ("org_admin", "internal_user", "internal_user_viewer")

_NAMESPACE = uuid.UUID("6d6f6e65-7461-2d61-6363-657373000000")


def entity_id(kind: str, name: str) -> uuid.UUID:
    """The stream of the team, user, organization, customer or budget named `name`: creating one
    twice collides in the ledger, so an id is never taken twice, even by two workers at once."""
    return uuid.uuid5(_NAMESPACE, f"{kind}:{name}")


# -- durations ("30s", "10m", "24h", "30d", "2w", "1mo") ------------------------------------------

_DURATION = re.compile(r"^\s*(\d+)\s*(s|m|h|d|w|mo)\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "mo": 30 * 86400}


def duration_seconds(text: str) -> int:
    """LiteLLM's durations; a month counts as 30 days. ValueError for anything else."""
    match = _DURATION.match(text) if isinstance(text, str) else None
    if match is None or int(match.group(1)) <= 0:
        raise ValueError("a duration is a positive whole number followed by s, m, h, d, w or mo (e.g. '30d')")
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def expiry(duration: str | None, now: datetime) -> str | None:
    return None if duration is None else (now + timedelta(seconds=duration_seconds(duration))).isoformat()


# -- the fold --------------------------------------------------------------------------------------

def evolve(state: dict[str, Any], change: str, payload: dict[str, Any], at: datetime) -> dict[str, Any]:
    """The state after one change; `state` is not modified."""
    new = dict(state)
    new["updated_at"] = at.isoformat()
    if change == "created":
        new = {**payload["fields"], "blocked": bool(payload["fields"].get("blocked", False)), "deleted": False,
               "created_at": at.isoformat(), "updated_at": at.isoformat(), "created_by": payload["actor"]}
    elif change == "updated":
        new.update(payload["changes"])
    elif change == "regenerated":
        new.update(payload["changes"], token=payload["token"], key_name=payload["key_name"])
    elif change in ("blocked", "unblocked"):
        new["blocked"] = change == "blocked"
    elif change == "deleted":
        new["deleted"] = True
    elif change in ("member_added", "member_updated"):
        members = dict(new.get("members") or {})
        members[payload["user_id"]] = {**members.get(payload["user_id"], {}), **payload["member"]}
        new["members"] = members
    elif change == "member_removed":
        new["members"] = {k: v for k, v in (new.get("members") or {}).items() if k != payload["user_id"]}
    new["updated_by"] = payload["actor"]
    return new


class _Change(Aggregate.Event):
    """Mixed into each event: applies itself through `evolve`."""

    change: ClassVar[str]
    actor: str

    def payload(self) -> dict[str, Any]:
        return {name: value for name, value in self.__dict__.items()
                if name not in ("originator_id", "originator_version", "timestamp", "originator_topic")}

    def apply(self, aggregate: "AccessEntity") -> None:
        aggregate.state = evolve(getattr(aggregate, "state", {}), self.change, self.payload(), self.timestamp)  # type: ignore[attr-defined]


class _Created(Aggregate.Created, _Change):
    change = "created"
    fields: dict[str, Any]


class _Updated(_Change):
    change = "updated"
    changes: dict[str, Any]


class _Blocked(_Change):
    change = "blocked"


class _Unblocked(_Change):
    change = "unblocked"


class _Deleted(_Change):
    change = "deleted"


class _MemberAdded(_Change):
    change = "member_added"
    user_id: str
    member: dict[str, Any]


class _MemberUpdated(_MemberAdded):
    change = "member_updated"


class _MemberRemoved(_Change):
    change = "member_removed"
    user_id: str


class AccessEntity(Aggregate):
    """Its events are named as LiteLLM users would look for them (KeyGenerated, TeamMemberAdded, ...)."""

    kind: ClassVar[str]
    first_event: ClassVar[str]  # the name of its created event

    def __init__(self, fields: dict[str, Any], actor: str) -> None:
        self.state = evolve({}, "created", {"fields": fields, "actor": actor}, self.created_on)

    @classmethod
    def create(cls, aggregate_id: uuid.UUID, fields: dict[str, Any], actor: str) -> "AccessEntity":
        return cls._create(getattr(cls, cls.first_event), id=aggregate_id, fields=fields, actor=actor)

    @property
    def is_deleted(self) -> bool:
        return bool(self.state.get("deleted"))

    def record(self, event_class: type, **fields: Any) -> None:
        self.trigger_event(event_class, **fields)


class VirtualKey(AccessEntity):
    kind = "key"

    class KeyGenerated(_Created):
        pass

    class KeyUpdated(_Updated):
        pass

    class KeyRegenerated(_Change):
        change = "regenerated"
        token: str  # the new key's hash
        key_name: str
        changes: dict[str, Any]

    class KeyBlocked(_Blocked):
        pass

    class KeyUnblocked(_Unblocked):
        pass

    class KeyDeleted(_Deleted):
        pass

    first_event = "KeyGenerated"


class Team(AccessEntity):
    kind = "team"

    class TeamCreated(_Created):
        pass

    class TeamUpdated(_Updated):
        pass

    class TeamBlocked(_Blocked):
        pass

    class TeamUnblocked(_Unblocked):
        pass

    class TeamDeleted(_Deleted):
        pass

    class TeamMemberAdded(_MemberAdded):
        pass

    class TeamMemberUpdated(_MemberUpdated):
        pass

    class TeamMemberRemoved(_MemberRemoved):
        pass

    first_event = "TeamCreated"


class User(AccessEntity):
    kind = "user"

    class UserCreated(_Created):
        pass

    class UserUpdated(_Updated):
        pass

    class UserDeleted(_Deleted):
        pass

    first_event = "UserCreated"


class Organization(AccessEntity):
    kind = "organization"

    class OrganizationCreated(_Created):
        pass

    class OrganizationUpdated(_Updated):
        pass

    class OrganizationDeleted(_Deleted):
        pass

    class OrganizationMemberAdded(_MemberAdded):
        pass

    class OrganizationMemberRemoved(_MemberRemoved):
        pass

    first_event = "OrganizationCreated"


class Customer(AccessEntity):
    kind = "customer"

    class CustomerCreated(_Created):
        pass

    class CustomerUpdated(_Updated):
        pass

    class CustomerBlocked(_Blocked):
        pass

    class CustomerUnblocked(_Unblocked):
        pass

    class CustomerDeleted(_Deleted):
        pass

    first_event = "CustomerCreated"


class Budget(AccessEntity):
    kind = "budget"

    class BudgetCreated(_Created):
        pass

    class BudgetUpdated(_Updated):
        pass

    class BudgetDeleted(_Deleted):
        pass

    first_event = "BudgetCreated"


ENTITIES: tuple[type[AccessEntity], ...] = (VirtualKey, Team, User, Organization, Customer, Budget)
KINDS = {entity.kind: entity for entity in ENTITIES}
