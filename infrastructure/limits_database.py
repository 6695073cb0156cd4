"""Rate-limit counters in a database, for several workers sharing it without Redis.

Two tables: `moneta_limit_windows` (one row per scope: the sliding window's current bucket
number and its previous and current requests and tokens) and `moneta_limit_slots` (one row per
parallel slot: scope, request id, lease expiry in epoch ms). An acquire is one transaction: it
locks the window rows of all its scopes, in scope order so that two requests never wait on each
other crosswise, reads the live slots, decides with `domain.rate_limits`, and counts if the
request fits. The row locks make the check and the count one step for every process.

- PostgreSQL: the rows are created or locked by one `INSERT ... ON CONFLICT DO UPDATE` over the
  sorted scopes (rows are locked in the order they are inserted), in the ledger's database.
- SQLite: `BEGIN IMMEDIATE` takes the file's write lock, so acquires are serialised across the
  processes sharing the file. The counters live in a file of their own beside the ledger
  (`moneta.db` -> `moneta-limits.db`), so they never wait behind the ledger's commits.

The tables are created when the store opens (idempotent, and safe when several workers start at
once). Windows idle for two buckets and expired slots are deleted about once a SWEEP_S, each in
a transaction of its own. Blocking database work runs in a worker thread.
"""
from __future__ import annotations

import asyncio
import sqlite3
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Iterator, Protocol, Sequence

from moneta.domain.rate_limits import SLOT_LEASE_S, WINDOW_MS, Limit, LimitDecision, Seen, decide, millis, rolled
from moneta.infrastructure.counter_storage import CounterFile, counter_pool
from moneta.infrastructure.event_store import StoreLocation

SWEEP_S = 60.0
_MIGRATE_LOCK_ID = 0x6D6F6E6C  # "monl": serialises concurrent table creation on Postgres

Window = tuple[int, int, int, int, int]  # bucket, previous requests, current requests, previous tokens, current tokens

_TABLES = (
    """CREATE TABLE IF NOT EXISTS moneta_limit_windows (
        scope TEXT PRIMARY KEY, bucket BIGINT NOT NULL,
        previous_requests BIGINT NOT NULL, current_requests BIGINT NOT NULL,
        previous_tokens BIGINT NOT NULL, current_tokens BIGINT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS moneta_limit_slots (
        scope TEXT NOT NULL, request_id TEXT NOT NULL, expires_ms BIGINT NOT NULL,
        PRIMARY KEY (scope, request_id))""",
)


class _Transaction(Protocol):
    def lock_windows(self, scopes: list[str], bucket: int) -> dict[str, Window]:
        """Each scope's window row (created empty if missing), locked until the transaction ends."""
        ...

    def held_slots(self, scopes: list[str], now_ms: int) -> dict[str, int]: ...

    def write_windows(self, windows: dict[str, Window]) -> None: ...

    def take_slots(self, scopes: list[str], request_id: str, expires_ms: int) -> None: ...

    def release_slots(self, scopes: list[str], request_id: str) -> None: ...


class _Database(Protocol):
    def transaction(self) -> AbstractContextManager[_Transaction]: ...

    def sweep(self, bucket: int, now_ms: int) -> None: ...

    def close(self) -> None: ...


class DatabaseLimitStore:
    mode = "database"

    def __init__(self, database: _Database, lease_s: float = SLOT_LEASE_S) -> None:
        self._db = database
        self._lease_ms = int(lease_s * 1000)
        self._swept_at = 0.0

    @classmethod
    def open(cls, database_url: str | None, lease_s: float = SLOT_LEASE_S) -> "DatabaseLimitStore":
        """`database_url`: the ledger's, `postgresql://...` or `sqlite:///path` (None: the default SQLite file)."""
        location = StoreLocation.from_url(database_url)
        if location.kind == "postgres":
            return cls(_Postgres(location.postgres_dsn), lease_s)
        return cls(_Sqlite(limits_file(location.sqlite_path)), lease_s)

    async def acquire(self, request_id: str, limits: Sequence[Limit], now: float) -> LimitDecision:
        return await asyncio.to_thread(self._acquire, request_id, [limit for limit in limits if limit.is_set], now)

    async def settle(self, request_id: str, limits: Sequence[Limit], tokens: int, now: float) -> None:
        limits = [limit for limit in limits if limit.is_set]
        if limits:
            await asyncio.to_thread(self._settle, request_id, limits, tokens, now)

    async def close(self) -> None:
        await asyncio.to_thread(self._db.close)

    def _acquire(self, request_id: str, limits: list[Limit], now: float) -> LimitDecision:
        if not limits:
            return decide(limits, [], now)
        now_ms = millis(now)
        bucket = now_ms // WINDOW_MS
        parallel = [limit.scope for limit in limits if limit.max_parallel is not None]
        with self._db.transaction() as tx:
            windows = {scope: _rolled(window, bucket) for scope, window in
                       tx.lock_windows(sorted({limit.scope for limit in limits}), bucket).items()}
            held = tx.held_slots(parallel, now_ms) if parallel else {}
            seen = [Seen(*windows[limit.scope][1:], held.get(limit.scope, 0)) for limit in limits]
            decision = decide(limits, seen, now)
            if decision.allowed:
                tx.write_windows({scope: (b, pr, cr + 1, pt, ct) for scope, (b, pr, cr, pt, ct) in windows.items()})
                if parallel:
                    tx.take_slots(parallel, request_id, now_ms + self._lease_ms)
        if now - self._swept_at >= SWEEP_S:
            self._swept_at = now
            self._db.sweep(bucket, now_ms)
        return decision

    def _settle(self, request_id: str, limits: list[Limit], tokens: int, now: float) -> None:
        bucket = millis(now) // WINDOW_MS
        scopes = sorted({limit.scope for limit in limits})
        with self._db.transaction() as tx:
            windows = tx.lock_windows(scopes, bucket)
            tx.write_windows({scope: (b, pr, cr, pt, ct + tokens) for scope, (b, pr, cr, pt, ct) in
                              ((s, _rolled(w, bucket)) for s, w in windows.items())})
            tx.release_slots(scopes, request_id)


def limits_file(ledger_path: str) -> str:
    path = Path(ledger_path)
    return str(path.with_name(f"{path.stem}-limits{path.suffix or '.db'}"))


def _rolled(window: Window, bucket: int) -> Window:
    b, previous_requests, current_requests, previous_tokens, current_tokens = window
    return (max(b, bucket), *rolled(b, previous_requests, current_requests, bucket),
            *rolled(b, previous_tokens, current_tokens, bucket))


class _Postgres:
    def __init__(self, dsn: str) -> None:
        self._pool = counter_pool(dsn, _TABLES, _MIGRATE_LOCK_ID)

    @contextmanager
    def transaction(self) -> Iterator["_PostgresTransaction"]:
        with self._pool.connection() as conn:  # commits at the end of the block, rolls back on an error
            yield _PostgresTransaction(conn)

    def sweep(self, bucket: int, now_ms: int) -> None:
        with self._pool.connection() as conn:
            conn.autocommit = True  # each delete its own transaction: the sweep never holds two locks
            try:
                conn.execute("""DELETE FROM moneta_limit_windows WHERE scope IN (SELECT scope FROM moneta_limit_windows
                                WHERE bucket < %s FOR UPDATE SKIP LOCKED)""", (bucket - 1,))
                conn.execute("DELETE FROM moneta_limit_slots WHERE expires_ms <= %s", (now_ms,))
            finally:
                conn.autocommit = False

    def close(self) -> None:
        self._pool.close()


class _PostgresTransaction:
    def __init__(self, conn) -> None:
        self._conn = conn

    def lock_windows(self, scopes: list[str], bucket: int) -> dict[str, Window]:
        rows = self._conn.execute(
            """INSERT INTO moneta_limit_windows AS w
                   (scope, bucket, previous_requests, current_requests, previous_tokens, current_tokens)
               SELECT scope, %s, 0, 0, 0, 0 FROM unnest(%s::text[]) AS scope ORDER BY scope
               ON CONFLICT (scope) DO UPDATE SET scope = EXCLUDED.scope
               RETURNING scope, bucket, previous_requests, current_requests, previous_tokens, current_tokens""",
            (bucket, scopes)).fetchall()
        return {row[0]: row[1:] for row in rows}

    def held_slots(self, scopes: list[str], now_ms: int) -> dict[str, int]:
        rows = self._conn.execute("""SELECT scope, count(*) FROM moneta_limit_slots
                                     WHERE scope = ANY(%s) AND expires_ms > %s GROUP BY scope""", (scopes, now_ms))
        return dict(rows.fetchall())

    def write_windows(self, windows: dict[str, Window]) -> None:
        columns = list(zip(*((scope, *window) for scope, window in windows.items())))
        self._conn.execute(
            """UPDATE moneta_limit_windows AS w SET bucket = v.bucket, previous_requests = v.pr,
                   current_requests = v.cr, previous_tokens = v.pt, current_tokens = v.ct
               FROM unnest(%s::text[], %s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[])
                   AS v(scope, bucket, pr, cr, pt, ct)
               WHERE w.scope = v.scope""", [list(column) for column in columns])

    def take_slots(self, scopes: list[str], request_id: str, expires_ms: int) -> None:
        self._conn.execute("""INSERT INTO moneta_limit_slots (scope, request_id, expires_ms)
                              SELECT scope, %s, %s FROM unnest(%s::text[]) AS scope
                              ON CONFLICT (scope, request_id) DO UPDATE SET expires_ms = EXCLUDED.expires_ms""",
                           (request_id, expires_ms, scopes))

    def release_slots(self, scopes: list[str], request_id: str) -> None:
        self._conn.execute("DELETE FROM moneta_limit_slots WHERE scope = ANY(%s) AND request_id = %s",
                           (scopes, request_id))


class _Sqlite:
    def __init__(self, path: str) -> None:
        self._file = CounterFile(path, _TABLES)
        self._conn, self._lock = self._file.conn, self._file.lock

    @contextmanager
    def transaction(self) -> Iterator["_SqliteTransaction"]:
        with self._file.transaction() as conn:
            yield _SqliteTransaction(conn)

    def sweep(self, bucket: int, now_ms: int) -> None:
        with self._lock:
            self._conn.execute("DELETE FROM moneta_limit_windows WHERE bucket < ?", (bucket - 1,))
            self._conn.execute("DELETE FROM moneta_limit_slots WHERE expires_ms <= ?", (now_ms,))

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class _SqliteTransaction:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def lock_windows(self, scopes: list[str], bucket: int) -> dict[str, Window]:
        self._conn.executemany("INSERT OR IGNORE INTO moneta_limit_windows VALUES (?, ?, 0, 0, 0, 0)",
                               [(scope, bucket) for scope in scopes])
        rows = self._conn.execute(
            f"""SELECT scope, bucket, previous_requests, current_requests, previous_tokens, current_tokens
                FROM moneta_limit_windows WHERE scope IN ({_marks(scopes)})""", scopes).fetchall()
        return {row[0]: row[1:] for row in rows}

    def held_slots(self, scopes: list[str], now_ms: int) -> dict[str, int]:
        rows = self._conn.execute(f"""SELECT scope, count(*) FROM moneta_limit_slots
                                      WHERE scope IN ({_marks(scopes)}) AND expires_ms > ? GROUP BY scope""",
                                  [*scopes, now_ms])
        return dict(rows.fetchall())

    def write_windows(self, windows: dict[str, Window]) -> None:
        self._conn.executemany(
            """UPDATE moneta_limit_windows SET bucket = ?, previous_requests = ?, current_requests = ?,
                   previous_tokens = ?, current_tokens = ? WHERE scope = ?""",
            [(*window, scope) for scope, window in windows.items()])

    def take_slots(self, scopes: list[str], request_id: str, expires_ms: int) -> None:
        self._conn.executemany("INSERT OR REPLACE INTO moneta_limit_slots VALUES (?, ?, ?)",
                               [(scope, request_id, expires_ms) for scope in scopes])

    def release_slots(self, scopes: list[str], request_id: str) -> None:
        self._conn.execute(f"DELETE FROM moneta_limit_slots WHERE scope IN ({_marks(scopes)}) AND request_id = ?",
                           [*scopes, request_id])


def _marks(values: list) -> str:
    return ", ".join("?" * len(values))
