"""The access view held in memory in every worker: keys by their hash, and the teams, users,
organizations, customers and budgets they point to.

Authentication reads it without I/O. It is fed by `apply` with rows of the access projection
(a poller in each worker reads what changed), and by the worker's own management commands the
moment they commit, so a worker sees its own changes at once and every other one within the
poll interval plus the projection's lag.
"""
from __future__ import annotations

from decimal import Decimal
from typing import Any, Iterable, Iterator

MONEY_FIELDS = ("max_budget", "soft_budget", "max_budget_in_team")


class Directory:
    def __init__(self) -> None:
        self._entities: dict[str, dict[str, dict[str, Any]]] = {
            kind: {} for kind in ("key", "team", "user", "organization", "customer", "budget")}
        self._by_token: dict[str, dict[str, Any]] = {}
        self.revision = 0  # the highest projection revision applied
        self.version = 0  # counts the changes taken: what is derived from the directory may be kept until it moves

    def apply(self, rows: Iterable[dict[str, Any]]) -> None:
        """Rows of the access projection: kind, name, token, data, revision."""
        for row in rows:
            self.put(row["kind"], row["name"], row["data"])
            self.revision = max(self.revision, int(row["revision"]))

    def put(self, kind: str, name: str, data: dict[str, Any]) -> None:
        """Takes `data` unless what is held is newer (a poll that read the view just before this
        worker's own change reached it)."""
        previous = self._entities[kind].get(name)
        if previous is not None and previous.get("updated_at", "") > data.get("updated_at", ""):
            return
        data = with_money(data)
        self.version += 1
        if kind == "key" and previous is not None and previous.get("token") != data.get("token"):
            self._by_token.pop(previous.get("token"), None)  # regenerated: the old hash no longer opens it
        self._entities[kind][name] = data
        if kind == "key" and data.get("token"):
            self._by_token[data["token"]] = data

    def key_by_token(self, token: str) -> dict[str, Any] | None:
        return self._by_token.get(token)

    def get(self, kind: str, name: str | None) -> dict[str, Any] | None:
        return self._entities[kind].get(name) if name else None

    def live(self, kind: str, name: str | None) -> dict[str, Any] | None:
        """The entity unless it does not exist or was deleted."""
        found = self.get(kind, name)
        return None if found is None or found.get("deleted") else found

    def all(self, kind: str) -> Iterator[dict[str, Any]]:
        return (entity for entity in self._entities[kind].values() if not entity.get("deleted"))

    def teams_of(self, user_id: str) -> list[dict[str, Any]]:
        return [team for team in self.all("team") if user_id in (team.get("members") or {})]

    def keys_where(self, **equal: Any) -> list[dict[str, Any]]:
        return [key for key in self.all("key") if all(key.get(field) == value for field, value in equal.items())]

    def alias_taken(self, key_alias: str, except_key: str | None = None) -> bool:
        return any(key.get("key_alias") == key_alias and key.get("key_id") != except_key for key in self.all("key"))


def with_money(data: dict[str, Any]) -> dict[str, Any]:
    """Money fields as Decimal (the projection stores them as JSON text)."""
    fixed = dict(data)
    for field in MONEY_FIELDS:
        if fixed.get(field) is not None and not isinstance(fixed[field], Decimal):
            fixed[field] = Decimal(str(fixed[field]))
    members = fixed.get("members")
    if members:
        fixed["members"] = {user: with_money(member) for user, member in members.items()}
    return fixed
