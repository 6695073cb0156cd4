"""The metrics of calls, from the two places that see them, joined by request id:

- the ledger's commits (a `LedgerObserver`, on the writer thread): what each call was (model
  group, deployment, upstream time), its tokens, cost, denial, failed attempts; cooldowns;
- the HTTP layer (`answered`, from the ASGI middleware): route, status and the whole time.

A call's events are committed before its response ends, so the middleware finds what the ledger
said of it. Facts the middleware never collects (a client that left mid-stream, a library call)
are forgotten oldest first beyond `remember`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence
from uuid import UUID

from moneta.domain.deployment_health import DeploymentHealth
from moneta.domain.request_record import RequestRecord
from moneta.infrastructure.metrics import GatewayMetrics

UNMATCHED = "(unmatched)"


@dataclass(slots=True)
class _Facts:
    model_group: str = ""
    deployment: str = ""
    upstream_s: float = 0.0


class CallMetrics:
    def __init__(self, metrics: GatewayMetrics, model_groups: Iterable[str], remember: int = 10_000) -> None:
        self.metrics = metrics
        self.model_groups = frozenset(model_groups)
        self.remember = remember
        self._facts: dict[UUID, _Facts] = {}
        self._on_event = {
            RequestRecord.Admitted: self._admitted,
            RequestRecord.Denied: self._denied,
            RequestRecord.AttemptFailed: self._attempt_failed,
            RequestRecord.Completed: self._completed,
            RequestRecord.Interrupted: self._completed,
            DeploymentHealth.CooledDown: self._cooled_down,
        }

    # -- the ledger's side (LedgerObserver) ----------------------------------------------------

    def committed(self, records: Sequence[tuple[RequestRecord | DeploymentHealth, Sequence[Any]]],
                  seconds: float) -> None:
        events = 0
        for record, written in records:
            events += len(written)
            for event in written:
                handle = self._on_event.get(type(event))
                if handle is not None:
                    handle(record, event)
        self.metrics.commit_seconds.observe(seconds)
        self.metrics.commit_events.observe(events)

    def _admitted(self, record: RequestRecord, event: RequestRecord.Admitted) -> None:
        self._of(record).model_group = self._group(event.model_group)

    def _denied(self, record: RequestRecord, event: RequestRecord.Denied) -> None:
        self.metrics.denials(event.error_type, event.code).inc()
        self._of(record).model_group = self._group(event.model_group)

    def _attempt_failed(self, record: RequestRecord, event: RequestRecord.AttemptFailed) -> None:
        self.metrics.upstream_failures(event.deployment_id, event.error_type).inc()
        facts = self._of(record)
        facts.deployment = event.deployment_id
        facts.upstream_s += event.latency_ms / 1000

    def _completed(self, record: RequestRecord, event: RequestRecord.Completed) -> None:
        group = self._group(record.model_group)
        usage = event.usage
        self.metrics.tokens(group, event.deployment_id, "prompt").inc(usage.get("prompt_tokens", 0))
        self.metrics.tokens(group, event.deployment_id, "completion").inc(usage.get("completion_tokens", 0))
        if event.cost > 0:
            self.metrics.spend(group).inc(float(event.cost))
        facts = self._of(record)
        facts.model_group, facts.deployment = group, event.deployment_id
        facts.upstream_s += event.latency_ms / 1000

    def _cooled_down(self, record: DeploymentHealth, _: DeploymentHealth.CooledDown) -> None:
        self.metrics.cooldowns(record.deployment_id).inc()

    def _group(self, model_group: str) -> str:
        """A configured model group, else "": a denied call may name any model."""
        return model_group if model_group in self.model_groups else ""

    def _of(self, record: RequestRecord) -> _Facts:
        facts = self._facts.get(record.id)
        if facts is None:
            if len(self._facts) >= self.remember:
                self._facts.pop(next(iter(self._facts)), None)
            facts = self._facts[record.id] = _Facts()
        return facts

    # -- the HTTP side -------------------------------------------------------------------------

    def answered(self, route: str, status: int, seconds: float, request_id: str | None) -> None:
        """One HTTP response ended; `request_id` names its ledger stream, if it has one."""
        facts = self._facts.pop(UUID(request_id), None) if request_id else None
        if facts is None:
            self.metrics.requests(route, "", "", str(status)).inc()
            self.metrics.request_seconds(route, "").observe(seconds)
            return
        group = facts.model_group
        self.metrics.requests(route, group, facts.deployment, str(status)).inc()
        self.metrics.request_seconds(route, group).observe(seconds)
        self.metrics.gateway_seconds(route, group).observe(max(seconds - facts.upstream_s, 0.0))
