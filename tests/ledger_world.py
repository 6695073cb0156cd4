"""A real ledger and its read side in one test: write requests' events, run the projections."""
from __future__ import annotations

import uuid
from decimal import Decimal

from moneta.domain.redaction import key_hash
from moneta.domain.request_record import RequestRecord
from moneta.domain.usage import Usage
from moneta.infrastructure.event_store import StoreLocation, migrate
from moneta.infrastructure.group_commit import GroupCommitLedger
from moneta.projections.queries import SpendQueries
from moneta.projections.runner import ProjectionRunner
from moneta.projections.view_store import ViewStore

TINY = Decimal("0.000000000000000001")  # below float resolution: a float anywhere loses it


class World:
    def __init__(self, url: str) -> None:
        self.location = StoreLocation.from_url(url)
        migrate(self.location)
        self.app = self.location.open()
        self.ledger = GroupCommitLedger(self.app)
        self._closers = [self.ledger.close, self.app.close]
        self.store = self.new_store()
        self.runner = self.new_runner(self.store)
        self.runner.create_tables()
        self.queries = SpendQueries(self.store)

    def new_store(self) -> ViewStore:
        store = ViewStore.connect(sqlite_path=self.location.sqlite_path, postgres_dsn=self.location.postgres_dsn)
        self._closers.append(store.close)
        return store

    def new_runner(self, store: ViewStore, **options) -> ProjectionRunner:
        runner = ProjectionRunner(self.app, store, **options)
        self._closers.insert(0, runner.stop)
        return runner

    def last_position(self) -> int:
        return self.app.recorder.max_notification_id() or 0

    def close(self) -> None:
        for close in self._closers:
            close()

    # -- writing the ledger ------------------------------------------------------------------

    def admit(self, *, key: str = "sk-alice", user: str = "u1", model: str = "gpt-4o-mini",
              principal: dict[str, str] | None = None) -> RequestRecord:
        return RequestRecord.admit(
            uuid.uuid4(), call_type="acompletion", key_hash=key_hash(key), end_user=user, model_group=model, stream=False,
            principal=principal,
        )

    def completed(self, cost: Decimal, *, tokens: tuple[int, int] = (10, 5), first_token_ms=None, **who) -> RequestRecord:
        record = self.admit(**who)
        record.complete(
            deployment_id="dep-1", provider="openai", provider_model="gpt-4o-mini-2024-07-18",
            usage=Usage(prompt_tokens=tokens[0], completion_tokens=tokens[1]), cost=cost,
            price_source="genai-prices", latency_ms=120.5, first_token_ms=first_token_ms, finish_reason="stop",
        )
        self.ledger.record_blocking(record, timeout=10)
        return record

    def interrupted(self, cost: Decimal, **who) -> RequestRecord:
        record = self.admit(**who)
        record.interrupt(
            deployment_id="dep-2", provider="openai", provider_model="gpt-4o-mini", usage=Usage(7, 3), cost=cost,
            price_source="config", latency_ms=80.0, first_token_ms=None, usage_estimated=True,
        )
        self.ledger.record_blocking(record, timeout=10)
        return record

    def failed(self, attempts: int, **who) -> RequestRecord:
        record = self.admit(**who)
        for number in range(attempts):
            record.record_attempt_failure(
                deployment_id=f"dep-{number}", provider="openai", provider_model="gpt-4o-mini",
                status_code=503, error_type="ServiceUnavailableError", reason="upstream down", latency_ms=5.0,
            )
        record.fail(status_code=503, error_type="ServiceUnavailableError", reason="all deployments failed")
        self.ledger.record_blocking(record, timeout=10)
        return record

    def denied(self, **who) -> RequestRecord:
        who = {"key": "sk-alice", "user": "u1", "model": "gpt-4o-mini", **who}
        record = RequestRecord.deny(
            uuid.uuid4(), call_type="acompletion", key_hash=key_hash(who["key"]), end_user=who["user"],
            model_group=who["model"], status_code=429, error_type="BudgetExceededError", code="budget_exceeded",
            reason="key budget exhausted",
        )
        self.ledger.record_blocking(record, timeout=10)
        return record
