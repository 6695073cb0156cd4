"""The gateway's Prometheus metrics (`GET /metrics`), and their exposition.

They are created when the proxy is built, never at import: prometheus_client decides then
whether a value lives in this process or in a file of `PROMETHEUS_MULTIPROC_DIR`. With that
directory (`moneta serve --workers N`) every worker writes its own files and any worker's
`/metrics` sums them all; without it the values live in a registry of this process.

Labels take bounded values only: route templates, configured model groups and deployments,
error types and codes, HTTP statuses.
"""
from __future__ import annotations

from typing import Any, Iterable, Iterator, Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
GATEWAY_SECONDS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
COMMIT_SECONDS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)
BATCH_EVENTS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)


class Collector(Protocol):
    def collect(self) -> Iterable[Any]: ...


class Children:
    """A labelled metric's children by label values: prometheus_client's `labels()` checks and
    locks on every call, this is one dict lookup once a child exists."""

    def __init__(self, metric: Any) -> None:
        self.metric = metric
        self._children: dict[tuple[str, ...], Any] = {}

    def __call__(self, *values: str) -> Any:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self.metric.labels(*values)
        return child


class GatewayMetrics:
    def __init__(self, multiprocess_dir: str | None = None) -> None:
        self.multiprocess_dir = multiprocess_dir
        self.registry = None if multiprocess_dir else CollectorRegistry()
        self.extra: list[Collector] = []  # computed when scraped (the projections' lag)
        self.requests = Children(self._counter(
            "moneta_requests", "HTTP requests answered, by route template, model group, deployment and status",
            "route", "model_group", "deployment", "status"))
        self.request_seconds = Children(self._histogram(
            "moneta_request_duration_seconds", "Whole HTTP call, from the request to the end of the response",
            SECONDS, "route", "model_group"))
        self.gateway_seconds = Children(self._histogram(
            "moneta_gateway_overhead_seconds", "The gateway's own time in an LLM call: the whole call minus the"
            " time spent waiting for the upstream provider", GATEWAY_SECONDS, "route", "model_group"))
        self.tokens = Children(self._counter(
            "moneta_tokens", "Tokens of completed calls, by kind (prompt, completion)",
            "model_group", "deployment", "kind"))
        self.spend = Children(self._counter("moneta_spend_usd", "Cost of completed calls in USD", "model_group"))
        self.denials = Children(self._counter(
            "moneta_denials", "Requests refused before reaching a provider, by error type and code",
            "error_type", "code"))
        self.upstream_failures = Children(self._counter(
            "moneta_upstream_failures", "Failed attempts at a provider, by deployment and error type",
            "deployment", "error_type"))
        self.cooldowns = Children(self._counter(
            "moneta_deployment_cooldowns", "Cooldowns started (deployment taken out of rotation)", "deployment"))
        self.commit_seconds = self._histogram(
            "moneta_ledger_commit_duration_seconds", "Time of one event-store commit (group commit)", COMMIT_SECONDS)
        self.commit_events = self._histogram(
            "moneta_ledger_commit_events", "Events written per event-store commit", BATCH_EVENTS)

    def add(self, collector: Collector) -> None:
        self.extra.append(collector)

    def exposition(self) -> bytes:
        """The text format of every metric: this process's, or all processes' in multi-process mode."""
        if self.multiprocess_dir:
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=self.multiprocess_dir)
            collectors: list[Collector] = [registry]
        else:
            collectors = [self.registry]  # type: ignore[list-item]
        return generate_latest(_All([*collectors, *self.extra]))  # type: ignore[arg-type]

    def _counter(self, name: str, documentation: str, *labels: str) -> Counter:
        return Counter(name, documentation, labels, registry=self.registry)

    def _histogram(self, name: str, documentation: str, buckets: tuple[float, ...], *labels: str) -> Histogram:
        return Histogram(name, documentation, labels, buckets=buckets, registry=self.registry)


class _All:
    """Several collectors as one, for `generate_latest`."""

    def __init__(self, collectors: list[Collector]) -> None:
        self.collectors = collectors

    def collect(self) -> Iterator[Any]:
        for collector in self.collectors:
            yield from collector.collect()
