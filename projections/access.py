"""The access view: the current state of every key, team, user, organization, customer and
reusable budget, one row each, as `evolve` folds their events.

Each page that changes rows gives them the next `revision`, so that a worker's in-memory
directory reads only what changed since it last looked. A page costs at most three statements:
the highest revision, the rows its events touch, and one upsert of those rows.
"""
from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from moneta.domain.access import ENTITIES, AccessEntity, evolve
from moneta.projections.page import Page
from moneta.projections.view_store import ViewCursor, ViewStore, upsert_sql

TABLES = ("access_entities",)
DDL = (
    """CREATE TABLE IF NOT EXISTS access_entities (
        stream_id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        name TEXT NOT NULL,
        token TEXT,
        data {json} NOT NULL,
        revision BIGINT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS access_entities_revision ON access_entities (revision)",
    "CREATE INDEX IF NOT EXISTS access_entities_token ON access_entities (token)",
    "CREATE INDEX IF NOT EXISTS access_entities_kind_name ON access_entities (kind, name)",
)
EVENT_TYPES = tuple(event for entity in ENTITIES for event in vars(entity).values()
                    if isinstance(event, type) and issubclass(event, AccessEntity.Event))
COLUMNS = ("stream_id", "kind", "name", "token", "data", "revision")
_UPSERT = upsert_sql("access_entities", COLUMNS, key=("stream_id",))
_KIND_OF = {entity: entity.kind for entity in ENTITIES}
NAME_FIELD = {"key": "key_id", "team": "team_id", "user": "user_id", "organization": "organization_id",
              "customer": "user_id", "budget": "budget_id"}


def apply_page(cur: ViewCursor, page: Page) -> None:
    events = page.of(EVENT_TYPES)
    if not events:
        return
    revision = (cur.execute("SELECT COALESCE(MAX(revision), 0) AS r FROM access_entities").one() or {"r": 0})["r"] + 1
    rows = _read(cur, sorted({page.stream_id(event) for event in events}))
    for event in events:
        stream_id = page.stream_id(event)
        row = rows.get(stream_id) or {"stream_id": stream_id, "kind": _kind(event), "data": {}}
        row["data"] = evolve(row["data"], event.change, event.payload(), event.timestamp)
        row.update(name=str(row["data"].get(NAME_FIELD[row["kind"]], "")), token=row["data"].get("token"),
                   revision=revision)
        rows[stream_id] = row
    cur.executemany(_UPSERT, [[_stored(row, column) for column in COLUMNS] for row in rows.values()])


def _kind(event: Any) -> str:
    for entity, kind in _KIND_OF.items():
        if isinstance(event, entity.Event):
            return kind
    raise TypeError(f"not an access event: {type(event).__qualname__}")


def _read(cur: ViewCursor, stream_ids: list[str]) -> dict[str, dict[str, Any]]:
    found = cur.execute(f"SELECT {', '.join(COLUMNS)} FROM access_entities WHERE {cur.any_of('stream_id')}",
                        (stream_ids,)).all()
    for row in found:
        row["data"] = decoded(row["data"])
    return {row["stream_id"]: row for row in found}


def _stored(row: dict[str, Any], column: str) -> Any:
    return json.dumps(row["data"], default=_money) if column == "data" else row[column]


def _money(value: Any) -> str:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def decoded(data: Any) -> dict[str, Any]:
    """A row's data as stored: JSON text on SQLite, already decoded on Postgres."""
    return json.loads(data) if isinstance(data, str) else dict(data)


class AccessViewReader:
    """What the workers read of the view: what changed, one key by its hash, and whether a change
    has reached the view yet."""

    def __init__(self, store: ViewStore) -> None:
        self.store = store

    def changed_since(self, revision: int) -> list[dict[str, Any]]:
        """The rows changed after `revision`, oldest change first (kind, name, token, data, revision)."""
        return self._rows("revision > ? ORDER BY revision", (revision,))

    def key_row(self, token: str) -> dict[str, Any] | None:
        rows = self._rows("kind = 'key' AND token = ?", (token,))
        return rows[0] if rows else None

    def shows(self, versions: dict[str, str]) -> bool:
        """True once every stream (by id) shows the change made at its `updated_at`."""
        with self.store.reading() as cur:
            rows = cur.execute(f"SELECT stream_id, data FROM access_entities WHERE {cur.any_of('stream_id')}",
                               (sorted(versions),)).all()
        seen = {row["stream_id"]: decoded(row["data"]).get("updated_at") for row in rows}
        return all(seen.get(stream_id) is not None and seen[stream_id] >= at for stream_id, at in versions.items())

    def _rows(self, where: str, params: tuple[Any, ...]) -> list[dict[str, Any]]:
        with self.store.reading() as cur:
            rows = cur.execute(f"SELECT kind, name, token, data, revision FROM access_entities WHERE {where}",
                               params).all()
        for row in rows:
            row["data"] = decoded(row["data"])
        return rows
