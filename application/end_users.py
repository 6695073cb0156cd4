"""End users (LiteLLM's customers), named by a call's `user` field or the
`x-litellm-end-user-id` header: a blocked one is refused; an unknown one becomes a customer on
its first call, with `litellm_settings.max_end_user_budget_id` as its budget."""
from __future__ import annotations

import asyncio
import logging

from moneta.application.access_directory import Directory
from moneta.application.management.context import AccessStore
from moneta.application.management.customers import first_use
from moneta.domain.access import entity_id
from moneta.domain.errors import ConflictError, PermissionDeniedError

log = logging.getLogger("moneta.access")


class EndUsers:
    def __init__(self, directory: Directory, store: AccessStore, default_budget_id: str | None = None) -> None:
        self.directory = directory
        self._store = store
        self._default_budget_id = default_budget_id
        self._creating: set[str] = set()

    async def check(self, end_user: str) -> None:
        """PermissionDeniedError (403) for a blocked or deleted customer. One this worker does not
        know is looked up in the ledger once (made through another server a moment ago), and
        recorded in the background when it is new there too (the call does not wait for that)."""
        customer = self.directory.get("customer", end_user)
        if customer is None and end_user not in self._creating:
            customer = await asyncio.to_thread(self._stored, end_user)
            if customer is None:
                self._create(end_user)
        if customer is None:
            return
        if customer.get("deleted"):
            raise PermissionDeniedError(f"The end user {end_user!r} was deleted.", param="user", code="customer_deleted")
        elif customer.get("blocked"):
            raise PermissionDeniedError(f"The end user {end_user!r} is blocked.", param="user", code="customer_blocked")

    def _stored(self, end_user: str) -> dict | None:
        stored = self._store.get(entity_id("customer", end_user))
        if stored is None:
            return None
        self.directory.put("customer", end_user, stored.state)
        return self.directory.get("customer", end_user)

    def _create(self, end_user: str) -> None:
        if end_user in self._creating:
            return
        self._creating.add(end_user)
        asyncio.get_running_loop().create_task(self._save(end_user))

    async def _save(self, end_user: str) -> None:
        customer = first_use(end_user, self._default_budget_id)
        try:
            await asyncio.to_thread(self._store.save, customer)
            self.directory.put("customer", end_user, customer.state)
        except ConflictError:  # another worker created it first: the poller brings it here
            pass
        except Exception as error:  # the ledger is down: the next call tries again
            log.warning("could not record the new end user (%s)", type(error).__name__)
        finally:
            self._creating.discard(end_user)
