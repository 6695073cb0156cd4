"""What the gateway reads of Lago's billing: a customer's active subscription, a subscription's
entitlements, a customer's wallets, and the public key that signs Lago's JWT webhooks.

Lists are followed page by page (`meta.next_page`). A customer or subscription Lago does not know
(404 `customer_not_found`, `subscription_not_found`) reads as none; any other refusal is a LagoError.
"""
from __future__ import annotations

import base64
from typing import Any
from urllib.parse import quote

import httpx

from moneta.application.config import LagoSettings
from moneta.domain.billing import choose_subscription
from moneta.infrastructure.lago_http import LagoError, call, client

PER_PAGE = 100
_NOT_FOUND = ("customer_not_found", "subscription_not_found")


class LagoBillingClient:
    def __init__(self, settings: LagoSettings, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._http = client(settings, transport=transport)

    async def active_subscription(self, customer_id: str) -> dict[str, Any] | None:
        """The customer's active subscription (the one that started first, if several); None without one."""
        subscriptions = await self._all("/subscriptions", "subscriptions",
                                        {"external_customer_id": customer_id, "status[]": "active"})
        chosen = choose_subscription(subscriptions)
        return None if chosen is None else dict(chosen)

    async def entitlements(self, subscription_external_id: str) -> list[dict[str, Any]]:
        """The subscription's effective entitlements (the plan's, with the subscription's overrides)."""
        body = await self._get(f"/subscriptions/{quote(subscription_external_id, safe='')}/entitlements")
        return [] if body is None else list(body.get("entitlements") or [])

    async def wallets(self, customer_id: str) -> list[dict[str, Any]]:
        """The customer's active wallets."""
        wallets = await self._all("/wallets", "wallets", {"external_customer_id": customer_id})
        return [wallet for wallet in wallets if wallet.get("status") == "active"]

    async def webhook_public_key(self) -> str:
        """The PEM of the RSA key whose private half signs the JWT webhooks (Lago sends it base64-encoded)."""
        body = await call(self._http, "GET", "/webhooks/json_public_key")
        return base64.b64decode(body["webhook"]["public_key"]).decode()

    async def close(self) -> None:
        await self._http.aclose()

    async def _all(self, path: str, name: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        page: int | None = 1
        while page is not None:
            body = await self._get(path, {**params, "page": page, "per_page": PER_PAGE})
            if body is None:
                return []
            items.extend(body.get(name) or [])
            following = (body.get("meta") or {}).get("next_page")
            page = following if isinstance(following, int) and following > page else None
        return items

    async def _get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        """Lago's answer; None when it does not know the customer or subscription."""
        try:
            return await call(self._http, "GET", path, params=params)
        except LagoError as error:
            if error.status == 404 and isinstance(error.body, dict) and error.body.get("code") in _NOT_FOUND:
                return None
            raise
