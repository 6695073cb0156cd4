"""Replays the ledger into scratch views and compares them with the live views, row by row, at the
same position: every view must be what the ledger says it is.

The scratch place is a schema of its own on Postgres and a file of its own on SQLite, removed
afterwards. The scratch runner first catches up to the live position without holding anything;
then the live position is frozen while the scratch reaches it exactly and the tables are compared:
on Postgres by holding the live tracking row's lock (the live runner waits, requests do not), on
SQLite by a read transaction, whose WAL snapshot holds still while the gateway and the read side
go on writing (the lock there is the whole file's write lock, which would stop the ledger).

Compared: every table of every view, joined on its primary key in the database (Postgres reads the
scratch schema beside the live one; SQLite attaches the scratch file), so that only the rows that
differ come back. A value that differs only in form (decimal text "0.30" and "0.3", a time zone)
is the same value. Not compared, as nothing in the ledger decides them: `NOT_COMPARED` and
`NOT_DERIVED`.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import sqlite3
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from types import ModuleType
from typing import Any

from eventsourcing.application import Application

from moneta.projections import tracking
from moneta.projections.runner import ProjectionRunner
from moneta.projections.view_store import PostgresViewStore, SqliteViewStore, ViewCursor, ViewStore

# Tables beside the views, which the replay neither rebuilds nor compares.
NOT_COMPARED = {
    "projection_tracking": "positions and heartbeats: the position is what both sides are brought to",
    "projection_quarantine": "events a runner could not apply, with the error and time it saw then",
    "gateway_instances": "heartbeats of the serving processes, written by them, not from events",
    "budget_alert_deliveries": "the deliverer's schedule (attempts, next try, claims), not from events",
}
# Columns of compared tables that the events alone do not decide.
NOT_DERIVED = {
    "access_entities": {"revision": "numbers the pages that changed rows, so it depends on how the log was paged"},
}
_ATTACHED = "replayed"  # the scratch file, as the live SQLite connection names it
_NUMBER = re.compile(r"[+-]?\d+(\.\d*)?([eE][+-]?\d+)?")
_MOMENT = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d")


@dataclass(frozen=True)
class Difference:
    table: str
    key: dict[str, Any]
    column: str  # "(row)" when the row is on one side only
    live: Any
    replayed: Any


@dataclass
class ReplayReport:
    position: int  # where both sides were compared
    rows: dict[str, int] = field(default_factory=dict)  # rows compared per table
    differences: list[Difference] = field(default_factory=list)
    quarantined: int = 0  # events the replay itself could not apply


class _LedgerUpTo:
    """The ledger as the scratch runner sees it: its events up to `position`, none after."""

    def __init__(self, app: Application) -> None:
        self.mapper = app.mapper
        self._recorder = app.recorder
        self.position = 0

    @property
    def recorder(self) -> "_LedgerUpTo":
        return self

    def max_notification_id(self) -> int:
        return min(self._recorder.max_notification_id() or 0, self.position)

    def select_notifications(self, start: int | None, limit: int, stop: int | None = None,
                             topics: Sequence[str] = (), *, inclusive_of_start: bool = True) -> Sequence[Any]:
        stop = self.position if stop is None else min(stop, self.position)
        return self._recorder.select_notifications(start, limit, stop, topics, inclusive_of_start=inclusive_of_start)


def replay(app: Application, live: ViewStore, *, name: str, views: Sequence[ModuleType]) -> ReplayReport:
    """Rebuilds `views` from zero in a scratch place up to the live projection `name`'s position and
    compares them with the live views there."""
    ledger = _LedgerUpTo(app)
    with scratch_store(live) as (scratch, place):
        runner = ProjectionRunner(ledger, scratch, name=name, views=views)  # type: ignore[arg-type]
        runner.create_tables()
        with live.reading() as cur:
            ledger.position = tracking.read(cur, name)
        runner.catch_up()
        with _frozen(live, name, place) as (cur, position):
            ledger.position = position
            report = ReplayReport(position)
            reached = runner.catch_up()
            if reached != position:  # events the live views saw are gone from the ledger
                report.differences.append(Difference("projection_tracking", {"name": name}, "position", position,
                                                     reached))
            with scratch.reading() as replayed:
                report.quarantined = len(_quarantined(replayed, name))
                columns = {table: replayed.columns(table) for view in views for table in view.TABLES}
            for table, replayed_columns in columns.items():
                other = f'"{place}".{table}' if live.dialect == "postgres" else f"{_ATTACHED}.{table}"
                report.rows[table] = _compare(cur, live.dialect, table, other, replayed_columns, report.differences)
    return report


def _quarantined(cur: ViewCursor, name: str) -> list[dict[str, Any]]:
    return cur.execute("SELECT notification_id FROM projection_quarantine WHERE name = ?", (name,)).all()


@contextlib.contextmanager
def _frozen(live: ViewStore, name: str, place: str) -> Iterator[tuple[ViewCursor, int]]:
    """A cursor on the live views that sees them at one position, and that position; on SQLite with
    the scratch file attached."""
    if isinstance(live, PostgresViewStore):
        with live.transaction() as cur:
            yield cur, tracking.lock(cur, name)
        return
    assert isinstance(live, SqliteViewStore)
    conn = sqlite3.connect(live.path, isolation_level=None, timeout=live.busy_timeout_ms / 1000)
    try:
        conn.row_factory = sqlite3.Row
        conn.execute(f"ATTACH DATABASE ? AS {_ATTACHED}", (place,))
        conn.execute("BEGIN")
        cur = ViewCursor(conn.cursor(), live)
        yield cur, tracking.lock(cur, name)  # the first read: every later one sees the file as it was then
        conn.execute("ROLLBACK")
    finally:
        conn.close()


@contextlib.contextmanager
def scratch_store(live: ViewStore) -> Iterator[tuple[ViewStore, str]]:
    """An empty view store beside `live`, and where it is (a schema, or a file); removed afterwards."""
    if isinstance(live, PostgresViewStore):
        with _scratch_schema(live.dsn) as (schema, dsn):
            store = PostgresViewStore(dsn, check_connections=False)
            try:
                yield store, schema
            finally:
                store.close()
        return
    assert isinstance(live, SqliteViewStore)
    with tempfile.TemporaryDirectory(prefix="moneta-replay-", dir=os.path.dirname(live.path)) as directory:
        path = os.path.join(directory, "views.db")
        yield SqliteViewStore(path), path


@contextlib.contextmanager
def _scratch_schema(dsn: str) -> Iterator[tuple[str, str]]:
    import psycopg
    from psycopg import conninfo, sql

    schema = f"moneta_replay_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    try:
        options = conninfo.conninfo_to_dict(dsn).get("options") or ""
        yield schema, conninfo.make_conninfo(dsn, options=f"{options} -c search_path={schema}".strip())
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


# -- comparing ------------------------------------------------------------------------------------

def _compare(cur: ViewCursor, dialect: str, table: str, other: str, replayed_columns: set[str],
             differences: list[Difference]) -> int:
    """Compares the live `table` with its replayed copy `other` on their primary key, the database
    picking the rows that differ; returns how many live rows there are."""
    key = _primary_key(cur, dialect, table)
    skipped = NOT_DERIVED.get(table, {})
    live_columns = cur.columns(table)
    for column in sorted((live_columns ^ replayed_columns) - skipped.keys()):
        differences.append(Difference(table, {}, column, column in live_columns, column in replayed_columns))
    columns = sorted((live_columns & replayed_columns) - skipped.keys())
    distinct = "IS DISTINCT FROM" if dialect == "postgres" else "IS NOT"
    on = " AND ".join(f"a.{c} = b.{c}" for c in key)
    changed = " OR ".join(f"a.{c} {distinct} b.{c}" for c in columns if c not in key) or "1 = 0"
    picked = ", ".join([f"{side}.{c} AS {side}{i}" for side in "ab" for i, c in enumerate(columns)])
    for row in cur.execute(f"SELECT {picked} FROM {table} a LEFT JOIN {other} b ON {on}"
                           f" WHERE b.{key[0]} IS NULL OR {changed}").all():
        live = {c: row[f"a{i}"] for i, c in enumerate(columns)}
        found = {c: row[f"b{i}"] for i, c in enumerate(columns)}
        row_key = {c: live[c] for c in key}
        if found[key[0]] is None:
            differences.append(Difference(table, row_key, "(row)", "present", "absent"))
            continue
        differences += [Difference(table, row_key, c, live[c], found[c]) for c in columns
                        if canonical(live[c]) != canonical(found[c])]
    only_replayed = cur.execute(f"SELECT {', '.join(f'b.{c} AS {c}' for c in key)} FROM {other} b"
                                f" LEFT JOIN {table} a ON {on} WHERE a.{key[0]} IS NULL").all()
    differences += [Difference(table, row, "(row)", "absent", "present") for row in only_replayed]
    return int(cur.execute(f"SELECT COUNT(*) AS n FROM {table}").one()["n"])  # type: ignore[index]


def _primary_key(cur: ViewCursor, dialect: str, table: str) -> list[str]:
    if dialect == "postgres":
        rows = cur.execute(
            "SELECT a.attname AS name FROM pg_index i"
            " JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)"
            " WHERE i.indrelid = to_regclass(?) AND i.indisprimary"
            " ORDER BY array_position(i.indkey::int2[], a.attnum)", (table,)).all()
    else:
        rows = cur.execute("SELECT name FROM pragma_table_info(?) WHERE pk > 0 ORDER BY pk", (table,)).all()
    if not rows:
        raise ValueError(f"the view table {table} has no primary key: its rows cannot be paired")
    return [row["name"] for row in rows]


def canonical(value: Any) -> Any:
    """A stored value in one form whatever the store made of it: numbers as Decimal (NUMERIC, or
    decimal text in SQLite), times as UTC datetimes (TIMESTAMPTZ, or ISO text), JSON decoded."""
    if isinstance(value, str):
        value = _parsed(value)
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return Decimal(str(value))
    if isinstance(value, dict):
        return {k: canonical(v) for k, v in value.items()}
    if isinstance(value, list):
        return [canonical(v) for v in value]
    return value


def _parsed(text: str) -> Any:
    if text[:1] in ("{", "["):
        with contextlib.suppress(ValueError):
            return json.loads(text)
    if _MOMENT.match(text):
        with contextlib.suppress(ValueError):
            return datetime.fromisoformat(text)
    if _NUMBER.fullmatch(text):
        with contextlib.suppress(InvalidOperation):
            return Decimal(text)
    return text
