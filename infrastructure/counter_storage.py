"""Where the rate-limit and budget counters live when several workers share them without Redis:
a Postgres pool whose commits do not wait for the disk, or a SQLite file beside the ledger's (one
connection per process, used by one thread at a time; the other processes wait on the file's
write lock, `BEGIN IMMEDIATE`)."""
from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from psycopg_pool import ConnectionPool


def counter_pool(dsn: str, tables: Sequence[str], migrate_lock_id: int) -> ConnectionPool:
    """A pool to the counters' tables, created if missing (one process at a time, under a lock).
    Counters, not the ledger: a commit need not wait for the disk (a crash may lose the last ones,
    and what is missing is rebuilt or expires)."""
    pool = ConnectionPool(dsn, min_size=1, max_size=4, open=True, timeout=5,
                          kwargs={"connect_timeout": 5, "options": "-c synchronous_commit=off"})
    with pool.connection() as conn:
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (migrate_lock_id,))
        for table in tables:
            conn.execute(table)
    return pool


class CounterFile:
    def __init__(self, path: str, tables: Sequence[str]) -> None:
        self.conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        self.lock = threading.Lock()  # one thread of the process at a time on the connection
        _write_ahead_log(self.conn)
        self.conn.execute("PRAGMA synchronous=NORMAL")  # counters, not the ledger: a power cut may lose the last
        for table in tables:
            self.conn.execute(table)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self.lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")


def _write_ahead_log(conn: sqlite3.Connection, tries: int = 100) -> None:
    """Switches the file to WAL. Two processes opening a new file at once can find it locked while
    the other switches (SQLite's busy timeout does not cover this): try again shortly."""
    for attempt in range(tries):
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or attempt == tries - 1:
                raise
            time.sleep(0.05)
