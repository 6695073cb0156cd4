"""The read side: the projection runner (`moneta projections run`, one process of its own beside
the workers) and the queries over its views (in every worker).

The runner lives outside the workers so its page work never competes with requests for a
worker's GIL; the tracking-row lock keeps it exactly-once even if several run.
"""
from __future__ import annotations

import logging
import os
import signal
import threading

from moneta.infrastructure.event_store import StoreLocation
from moneta.projections.queries import SpendQueries
from moneta.projections.runner import ProjectionRunner
from moneta.projections.view_store import ViewStore

log = logging.getLogger("moneta.projections")


def connect_views(location: StoreLocation) -> ViewStore:
    return ViewStore.connect(sqlite_path=location.sqlite_path, postgres_dsn=location.postgres_dsn)


class SpendViews:
    """What a worker needs of the read side: queries, and a way to close them."""

    def __init__(self, location: StoreLocation) -> None:
        self.store = connect_views(location)
        self.queries = SpendQueries(self.store)

    def start(self) -> None:
        """Nothing to start: the views are kept by the projection process."""

    def stop(self) -> None:
        self.store.close()


class Projections:
    """The runner over the ledger, with its own connections."""

    def __init__(self, location: StoreLocation) -> None:
        self.app = location.open()
        self.store = connect_views(location)
        self.runner = ProjectionRunner(self.app, self.store, listen_dsn=location.postgres_dsn)

    def close(self) -> None:
        self.runner.stop()
        self.store.close()
        self.app.close()


def run_until_stopped(database_url: str | None) -> None:
    """`moneta projections run`: keeps the views up to date until SIGTERM or SIGINT."""
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    projections = Projections(StoreLocation.from_url(database_url))
    projections.runner.start()
    log.info("read side running (pid %d)", os.getpid())
    try:
        stopping.wait()
    finally:
        projections.close()
