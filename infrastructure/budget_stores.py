"""Which budget store a server uses (called by the composition root, in each worker process)."""
from __future__ import annotations

from moneta.application.budget_store import BudgetStore, SpentReader
from moneta.infrastructure.budgets_database import DatabaseBudgetStore
from moneta.infrastructure.budgets_in_process import InProcessBudgetStore
from moneta.infrastructure.budgets_redis import RedisBudgetStore


def budget_store_for(redis_url: str | None, database_url: str | None, workers: int,
                     reader: SpentReader) -> BudgetStore:
    """As `limit_store_for`: Redis when configured (every worker and host shares the counters);
    else the ledger's database when `workers` > 1 (PostgreSQL, or a SQLite file beside the ledger's);
    else this process's memory. `reader` gives a counter never seen its settled spend."""
    if redis_url:
        return RedisBudgetStore(redis_url, reader)
    if workers > 1:
        return DatabaseBudgetStore.open(database_url, reader)
    return InProcessBudgetStore(reader)
