"""The billing part of the fake Lago, written from Lago's OpenAPI description: customers,
subscriptions (listed with Lago's pagination `meta`), a subscription's entitlements, wallets, the
webhooks' public key, and webhooks signed as Lago signs them.

    fake = FakeLago(); billing = install(fake); fake.start()
    billing.start_subscription("acme", plan_code="pro"); billing.add_wallet("acme", credits="50")
    body, headers = billing.signed_webhook(billing.webhook("wallet.depleted_ongoing_balance", "wallet", wallet))
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import textwrap
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_DOWN, Decimal
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.fake_lago import FakeLago, json_response, not_found

ORGANIZATION_ID = "1a901a90-1a90-1a90-1a90-1a901a901a90"


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(key: rsa.RSAPrivateKey) -> str:
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()


@dataclass
class Billing:
    fake: FakeLago
    hmac_key: str = "lago-org-hmac-key"  # the organization's HMAC key, as Lago's settings show it
    max_per_page: int = 100  # lower it to make lists span pages
    customers: dict[str, dict[str, Any]] = field(default_factory=dict)
    subscriptions: list[dict[str, Any]] = field(default_factory=list)  # every one, whatever its status
    entitlements: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # by subscription external_id
    wallets: dict[str, dict[str, Any]] = field(default_factory=dict)  # by lago_id
    rsa_key: rsa.RSAPrivateKey = field(default_factory=new_rsa_key)

    # -- state, for tests -----------------------------------------------------------------------

    def add_customer(self, external_id: str) -> dict[str, Any]:
        if external_id not in self.customers:
            self.customers[external_id] = {"lago_id": str(uuid.uuid4()), "external_id": external_id,
                                           "name": external_id, "currency": "USD", "created_at": now_iso()}
        return self.customers[external_id]

    def start_subscription(self, customer_id: str, external_id: str | None = None, plan_code: str = "pro",
                           started_at: str | None = None) -> dict[str, Any]:
        customer = self.add_customer(customer_id)
        started = started_at or now_iso()
        subscription = {
            "lago_id": str(uuid.uuid4()), "external_id": external_id or f"sub-{customer_id}-{uuid.uuid4().hex[:6]}",
            "lago_customer_id": customer["lago_id"], "external_customer_id": customer_id, "billing_time": "calendar",
            "name": None, "plan_code": plan_code, "status": "active", "created_at": started, "canceled_at": None,
            "started_at": started, "ending_at": None, "subscription_at": started, "terminated_at": None,
            "trial_ended_at": None, "current_billing_period_started_at": started,
            "current_billing_period_ending_at": None, "previous_plan_code": None, "next_plan_code": None,
            "downgrade_plan_date": None, "on_termination_credit_note": None, "on_termination_invoice": "generate",
        }
        self.subscriptions.append(subscription)
        return subscription

    def terminate_subscription(self, external_id: str) -> dict[str, Any]:
        subscription = self._active_subscription(external_id)
        assert subscription is not None, f"no active subscription {external_id}"
        subscription.update(status="terminated", terminated_at=now_iso())
        return subscription

    def set_entitlements(self, subscription_external_id: str,
                         features: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
        """`{"llm_access": {"models": "gpt-4o,claude"}}`: each feature with its privileges' values."""
        self.entitlements[subscription_external_id] = [
            {"code": code, "name": code.replace("_", " ").title(), "description": None, "overrides": {},
             "privileges": [{"code": name, "name": name, "value_type": _value_type(value), "config": {},
                             "value": value, "plan_value": value, "override_value": None}
                            for name, value in privileges.items()]}
            for code, privileges in features.items()]
        return self.entitlements[subscription_external_id]

    def add_wallet(self, customer_id: str, *, credits: str = "100", rate_amount: str = "1", currency: str = "USD",
                   priority: int = 50, code: str = "prepaid", synced_at: str | None = None,
                   applies_to: dict[str, Any] | None = None) -> dict[str, Any]:
        customer = self.add_customer(customer_id)
        wallet = {
            "lago_id": str(uuid.uuid4()), "lago_customer_id": customer["lago_id"], "external_customer_id": customer_id,
            "billing_entity_code": "default", "status": "active", "currency": currency, "name": "Prepaid",
            "code": code, "priority": priority, "rate_amount": rate_amount, "consumed_credits": "0.0",
            "created_at": now_iso(), "expiration_at": None, "last_consumed_credit_at": None, "terminated_at": None,
            "invoice_requires_successful_payment": False, "ongoing_usage_balance_cents": 0,
            "credits_ongoing_usage_balance": "0.0", "applies_to": applies_to or {}, "recurring_transaction_rules": [],
            "paid_top_up_min_amount_cents": None, "paid_top_up_max_amount_cents": None, "metadata": [],
        }
        self.wallets[wallet["lago_id"]] = wallet
        return self.set_wallet_balance(wallet["lago_id"], credits, synced_at=synced_at)

    def set_wallet_balance(self, lago_id: str, credits: str, *, synced_at: str | None = None) -> dict[str, Any]:
        """The ongoing balance as Lago's refresh job leaves it (with its `last_balance_sync_at`)."""
        wallet = self.wallets[lago_id]
        cents = int((Decimal(credits) * Decimal(wallet["rate_amount"]) * 100).to_integral_value(ROUND_DOWN))
        wallet.update(credits_balance=credits, balance_cents=cents, credits_ongoing_balance=credits,
                      ongoing_balance_cents=cents, last_balance_sync_at=synced_at or now_iso())
        return wallet

    def terminate_wallet(self, lago_id: str) -> dict[str, Any]:
        self.wallets[lago_id].update(status="terminated", terminated_at=now_iso())
        return self.wallets[lago_id]

    def rotate_webhook_key(self) -> None:
        """Lago's signing key changes (a new LAGO_RSA_PRIVATE_KEY)."""
        self.rsa_key = new_rsa_key()

    # -- webhooks ---------------------------------------------------------------------------------

    def webhook(self, webhook_type: str, object_type: str, obj: dict[str, Any]) -> dict[str, Any]:
        """A webhook's payload, as Lago posts it."""
        if object_type == "subscription":
            obj = {**obj, "customer": self.customers.get(obj["external_customer_id"], {}),
                   "plan": {"code": obj["plan_code"], "name": obj["plan_code"]}}
        if object_type == "wallet_transaction" and "wallet" not in obj:
            obj = {**obj, "wallet": self.wallets.get(obj["lago_wallet_id"], {})}
        return {"webhook_type": webhook_type, "object_type": object_type, "organization_id": ORGANIZATION_ID,
                object_type: obj}

    def transaction(self, wallet_id: str, credits: str, *, kind: str = "inbound",
                    status: str = "settled") -> dict[str, Any]:
        """A wallet transaction object (`WalletTransactionObject`)."""
        rate = Decimal(self.wallets[wallet_id]["rate_amount"])
        return {"lago_id": str(uuid.uuid4()), "lago_wallet_id": wallet_id, "lago_invoice_id": None,
                "lago_credit_note_id": None, "lago_voided_invoice_id": None, "status": status, "source": "manual",
                "transaction_status": "purchased", "transaction_type": kind, "credit_amount": credits,
                "amount": str(Decimal(credits) * rate), "remaining_amount_cents": None, "remaining_credit_amount": None,
                "priority": 50, "invoice_requires_successful_payment": False, "settled_at": now_iso(),
                "failed_at": None, "created_at": now_iso(), "metadata": [], "name": None, "payment_method": None}

    def signed_webhook(self, payload: dict[str, Any], algorithm: str = "hmac", hmac_key: str | None = None,
                       unique_key: str | None = None) -> tuple[bytes, dict[str, str]]:
        """The body and headers Lago posts: `X-Lago-Signature` is base64(HMAC-SHA256(key, body)) for
        `hmac`, else an RS256 JWT whose `data` is the body and `iss` Lago's URL."""
        body = json.dumps(payload, separators=(",", ":"), default=str).encode()
        if algorithm == "hmac":
            digest = hmac.new((hmac_key or self.hmac_key).encode(), body, hashlib.sha256).digest()
            signature = base64.b64encode(digest).decode()
        else:
            signature = jwt.encode({"data": body.decode(), "iss": self.fake.url}, self.rsa_key, algorithm="RS256")
        return body, {"Content-Type": "application/json", "X-Lago-Signature": signature,
                      "X-Lago-Signature-Algorithm": algorithm, "X-Lago-Unique-Key": unique_key or str(uuid.uuid4())}

    # -- the API ------------------------------------------------------------------------------------

    def _active_subscription(self, external_id: str, status: str = "active") -> dict[str, Any] | None:
        return next((s for s in self.subscriptions if s["external_id"] == external_id and s["status"] == status), None)

    async def get_customer(self, request: web.Request) -> web.Response:
        customer = self.customers.get(request.match_info["external_customer_id"])
        return not_found("customer") if customer is None else json_response({"customer": customer})

    async def list_subscriptions(self, request: web.Request) -> web.Response:
        customer_id = request.query.get("external_customer_id")
        if customer_id is not None and customer_id not in self.customers:
            return not_found("customer")
        statuses = request.query.getall("status[]", ["active"])
        plan = request.query.get("plan_code")
        found = [s for s in self.subscriptions if s["status"] in statuses
                 and customer_id in (None, s["external_customer_id"]) and plan in (None, s["plan_code"])]
        return self._page(request, "subscriptions", found)

    async def get_subscription(self, request: web.Request) -> web.Response:
        subscription = self._active_subscription(request.match_info["external_id"],
                                                 request.query.get("status", "active"))
        return not_found("subscription") if subscription is None else json_response({"subscription": subscription})

    async def subscription_entitlements(self, request: web.Request) -> web.Response:
        external_id = request.match_info["external_id"]
        if self._active_subscription(external_id, request.query.get("subscription_status", "active")) is None:
            return not_found("subscription")
        return json_response({"entitlements": self.entitlements.get(external_id, [])})

    async def list_wallets(self, request: web.Request) -> web.Response:
        customer_id = request.query.get("external_customer_id")
        if customer_id not in self.customers:
            return not_found("customer")
        return self._page(request, "wallets", [w for w in self.wallets.values()
                                               if w["external_customer_id"] == customer_id])

    async def get_wallet(self, request: web.Request) -> web.Response:
        wallet = self.wallets.get(request.match_info["lago_id"])
        return not_found("wallet") if wallet is None else json_response({"wallet": wallet})

    async def json_public_key(self, request: web.Request) -> web.Response:
        """As Lago answers it: `Base64.encode64` of the PEM (lines of 60 characters)."""
        encoded = base64.b64encode(public_pem(self.rsa_key).encode()).decode()
        return json_response({"webhook": {"public_key": "\n".join(textwrap.wrap(encoded, 60)) + "\n"}})

    def _page(self, request: web.Request, name: str, items: list[dict[str, Any]]) -> web.Response:
        page = max(int(request.query.get("page", 1)), 1)
        per_page = min(max(int(request.query.get("per_page", 20)), 1), self.max_per_page)
        total_pages = max((len(items) + per_page - 1) // per_page, 1)
        return json_response({name: items[(page - 1) * per_page:page * per_page], "meta": {
            "current_page": page, "next_page": page + 1 if page < total_pages else None,
            "prev_page": page - 1 if page > 1 else None, "total_pages": total_pages, "total_count": len(items)}})


def _value_type(value: Any) -> str:
    return "boolean" if isinstance(value, bool) else "integer" if isinstance(value, int) else "string"


def install(fake: FakeLago) -> Billing:
    """Adds the billing state and routes to `fake` (before its start())."""
    billing = Billing(fake)
    fake.route("GET", "/customers/{external_customer_id}", billing.get_customer)
    fake.route("GET", "/subscriptions", billing.list_subscriptions)
    fake.route("GET", "/subscriptions/{external_id}", billing.get_subscription)
    fake.route("GET", "/subscriptions/{external_id}/entitlements", billing.subscription_entitlements)
    fake.route("GET", "/wallets", billing.list_wallets)
    fake.route("GET", "/wallets/{lago_id}", billing.get_wallet)
    fake.route("GET", "/webhooks/json_public_key", billing.json_public_key)
    return billing
