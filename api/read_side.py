"""The read side of one process: the projection runner and the queries over its views."""
from __future__ import annotations

from infrastructure.event_store import StoreLocation
from projections.queries import SpendQueries
from projections.runner import ProjectionRunner
from projections.view_store import ViewStore


class ReadSide:
    def __init__(self, location: StoreLocation) -> None:
        self.app = location.open()
        self.store = ViewStore.connect(sqlite_path=location.sqlite_path, postgres_dsn=location.postgres_dsn)
        self.runner = ProjectionRunner(self.app, self.store, listen_dsn=location.postgres_dsn)
        self.queries = SpendQueries(self.store)

    def start(self) -> None:
        self.runner.start()

    def stop(self) -> None:
        self.runner.stop()
        self.close()

    def close(self) -> None:
        self.store.close()
        self.app.close()
