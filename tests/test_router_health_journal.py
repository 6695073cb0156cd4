"""Health events reach the deployment's stream even when another worker appended meanwhile."""
from __future__ import annotations

from datetime import datetime, timezone

from moneta.application.config import Deployment
from moneta.application.routing import HealthJournal
from moneta.domain.deployment_health import DeploymentHealth, health_id
from moneta.domain.errors import RateLimitError
from moneta.infrastructure.aggregate_reader import EventStoreReader
from moneta.infrastructure.event_store import StoreLocation, migrate
from moneta.infrastructure.group_commit import GroupCommitLedger

DEPLOYMENT = Deployment(id="d1", model_name="g", provider="mock", provider_model="m")


class StaleFirst:
    """Hands out an old version once, as a worker that read before another one appended would see."""

    def __init__(self, reader: EventStoreReader, stale: DeploymentHealth) -> None:
        self.reader = reader
        self.stale: DeploymentHealth | None = stale

    def get(self, aggregate_id):
        stale, self.stale = self.stale, None
        return stale if stale is not None else self.reader.get(aggregate_id)


async def test_a_version_conflict_is_retried_on_a_fresh_read(sqlite_url):
    location = StoreLocation.from_url(sqlite_url)
    migrate(location)
    app = location.open()
    ledger = GroupCommitLedger(app)
    try:
        health = DeploymentHealth.register("d1", "g")
        health.cool_down(until=datetime(2030, 1, 1, tzinfo=timezone.utc), status_code=429,
                         error_type="rate_limit_error", reason="another worker")
        await ledger.record(health)
        reader = EventStoreReader(app)
        stale = app.repository.get(health_id("d1"), version=1)
        journal = HealthJournal(StaleFirst(reader, stale), ledger)

        await journal.cooled_down(DEPLOYMENT, 1_900_000_000.0, RateLimitError("x"), "RateLimitError")
        await journal.recovered(DEPLOYMENT)

        names = [type(e).__name__ for e in app.repository.event_store.get(health_id("d1"))]
        assert names == ["Registered", "CooledDown", "CooledDown", "Recovered"]
        assert reader.get(health_id("d1")).cooldowns == 2
    finally:
        ledger.close()
        app.close()
