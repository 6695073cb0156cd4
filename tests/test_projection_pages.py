"""A page of events costs each view the same few statements however many events it holds, and
gives the same views as applying the events one page each."""
from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from moneta.domain.access import Team, entity_id
from moneta.domain.deployment_health import DeploymentHealth
from moneta.domain.redaction import key_hash
from moneta.domain.request_record import RequestRecord
from moneta.domain.usage import Usage
from moneta.projections.runner import DEFAULT_VIEWS
from moneta.projections.view_store import ViewStore
from tests.ledger_world import TINY, World

KINDS = ("completed", "interrupted", "failed", "denied")
ENDINGS = KINDS[:3]  # of a request admitted earlier


class CountingCursor:
    def __init__(self, cur: Any) -> None:
        self._cur = cur
        self.statements = 0

    def execute(self, sql: str, params: Any = ()) -> Any:
        self.statements += 1
        return self._cur.execute(sql, params)

    def executemany(self, sql: str, rows: Any) -> None:
        self.statements += 1
        self._cur.executemany(sql, rows)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cur, name)


class Counted:
    """A view whose statements are counted, page by page."""

    def __init__(self, view: Any) -> None:
        self.view = view
        self.TABLES, self.DDL, self.EVENT_TYPES = view.TABLES, view.DDL, view.EVENT_TYPES
        self.statements: list[int] = []

    def apply_page(self, cur: Any, page: Any) -> None:
        counting = CountingCursor(cur)
        self.view.apply_page(counting, page)
        self.statements.append(counting.statements)


def request(world: World, kind: str, deployment: str, n: int = 0) -> RequestRecord:
    """An unsaved request that ends as `kind` ("pending": still in flight) on `deployment`."""
    if kind == "denied":
        return RequestRecord.deny(uuid.uuid4(), call_type="acompletion", key_hash=key_hash("sk-alice"), end_user="u1",
                                  model_group="gpt-4o-mini", status_code=429, error_type="BudgetExceededError",
                                  code="budget_exceeded", reason="key budget exhausted")
    record = world.admit()
    if kind != "pending":
        end(record, kind, deployment, n)
    return record


def end(record: RequestRecord, kind: str, deployment: str, n: int = 0) -> None:
    served = {"deployment_id": deployment, "provider": "openai", "provider_model": "gpt-4o-mini",
              "price_source": "genai-prices", "latency_ms": 100.0 + 37 * n}
    if kind in ("completed", "failed"):
        for _ in range(1 + (kind == "failed")):
            record.record_attempt_failure(deployment_id=deployment, provider="openai", provider_model="gpt-4o-mini",
                                          status_code=503, error_type="ServiceUnavailableError",
                                          reason="upstream down", latency_ms=5.0)
    if kind == "completed":
        record.complete(**served, usage=Usage(10 + n, 5), cost=Decimal("0.000123") * n + TINY,
                        first_token_ms=20.0 + n, finish_reason="stop")
    elif kind == "interrupted":
        record.interrupt(**served, usage=Usage(7, 3), cost=Decimal("0.00005") + TINY, first_token_ms=None,
                         usage_estimated=True)
    elif kind == "failed":
        record.fail(status_code=503, error_type="ServiceUnavailableError", reason="all deployments failed")


def cooldown(health: DeploymentHealth) -> None:
    health.cool_down(until=datetime.now(UTC) + timedelta(seconds=60), status_code=503,
                     error_type="ServiceUnavailableError", reason="3 failures in a minute")


def team(team_id: str) -> Team:
    return Team.create(entity_id("team", team_id), {"team_id": team_id}, "test")


def test_a_page_of_1_or_200_requests_costs_each_view_the_same_statements(world: World) -> None:
    views = {view.__name__.rsplit(".", 1)[1]: Counted(view) for view in DEFAULT_VIEWS}
    runner = world.new_runner(world.store, name="counted", views=list(views.values()), page_size=1000)
    runner.create_tables()
    in_flight = [request(world, "pending", "dep-a") for _ in range(20)]
    world.app.save(*in_flight)
    runner.catch_up()  # a page of admissions only, not compared

    world.app.save(request(world, "completed", "dep-a"), team("t-0"))  # Admitted, AttemptFailed, Completed
    runner.catch_up()

    health = [DeploymentHealth.register(f"dep-{n}", "gpt-4o-mini") for n in range(4)]
    for h in health:
        cooldown(h)
    world.app.save(*health)
    for n, record in enumerate(in_flight):
        end(record, ENDINGS[n % 3], "dep-a", n)
    world.app.save(*in_flight, *(request(world, KINDS[n % 4], f"dep-{n % 4}", n) for n in range(180)),
                   *(team(f"t-{n}") for n in range(1, 40)))
    for h in health[:2]:
        h.recover()
    world.app.save(*health)
    runner.catch_up()

    compared = {name: view.statements[1:] for name, view in views.items()}
    # in_flight inserts what opened and deletes what closed in the page: at most 2, whatever its size
    assert max(compared.pop("in_flight")) <= 2
    assert compared == {"spend_log": [2, 2], "usage_report": [1, 1], "daily_activity": [1, 1],
                        "deployment_health": [3, 3], "access": [3, 3], "budgets": [1, 1], "billing": [1, 1],
                        "lago_outbox": [1, 1]}
    assert world.queries.spend_logs(page_size=1000).total == 201


def write_crowded_ledger(world: World) -> None:
    """Many events on the same requests, day, key and deployments, cooldowns among them."""
    health = {name: DeploymentHealth.register(name, "gpt-4o-mini") for name in ("dep-a", "dep-b")}
    world.app.save(*health.values())
    in_flight = [request(world, "pending", "dep-a") for _ in range(8)]
    world.app.save(*in_flight)
    for n in range(24):
        world.app.save(request(world, KINDS[n % 4], ("dep-a", "dep-b")[n % 2], n))
        if n % 6 == 0:
            cooldown(health["dep-a"])
        elif n % 6 == 3:
            health["dep-a"].recover()
        world.app.save(health["dep-a"])
    cooldown(health["dep-b"])
    for n, record in enumerate(in_flight[:6]):
        end(record, ENDINGS[n % 3], "dep-b", n)
    world.app.save(health["dep-b"], *in_flight)


def view_tables(store: ViewStore) -> dict[str, list[dict[str, Any]]]:
    order = {"spend_logs": "request_id", "usage_daily": "day, api_key, end_user, model",
             "deployment_health": "deployment_id", "deployment_latency_buckets": "deployment_id, bucket"}
    with store.reading() as cur:
        return {table: cur.execute(f"SELECT * FROM {table} ORDER BY {key}").all() for table, key in order.items()}


def test_one_page_gives_the_views_of_one_page_per_event(world: World) -> None:
    write_crowded_ledger(world)
    assert world.last_position() < 500  # so that the runner's default page holds them all
    world.new_runner(world.store, page_size=1).catch_up()
    one_per_event = view_tables(world.store)

    for page_size in (7, 500):
        world.new_runner(world.store, page_size=page_size).rebuild()
        assert view_tables(world.store) == one_per_event, page_size

    assert len(one_per_event["spend_logs"]) == 32
    (usage,) = one_per_event["usage_daily"]
    assert (usage["requests"], usage["failed_requests"], usage["denied_requests"]) == (30, 8, 6)
    health = {row["deployment_id"]: row for row in one_per_event["deployment_health"]}
    assert (health["dep-a"]["cooldown_count"], health["dep-a"]["cooling_until"]) == (4, None)
    assert (health["dep-b"]["cooldown_count"], health["dep-b"]["success_count"]) == (1, 10)
    assert health["dep-b"]["cooling_until"] is not None and health["dep-b"]["failure_count"] == 6
