"""Where read models live: a SQLite file or a Postgres database, behind one small SQL dialect.

View SQL is written once, with `?` placeholders and the column types `{money}`, `{timestamp}`,
`{json}` and `{bytes}`; the store translates. A list of any length is one parameter, tested with `any_of`.
Money stays Decimal end to end: NUMERIC on Postgres, and on SQLite decimal text added and summed
by the functions `dec_add` and `dec_sum` registered on each connection, because SQLite's own
arithmetic on text goes through float.
"""
from __future__ import annotations

import json
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from decimal import MAX_PREC, Decimal, localcontext
from typing import Any

_SQLITE_TYPES = {"money": "TEXT", "timestamp": "TEXT", "json": "TEXT", "bytes": "BLOB"}
_POSTGRES_TYPES = {"money": "NUMERIC", "timestamp": "TIMESTAMPTZ", "json": "JSONB", "bytes": "BYTEA"}


class ViewCursor:
    """A cursor that speaks the views' dialect and returns rows as dicts."""

    def __init__(self, cursor: Any, store: ViewStore) -> None:
        self._cursor = cursor
        self._store = store
        self.for_update = store.for_update

    def execute(self, sql: str, params: Sequence[Any] = ()) -> ViewCursor:
        self._cursor.execute(self._store.translate(sql), [self._store.adapt(p) for p in params])
        return self

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """One statement for many rows (psycopg sends them in one pipeline)."""
        self._cursor.executemany(self._store.translate(sql), [[self._store.adapt(p) for p in row] for row in rows])

    def one(self) -> dict[str, Any] | None:
        row = self._cursor.fetchone()
        return None if row is None else dict(row)

    def all(self) -> list[dict[str, Any]]:
        return [dict(row) for row in self._cursor.fetchall()]

    def money_add(self, left: str, right: str) -> str:
        return self._store.money_add(left, right)

    def money_sum(self, column: str) -> str:
        return self._store.money_sum(column)

    def any_of(self, column: str) -> str:
        return self._store.any_of(column)

    def ddl(self, statement: str) -> str:
        return self._store.ddl(statement)

    def columns(self, table: str) -> set[str]:
        return {row["name"] for row in self.execute(self._store.columns_sql, (table,)).all()}


class ViewStore(ABC):
    """Opens the store named by a SQLite file path or a Postgres DSN (exactly one of them)."""

    dialect: str
    for_update: str
    columns_sql: str  # the names of a table's columns, as `name`

    @staticmethod
    def connect(*, sqlite_path: str | None = None, postgres_dsn: str | None = None,
                check_connections: bool = True) -> ViewStore:
        """`check_connections=False` for a user that retries a failed transaction anyway (the
        projection runner): it saves a round trip per transaction."""
        if (sqlite_path is None) == (postgres_dsn is None):
            raise ValueError("give exactly one of sqlite_path and postgres_dsn")
        if postgres_dsn is not None:
            return PostgresViewStore(postgres_dsn, check_connections=check_connections)
        return SqliteViewStore(sqlite_path)  # type: ignore[arg-type]

    def ddl(self, statement: str) -> str:
        return statement.format(**(_POSTGRES_TYPES if self.dialect == "postgres" else _SQLITE_TYPES))

    def translate(self, sql: str) -> str:
        return sql

    def adapt(self, value: Any) -> Any:
        return value

    def money_add(self, left: str, right: str) -> str:
        return f"{left} + {right}"

    def money_sum(self, column: str) -> str:
        return f"COALESCE(SUM({column}), 0)"

    def any_of(self, column: str) -> str:
        """A condition: `column` is one of the values of the list given as its one parameter."""
        return f"{column} = ANY(?)"

    @abstractmethod
    def transaction(self) -> AbstractContextManager[ViewCursor]:
        """A write transaction: on SQLite it takes the write lock at once (BEGIN IMMEDIATE)."""

    @abstractmethod
    def reading(self) -> AbstractContextManager[ViewCursor]:
        """A read-only unit of work."""

    @abstractmethod
    def close(self) -> None:
        """Releases the store's connections."""


class SqliteViewStore(ViewStore):
    dialect = "sqlite"
    for_update = ""
    columns_sql = "SELECT name FROM pragma_table_info(?)"

    def __init__(self, path: str, busy_timeout_ms: int = 10_000) -> None:
        self.path = path
        self.busy_timeout_ms = busy_timeout_ms

    def adapt(self, value: Any) -> Any:
        if isinstance(value, Decimal):
            return str(value)
        if isinstance(value, datetime):
            return iso_utc(value)
        if isinstance(value, list):
            return json.dumps([self.adapt(item) for item in value])
        return value

    def money_add(self, left: str, right: str) -> str:
        return f"dec_add({left}, {right})"

    def money_sum(self, column: str) -> str:
        return f"COALESCE(dec_sum({column}), '0')"

    def any_of(self, column: str) -> str:
        return f"{column} IN (SELECT value FROM json_each(?))"

    @contextmanager
    def transaction(self) -> Iterator[ViewCursor]:
        with self._connection() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield ViewCursor(conn.cursor(), self)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @contextmanager
    def reading(self) -> Iterator[ViewCursor]:
        with self._connection() as conn:
            yield ViewCursor(conn.cursor(), self)

    def close(self) -> None:
        """Nothing to release: each transaction opens and closes its own connection."""

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        # A connection per transaction: cheap for a file, and safe across threads.
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=self.busy_timeout_ms / 1000)
        try:
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_ms)}")
            conn.create_function("dec_add", 2, _dec_add, deterministic=True)
            conn.create_aggregate("dec_sum", 1, _DecSum)
            yield conn
        finally:
            conn.close()


class PostgresViewStore(ViewStore):
    dialect = "postgres"
    for_update = " FOR UPDATE"
    columns_sql = ("SELECT column_name AS name FROM information_schema.columns"
                   " WHERE table_schema = current_schema() AND table_name = ?")

    def __init__(self, dsn: str, max_connections: int = 4, check_connections: bool = True) -> None:
        from psycopg.rows import dict_row
        from psycopg_pool import ConnectionPool

        self.dsn = dsn
        # A pooled connection is checked before use: after a database restart a query must not fail
        # on a connection that died meanwhile. Waits are bounded (psycopg waits 30 s for a connection,
        # and backs reconnection off for up to 5 minutes, which would delay recovery as long).
        self._pool = ConnectionPool(
            dsn, min_size=1, max_size=max_connections, kwargs={"row_factory": dict_row, "connect_timeout": 2},
            check=ConnectionPool.check_connection if check_connections else None, timeout=5.0,
            reconnect_timeout=2.0, open=True,
        )

    def translate(self, sql: str) -> str:
        return sql.replace("?", "%s")

    @contextmanager
    def transaction(self) -> Iterator[ViewCursor]:
        with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cursor:
            yield ViewCursor(cursor, self)

    @contextmanager
    def reading(self) -> Iterator[ViewCursor]:
        with self.transaction() as cursor:
            yield cursor

    def close(self) -> None:
        self._pool.close()


def upsert_sql(table: str, columns: Sequence[str], key: Sequence[str], updates: Sequence[str] = ()) -> str:
    """Inserts a row of `columns`; on a conflicting `key`, applies `updates` (by default, takes the new values)."""
    updates = updates or [f"{column} = excluded.{column}" for column in columns if column not in key]
    return (f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})"
            f" ON CONFLICT ({', '.join(key)}) DO UPDATE SET {', '.join(updates)}")


def iso_utc(value: datetime) -> str:
    """The one text form of a timestamp in SQLite, so that text order is time order."""
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def as_decimal(value: Any) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(value)


def exact_sum(values: Iterable[Any]) -> Decimal:
    """Adds money without rounding (the default context rounds to 28 digits; NUMERIC never does)."""
    with localcontext() as context:
        context.prec = MAX_PREC
        return sum((as_decimal(value) for value in values), Decimal(0))


def as_datetime(value: Any) -> datetime | None:
    """A stored timestamp, in UTC whatever the session time zone of the database."""
    if value is None:
        return None
    parsed = datetime.fromisoformat(value) if isinstance(value, str) else value
    return parsed.astimezone(UTC)


def _dec_add(left: str | None, right: str | None) -> str:
    return str(Decimal(left or 0) + Decimal(right or 0))


class _DecSum:
    def __init__(self) -> None:
        self.total = Decimal(0)

    def step(self, value: str | None) -> None:
        if value is not None:
            self.total += Decimal(value)

    def finalize(self) -> str:
        return str(self.total)
