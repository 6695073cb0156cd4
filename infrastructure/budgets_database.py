"""Budget counters in a database, for several workers sharing it without Redis.

Two tables: `moneta_budget_counters` (per scope and period: the settled spend in nano-dollars,
and when the row may be deleted: a day after the period ends, never for a lifetime budget) and
`moneta_budget_reservations` (per scope, period and request: the amount held and the lease's end,
epoch seconds). A reservation is one transaction: it locks the counter rows of its lines in
(scope, period) order, so that two requests never wait on each other crosswise, deletes the
expired reservations of those lines, sums the live ones, decides with `domain.budgets.decide` and
holds the amount on every line if the call is allowed. A counter row never seen is first created
from the SpentReader in a short transaction of its own (`INSERT ... ON CONFLICT DO NOTHING`: two
workers creating it at once agree on the first), then the reservation runs.

- PostgreSQL: `SELECT ... ORDER BY scope, period FOR UPDATE` locks the rows, in the ledger's
  database; the tables are created on open under an advisory lock.
- SQLite: `BEGIN IMMEDIATE` takes the file's write lock, so reservations are serialised across
  the processes sharing the file: `<ledger>-budgets.db` beside the ledger, so that they never
  wait behind the ledger's commits.

Rows of ended periods and expired reservations are deleted about once a SWEEP_S. Blocking
database work runs in a worker thread; a database that cannot be reached raises BudgetUnverifiable.
"""
from __future__ import annotations

import asyncio
import sqlite3
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from pathlib import Path
from typing import Iterator, Protocol, Sequence

import psycopg
from psycopg_pool import PoolTimeout

from moneta.application.budget_store import BudgetUnverifiable, SpentReader
from moneta.domain.budgets import LEASE_S, BudgetDecision, BudgetLine, Headroom, decide
from moneta.infrastructure.counter_storage import CounterFile, counter_pool
from moneta.infrastructure.event_store import StoreLocation

SWEEP_S = 60.0
KEEP_S = 86_400.0  # a counter outlives its period by a day: late settlements still find it
ATTEMPTS = 3  # a row created by the first is there for the second; a third covers one swept meanwhile
_MIGRATE_LOCK_ID = 0x6D6F6E62  # "monb": serialises concurrent table creation on Postgres

Key = tuple[str, str]  # scope, period

_TABLES = (
    """CREATE TABLE IF NOT EXISTS moneta_budget_counters (
        scope TEXT NOT NULL, period TEXT NOT NULL, spent BIGINT NOT NULL, expires_at DOUBLE PRECISION,
        PRIMARY KEY (scope, period))""",
    """CREATE TABLE IF NOT EXISTS moneta_budget_reservations (
        scope TEXT NOT NULL, period TEXT NOT NULL, request_id TEXT NOT NULL, amount BIGINT NOT NULL,
        lease_end DOUBLE PRECISION NOT NULL, PRIMARY KEY (scope, period, request_id))""",
)


class _Transaction(Protocol):
    def lock_counters(self, keys: list[Key]) -> dict[Key, int]:
        """The spend of each key's counter row that exists, locked until the transaction ends."""
        ...

    def held(self, keys: list[Key], now: float) -> dict[Key, int]:
        """Deletes the keys' expired reservations and sums the live ones."""
        ...

    def hold(self, keys: list[Key], request_id: str, amount: int, lease_end: float) -> None: ...

    def settle(self, keys: list[Key], request_id: str, cost: int) -> None: ...


class _Database(Protocol):
    def transaction(self) -> AbstractContextManager[_Transaction]: ...

    def create(self, rows: list[tuple[str, str, int, float | None]]) -> None:
        """Counter rows (scope, period, spent, expires_at), unless they exist; in a transaction of its own."""
        ...

    def sweep(self, now: float) -> None: ...

    def close(self) -> None: ...


class DatabaseBudgetStore:
    mode = "database"

    def __init__(self, database: _Database, reader: SpentReader) -> None:
        self._db = database
        self._reader = reader
        self._swept_at = 0.0

    @classmethod
    def open(cls, database_url: str | None, reader: SpentReader) -> "DatabaseBudgetStore":
        """`database_url`: the ledger's, `postgresql://...` or `sqlite:///path` (None: the default SQLite file)."""
        location = StoreLocation.from_url(database_url)
        if location.kind == "postgres":
            return cls(_Postgres(location.postgres_dsn), reader)
        return cls(_Sqlite(budgets_file(location.sqlite_path)), reader)

    async def reserve(self, request_id: str, lines: Sequence[BudgetLine], wanted: int, minimum: int,
                      now: float) -> BudgetDecision:
        if not lines:
            return decide((), wanted, minimum)
        return await self._run(self._reserve, request_id, lines, wanted, minimum, now)

    async def settle(self, request_id: str, lines: Sequence[BudgetLine], cost: int, now: float) -> None:
        if lines:
            await self._run(self._settle, request_id, lines, cost)

    async def close(self) -> None:
        await asyncio.to_thread(self._db.close)

    async def _run(self, work, *args):
        try:
            return await asyncio.to_thread(work, *args)
        except (psycopg.OperationalError, PoolTimeout, sqlite3.OperationalError) as error:
            raise BudgetUnverifiable(f"budget database: {type(error).__name__}: {error}") from error

    def _reserve(self, request_id: str, lines: Sequence[BudgetLine], wanted: int, minimum: int,
                 now: float) -> BudgetDecision:
        keys = sorted({(line.scope, line.period) for line in lines})
        for _ in range(ATTEMPTS):
            with self._db.transaction() as tx:
                spent = tx.lock_counters(keys)
                if len(spent) == len(keys):
                    held = tx.held(keys, now)
                    decision = decide([Headroom(line, spent[line.scope, line.period],
                                                held.get((line.scope, line.period), 0)) for line in lines],
                                      wanted, minimum)
                    if decision.allowed:
                        tx.hold(keys, request_id, decision.reserved, now + LEASE_S)
                    break
            missing = [line for line in lines if (line.scope, line.period) not in spent]
            self._db.create([(line.scope, line.period, amount, _expires_at(line))
                             for line, amount in zip(missing, self._reader.spent(missing))])
        else:
            raise BudgetUnverifiable("budget counter rows vanish as they are created (swept?)")
        if now - self._swept_at >= SWEEP_S:
            self._swept_at = now
            self._db.sweep(now)
        return decision

    def _settle(self, request_id: str, lines: Sequence[BudgetLine], cost: int) -> None:
        with self._db.transaction() as tx:
            tx.settle(sorted({(line.scope, line.period) for line in lines}), request_id, cost)


def budgets_file(ledger_path: str) -> str:
    path = Path(ledger_path)
    return str(path.with_name(f"{path.stem}-budgets{path.suffix or '.db'}"))


def _expires_at(line: BudgetLine) -> float | None:
    if line.resets_at is None:
        return None
    return datetime.fromisoformat(line.resets_at).timestamp() + KEEP_S


def _columns(keys: list[Key]) -> tuple[list[str], list[str]]:
    return [scope for scope, _ in keys], [period for _, period in keys]


_KEYS = "(scope, period) IN (SELECT * FROM unnest(%s::text[], %s::text[]))"


class _Postgres:
    def __init__(self, dsn: str) -> None:
        self._pool = counter_pool(dsn, _TABLES, _MIGRATE_LOCK_ID)

    @contextmanager
    def transaction(self) -> Iterator["_PostgresTransaction"]:
        with self._pool.connection() as conn:  # commits at the end of the block, rolls back on an error
            yield _PostgresTransaction(conn)

    def create(self, rows: list[tuple[str, str, int, float | None]]) -> None:
        with self._pool.connection() as conn:
            conn.execute("""INSERT INTO moneta_budget_counters (scope, period, spent, expires_at)
                            SELECT * FROM unnest(%s::text[], %s::text[], %s::bigint[], %s::float8[])
                            ORDER BY 1, 2 ON CONFLICT DO NOTHING""", [list(column) for column in zip(*rows)])

    def sweep(self, now: float) -> None:
        with self._pool.connection() as conn:
            conn.autocommit = True  # each delete its own transaction, skipping rows a reservation holds: never waits
            try:
                conn.execute("""DELETE FROM moneta_budget_reservations WHERE (scope, period, request_id) IN
                                (SELECT scope, period, request_id FROM moneta_budget_reservations
                                 WHERE lease_end <= %s FOR UPDATE SKIP LOCKED)""", (now,))
                conn.execute("""DELETE FROM moneta_budget_counters WHERE (scope, period) IN
                                (SELECT scope, period FROM moneta_budget_counters WHERE expires_at <= %s
                                 FOR UPDATE SKIP LOCKED)""", (now,))
            finally:
                conn.autocommit = False

    def close(self) -> None:
        self._pool.close()


class _PostgresTransaction:
    def __init__(self, conn: psycopg.Connection) -> None:
        self._conn = conn

    def lock_counters(self, keys: list[Key]) -> dict[Key, int]:
        rows = self._conn.execute(f"""SELECT scope, period, spent FROM moneta_budget_counters WHERE {_KEYS}
                                      ORDER BY scope, period FOR UPDATE""", _columns(keys)).fetchall()
        return {(scope, period): spent for scope, period, spent in rows}

    def held(self, keys: list[Key], now: float) -> dict[Key, int]:
        self._conn.execute(f"DELETE FROM moneta_budget_reservations WHERE {_KEYS} AND lease_end <= %s",
                           (*_columns(keys), now))
        rows = self._conn.execute(f"""SELECT scope, period, sum(amount) FROM moneta_budget_reservations
                                      WHERE {_KEYS} GROUP BY scope, period""", _columns(keys)).fetchall()
        return {(scope, period): int(amount) for scope, period, amount in rows}

    def hold(self, keys: list[Key], request_id: str, amount: int, lease_end: float) -> None:
        self._conn.execute("""INSERT INTO moneta_budget_reservations
                               SELECT scope, period, %s, %s, %s FROM unnest(%s::text[], %s::text[]) AS k(scope, period)
                               ON CONFLICT (scope, period, request_id)
                               DO UPDATE SET amount = EXCLUDED.amount, lease_end = EXCLUDED.lease_end""",
                           (request_id, amount, lease_end, *_columns(keys)))

    def settle(self, keys: list[Key], request_id: str, cost: int) -> None:
        self._conn.execute(f"""UPDATE moneta_budget_counters SET spent = spent + %s WHERE (scope, period) IN
                               (SELECT scope, period FROM moneta_budget_counters WHERE {_KEYS}
                                ORDER BY scope, period FOR UPDATE)""", (cost, *_columns(keys)))
        self._conn.execute(f"DELETE FROM moneta_budget_reservations WHERE {_KEYS} AND request_id = %s",
                           (*_columns(keys), request_id))


class _Sqlite:
    def __init__(self, path: str) -> None:
        self._file = CounterFile(path, _TABLES)
        self._conn, self._lock = self._file.conn, self._file.lock

    @contextmanager
    def transaction(self) -> Iterator["_SqliteTransaction"]:
        with self._file.transaction() as conn:
            yield _SqliteTransaction(conn)

    def create(self, rows: list[tuple[str, str, int, float | None]]) -> None:
        with self.transaction():
            self._conn.executemany("INSERT OR IGNORE INTO moneta_budget_counters VALUES (?, ?, ?, ?)", rows)

    def sweep(self, now: float) -> None:
        with self.transaction():
            self._conn.execute("DELETE FROM moneta_budget_reservations WHERE lease_end <= ?", (now,))
            self._conn.execute("DELETE FROM moneta_budget_counters WHERE expires_at <= ?", (now,))

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class _SqliteTransaction:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def lock_counters(self, keys: list[Key]) -> dict[Key, int]:
        rows = self._conn.execute(f"SELECT scope, period, spent FROM moneta_budget_counters WHERE {_in(keys)}",
                                  _flat(keys)).fetchall()
        return {(scope, period): spent for scope, period, spent in rows}

    def held(self, keys: list[Key], now: float) -> dict[Key, int]:
        self._conn.execute(f"DELETE FROM moneta_budget_reservations WHERE {_in(keys)} AND lease_end <= ?",
                           [*_flat(keys), now])
        rows = self._conn.execute(f"""SELECT scope, period, sum(amount) FROM moneta_budget_reservations
                                      WHERE {_in(keys)} GROUP BY scope, period""", _flat(keys)).fetchall()
        return {(scope, period): amount for scope, period, amount in rows}

    def hold(self, keys: list[Key], request_id: str, amount: int, lease_end: float) -> None:
        self._conn.executemany("INSERT OR REPLACE INTO moneta_budget_reservations VALUES (?, ?, ?, ?, ?)",
                               [(scope, period, request_id, amount, lease_end) for scope, period in keys])

    def settle(self, keys: list[Key], request_id: str, cost: int) -> None:
        self._conn.execute(f"UPDATE moneta_budget_counters SET spent = spent + ? WHERE {_in(keys)}",
                           [cost, *_flat(keys)])
        self._conn.execute(f"DELETE FROM moneta_budget_reservations WHERE {_in(keys)} AND request_id = ?",
                           [*_flat(keys), request_id])


def _in(keys: list[Key]) -> str:
    return f"(scope, period) IN (VALUES {', '.join(['(?, ?)'] * len(keys))})"


def _flat(keys: list[Key]) -> list[str]:
    return [part for key in keys for part in key]
