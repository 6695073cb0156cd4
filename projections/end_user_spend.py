"""What the library's `BudgetManager` reads: an end user's spend per budget period (the budget
view), per model since a moment (the spend log), and the end users that have a budget (the access
view). Exact decimals, summed here rather than in SQL."""
from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from moneta.projections.access import decoded
from moneta.projections.view_store import ViewStore, as_datetime, as_decimal


class EndUserSpend:
    def __init__(self, store: ViewStore) -> None:
        self.store = store

    def spend(self, scope: str, period: str) -> Decimal:
        with self.store.reading() as cur:
            row = cur.execute("SELECT spend FROM budget_spend WHERE scope = ? AND period = ?", (scope, period)).one()
        return as_decimal(row["spend"]) if row else Decimal(0)

    def by_model(self, end_user: str, since: datetime | None) -> dict[str, Decimal]:
        """Each model's spend by the end user's calls admitted at `since` or later (all: None)."""
        with self.store.reading() as cur:
            rows = cur.execute("SELECT model, spend, start_time FROM spend_logs WHERE end_user = ?", (end_user,)).all()
        costs: dict[str, Decimal] = {}
        for row in rows:
            started = as_datetime(row["start_time"])
            if since is None or (started is not None and started >= since):
                costs[row["model"]] = costs.get(row["model"], Decimal(0)) + as_decimal(row["spend"])
        return costs

    def customers_with_budget(self) -> list[dict[str, Any]]:
        """The live end users that have a budget of their own, oldest first."""
        with self.store.reading() as cur:
            rows = cur.execute("SELECT data FROM access_entities WHERE kind = ?", ("customer",)).all()
        found = [decoded(row["data"]) for row in rows]
        return sorted((data for data in found if data.get("max_budget") is not None and not data.get("deleted")),
                      key=lambda data: data.get("created_at") or "")
