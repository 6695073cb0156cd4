"""A SQLite file of counters (rate limits, budgets) that the worker processes of one host share
when there is no Redis: one connection per process, used by one thread at a time; the other
processes wait on the file's write lock (`BEGIN IMMEDIATE`)."""
from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager


class CounterFile:
    def __init__(self, path: str, tables: Sequence[str]) -> None:
        self.conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        self.lock = threading.Lock()  # one thread of the process at a time on the connection
        self.conn.execute("PRAGMA journal_mode=WAL")
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
