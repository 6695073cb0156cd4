"""The port to the budget counters (`infrastructure.budgets_*` implement it): per budget and
period, what is spent and what calls in flight hold, in nano-dollars (see `domain.budgets`)."""
from __future__ import annotations

from typing import Protocol, Sequence

from moneta.domain.budgets import BudgetDecision, BudgetLine


class BudgetUnverifiable(Exception):
    """The counters cannot be read (Redis or the database unreachable): a budgeted call is refused
    (503) unless the operator chose to fail open."""


class SpentReader(Protocol):
    def spent(self, lines: Sequence[BudgetLine]) -> list[int]:
        """Each line's settled spend in its period as the ledger's budget view holds it, once the view
        has caught up with the ledger (nano-dollars, same order). Blocking: call it in a thread."""
        ...


class BudgetStore(Protocol):
    mode: str  # "in_process" | "redis" | "database"

    async def reserve(self, request_id: str, lines: Sequence[BudgetLine], wanted: int, minimum: int,
                      now: float) -> BudgetDecision:
        """All or nothing: reads each line's counters (a counter never seen is first set from the
        SpentReader), drops reservations whose lease ended, decides with `domain.budgets.decide`,
        and when allowed adds the reserved amount to every line, leased to `request_id` until
        `now + LEASE_S`. BudgetUnverifiable when the counters cannot be reached."""
        ...

    async def settle(self, request_id: str, lines: Sequence[BudgetLine], cost: int, now: float) -> None:
        """Ends the request's reservation on every line and adds `cost` (nano-dollars) to its spend."""
        ...

    async def close(self) -> None: ...
