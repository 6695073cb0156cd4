"""The projections' lag as Prometheus gauges, read from the views and the ledger when scraped:
a read side that died shows as a growing lag and heartbeat age, not as frozen figures."""
from __future__ import annotations

import logging
from typing import Iterator

from eventsourcing.application import Application
from prometheus_client.core import GaugeMetricFamily

from moneta.projections.status import read_status
from moneta.projections.view_store import ViewStore

log = logging.getLogger("moneta.metrics")


class ProjectionLag:
    def __init__(self, app: Application, store: ViewStore) -> None:
        self.app = app
        self.store = store

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            statuses = read_status(self.app, self.store)
        except Exception:  # the other metrics are still worth a scrape
            log.warning("projection lag unavailable", exc_info=True)
            return
        gauges = {
            "lag_events": GaugeMetricFamily("moneta_projection_lag_events",
                                            "Ledger events the projection has not applied yet", labels=["projection"]),
            "lag_s": GaugeMetricFamily("moneta_projection_lag_seconds", "Age of the oldest ledger event the"
                                       " projection has not applied yet (0 when caught up)", labels=["projection"]),
            "heartbeat_age_s": GaugeMetricFamily("moneta_projection_heartbeat_age_seconds",
                                                 "Seconds since the projection runner last proved alive",
                                                 labels=["projection"]),
            "quarantined": GaugeMetricFamily("moneta_projection_quarantined_events",
                                             "Events set aside because they could not be applied",
                                             labels=["projection"]),
        }
        for status in statuses:
            for field, gauge in gauges.items():
                value = getattr(status, field)
                if value is not None:  # a runner that never ran has no heartbeat age
                    gauge.add_metric([status.name], value)
        yield from gauges.values()
