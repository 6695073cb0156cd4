"""Billing as the gateway knows it from Lago: each customer's active subscription, its entitlements
and its prepaid wallet, the sync rounds that read them, and the webhooks Lago sent.

Three kinds of streams:
- `LagoCustomer`, one per customer id (Lago's `external_customer_id`): what changed and where the
  news came from (`source`: "sync" or "webhook:<type>"). A sync appends only what differs.
- `LagoSyncLog`, one per UTC day: each sync round's outcome, so that every process knows when the
  last good sync was (a stream per day keeps it short to load; a round ends every minute or so).
- `LagoWebhook`, one per `X-Lago-Unique-Key`: its existence is the dedupe.

Money is Decimal: a wallet's balance is `credits_ongoing_balance × rate_amount`, exactly.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Mapping
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate

_NAMESPACE = UUID("3c1f5a0e-8d2b-4f6a-b7e1-6d6f6e657461")
SYNC = "sync"
CUSTOMER_ID_FROM = ("customer", "team", "user", "key")
SCOPE_ALL, SCOPE_DUE = "all", "due"  # every customer seen, or those never synced or asking for a refresh
SUBSCRIPTION_FIELDS = ("external_id", "lago_id", "plan_code", "status", "name", "started_at", "subscription_at",
                       "ending_at", "terminated_at", "canceled_at")
TRANSACTION_FIELDS = ("lago_id", "lago_wallet_id", "status", "transaction_status", "transaction_type", "source",
                      "created_at", "settled_at")
ENDED = ("terminated", "canceled")
# Webhook types applied to a customer's stream; any other type is recorded as received only.
SUBSCRIPTION_TYPES = ("subscription.started", "subscription.updated", "subscription.terminated",
                      "subscription.canceled")
WALLET_TYPES = ("wallet.depleted_ongoing_balance",)
TRANSACTION_TYPES = ("wallet_transaction.created", "wallet_transaction.updated")
FEATURE_TYPES = ("feature.created", "feature.updated", "feature.deleted")
PLAN_REFRESH_TYPES = ("plan.updated",)  # a plan's entitlements changed: its subscribers are synced again
# A webhook of these types about a customer asks for that customer to be read again from Lago soon:
# it tells part of the story (a transaction does not carry the new ongoing balance).
REFRESHING_TYPES = (*SUBSCRIPTION_TYPES, *WALLET_TYPES, *TRANSACTION_TYPES)


def customer_id_of(kind: str, *, end_user: str, principal: Mapping[str, str] | None, key_hash: str) -> str | None:
    """The Lago customer (`external_customer_id`) a call names, as `customer_id_from` (`kind`) says:
    its end user (`customer`), its key's team or user, or the key itself (its hash); None if none."""
    principal = principal or {}
    named = {"customer": end_user, "team": principal.get("team_id"), "user": principal.get("user_id"),
             "key": key_hash}[kind]
    return named or None


def customer_stream_id(customer_id: str) -> UUID:
    return uuid5(_NAMESPACE, "lago-customer:" + customer_id)


def sync_stream_id(day: date) -> UUID:
    return uuid5(_NAMESPACE, "lago-sync:" + day.isoformat())


def webhook_stream_id(unique_key: str) -> UUID:
    return uuid5(_NAMESPACE, "lago-webhook:" + unique_key)


def webhook_source(webhook_type: str) -> str:
    return "webhook:" + webhook_type


# -- Lago's objects as the ledger keeps them -------------------------------------------------------

def subscription_state(subscription: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The fields that matter of a Lago subscription; None for none, or one that has ended."""
    if not subscription or subscription.get("status") in ENDED:
        return None
    return {name: subscription.get(name) for name in SUBSCRIPTION_FIELDS}


def choose_subscription(subscriptions: list[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The customer's subscription: the active one that started first (a customer may hold several)."""
    active = [s for s in subscriptions if s.get("status") == "active"]
    return min(active, key=lambda s: (s.get("started_at") or s.get("created_at") or "", s["external_id"]),
               default=None)


def features_state(entitlements: list[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Feature code -> {privilege code: value}, from a subscription's entitlement objects."""
    return {e["code"]: {p["code"]: p.get("value") for p in e.get("privileges") or ()} for e in entitlements}


def _amount(value: Any) -> Decimal:
    """Lago writes amounts as strings ("8.0"); a number that came as a float goes through its text."""
    return value if isinstance(value, Decimal) else Decimal(str(value))


def _moment(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


def usable_wallet(wallets: list[Mapping[str, Any]], metric_code: str) -> Mapping[str, Any] | None:
    """The wallet that pays for the gateway's usage: active, in USD, applying to charges of the billable
    metric; of several, the one Lago draws first (the lowest `priority`, then the oldest)."""
    usable = [w for w in wallets if w.get("status") == "active" and w.get("currency") == "USD"
              and _applies_to(w.get("applies_to") or {}, metric_code)]
    return min(usable, key=lambda w: (w.get("priority") or 50, w.get("created_at") or "", w["lago_id"]),
               default=None)


def _applies_to(limits: Mapping[str, Any], metric_code: str) -> bool:
    fee_types = limits.get("fee_types") or []
    metrics = limits.get("billable_metric_codes") or []
    return (not fee_types or "charge" in fee_types) and (not metrics or metric_code in metrics)


def wallet_state(wallet: Mapping[str, Any], *, fetched_at: datetime, depleted: bool | None = None) -> dict[str, Any]:
    """A Lago wallet as the entitlement check reads it. `computed_at` is when Lago computed the
    ongoing balance (`last_balance_sync_at`), else when the gateway read it."""
    credits = _amount(wallet["credits_ongoing_balance"])
    rate = _amount(wallet["rate_amount"])
    lago_time = _moment(wallet.get("last_balance_sync_at"))
    return {"lago_id": wallet["lago_id"], "code": wallet.get("code"), "currency": wallet["currency"],
            "rate_amount": rate, "credits_ongoing_balance": credits,
            "ongoing_balance_cents": wallet.get("ongoing_balance_cents"), "balance_cents": wallet.get("balance_cents"),
            "balance_usd": credits * rate, "computed_at": lago_time or fetched_at,
            "computed_by_lago": lago_time is not None,
            "depleted": credits <= 0 if depleted is None else depleted}


def transaction_state(transaction: Mapping[str, Any]) -> dict[str, Any]:
    """A wallet transaction with its amounts (`amount` in the currency, `credit_amount` in credits)."""
    state = {name: transaction.get(name) for name in TRANSACTION_FIELDS}
    state.update(amount=_amount(transaction.get("amount") or 0),
                 credit_amount=_amount(transaction.get("credit_amount") or 0))
    return state


def _same_wallet(old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> bool:
    """The same balance read again is no news, whenever Lago recomputed it: `computed_at` stays when
    Lago first showed that balance, so that every call admitted since is still subtracted from it
    (a balance unchanged at a later time may only mean Lago has not counted those calls yet)."""
    if old is None or new is None:
        return old is new
    ignored = ("computed_at", "computed_by_lago")
    return {k: v for k, v in old.items() if k not in ignored} == {k: v for k, v in new.items() if k not in ignored}


def _older(old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> bool:
    """True when `new` is an earlier reading of the same wallet than `old` (news that arrived late)."""
    return (old is not None and new is not None and old["lago_id"] == new["lago_id"] and new["computed_by_lago"]
            and old["computed_by_lago"] and new["computed_at"] < old["computed_at"])


# -- the customer's stream --------------------------------------------------------------------------

class LagoCustomer(Aggregate):
    """What Lago says of one customer: subscription, entitlements, wallet, wallet transactions."""

    class Tracked(Aggregate.Created):
        customer_id: str
        source: str
        at: datetime

    class SubscriptionChanged(Aggregate.Event):
        subscription: dict[str, Any] | None  # subscription_state(): None when there is no active one
        source: str
        at: datetime

        def apply(self, customer: "LagoCustomer") -> None:
            customer.subscription, customer.changed_at = self.subscription, self.at

    class EntitlementsChanged(Aggregate.Event):
        features: dict[str, dict[str, Any]]  # feature code -> {privilege code: value}
        source: str
        at: datetime

        def apply(self, customer: "LagoCustomer") -> None:
            customer.features, customer.changed_at = self.features, self.at

    class WalletChanged(Aggregate.Event):
        wallet: dict[str, Any] | None  # wallet_state(): None when no wallet pays for the usage
        source: str
        at: datetime

        def apply(self, customer: "LagoCustomer") -> None:
            customer.wallet, customer.changed_at = self.wallet, self.at

    class WalletTransactionReported(Aggregate.Event):
        """Credits bought, granted, voided or invoiced: the new ongoing balance is read from Lago next."""

        transaction: dict[str, Any]  # transaction_state()
        source: str
        at: datetime

        def apply(self, customer: "LagoCustomer") -> None:
            customer.changed_at = self.at

    @classmethod
    def track(cls, customer_id: str, *, source: str, at: datetime) -> "LagoCustomer":
        return cls._create(cls.Tracked, id=customer_stream_id(customer_id), customer_id=customer_id, source=source,
                           at=at)

    def __init__(self, customer_id: str, source: str, at: datetime) -> None:
        self.customer_id = customer_id
        self.subscription: dict[str, Any] | None = None
        self.features: dict[str, dict[str, Any]] = {}
        self.wallet: dict[str, Any] | None = None
        self.changed_at = at  # of the latest news, from Lago's API or a webhook

    def set_subscription(self, subscription: dict[str, Any] | None, *, source: str, at: datetime) -> bool:
        if subscription == self.subscription:
            return False
        self.trigger_event(self.SubscriptionChanged, subscription=subscription, source=source, at=at)
        return True

    def set_features(self, features: dict[str, dict[str, Any]], *, source: str, at: datetime) -> bool:
        if features == self.features:
            return False
        self.trigger_event(self.EntitlementsChanged, features=features, source=source, at=at)
        return True

    def set_wallet(self, wallet: dict[str, Any] | None, *, source: str, at: datetime) -> bool:
        if _same_wallet(self.wallet, wallet) or _older(self.wallet, wallet):
            return False
        self.trigger_event(self.WalletChanged, wallet=wallet, source=source, at=at)
        return True

    def report_transaction(self, transaction: dict[str, Any], *, source: str, at: datetime) -> None:
        self.trigger_event(self.WalletTransactionReported, transaction=transaction, source=source, at=at)

    def observe(self, reading: "LagoReading", source: str = SYNC) -> bool:
        """Records what a read of Lago's API found that differs; True when something did."""
        changes = [self.set_subscription(reading.subscription, source=source, at=reading.at),
                   self.set_features(reading.features, source=source, at=reading.at),
                   self.set_wallet(reading.wallet, source=source, at=reading.at)]
        return any(changes)


@dataclass(frozen=True)
class LagoReading:
    """One customer as Lago's API showed it at `at` (when the gateway started reading it)."""

    customer_id: str
    subscription: dict[str, Any] | None
    features: dict[str, dict[str, Any]]
    wallet: dict[str, Any] | None
    at: datetime


# -- webhooks ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class WebhookSubject:
    """What a webhook is about: its type, its object, and the customer it names, if any."""

    webhook_type: str
    object_type: str
    obj: Mapping[str, Any]
    customer_id: str | None
    # the subscription's external_id, the wallet's or transaction's lago_id, a feature's or plan's code
    object_id: str | None


def webhook_subject(payload: Mapping[str, Any]) -> WebhookSubject:
    webhook_type = str(payload.get("webhook_type") or "")
    object_type = str(payload.get("object_type") or "")
    obj = payload.get(object_type)
    obj = obj if isinstance(obj, Mapping) else {}
    wallet = obj.get("wallet") if isinstance(obj.get("wallet"), Mapping) else {}
    customer = obj.get("customer") if isinstance(obj.get("customer"), Mapping) else {}
    customer_id = obj.get("external_customer_id") or wallet.get("external_customer_id") or customer.get("external_id")
    object_id = obj.get("external_id") if object_type == "subscription" else obj.get("code") \
        if object_type in ("feature", "plan") else obj.get("lago_id")
    return WebhookSubject(webhook_type, object_type, obj, None if customer_id is None else str(customer_id),
                          None if object_id is None else str(object_id))


def apply_webhook(customer: LagoCustomer, subject: WebhookSubject, *, metric_code: str, at: datetime) -> bool:
    """Applies a webhook about this customer; True when it changed (or reported) something."""
    source = webhook_source(subject.webhook_type)
    if subject.webhook_type in SUBSCRIPTION_TYPES:
        return _apply_subscription(customer, subject.obj, source, at)
    if subject.webhook_type in WALLET_TYPES:
        return _apply_depleted(customer, subject.obj, metric_code, source, at)
    if subject.webhook_type in TRANSACTION_TYPES:
        customer.report_transaction(transaction_state(subject.obj), source=source, at=at)
        return True
    if subject.webhook_type in FEATURE_TYPES:
        return _apply_feature(customer, subject, source, at)
    return False


def _apply_subscription(customer: LagoCustomer, subscription: Mapping[str, Any], source: str, at: datetime) -> bool:
    current = customer.subscription
    same = current is not None and current["external_id"] == subscription.get("external_id")
    if subscription.get("status") in ENDED:
        return same and customer.set_subscription(None, source=source, at=at)
    if subscription.get("status") == "active" and (current is None or same):
        return customer.set_subscription(subscription_state(subscription), source=source, at=at)
    return False


def _apply_depleted(customer: LagoCustomer, wallet: Mapping[str, Any], metric_code: str, source: str,
                    at: datetime) -> bool:
    """The wallet that pays for the usage ran dry (another wallet's news waits for the refresh)."""
    if usable_wallet([wallet], metric_code) is None:
        return False
    if customer.wallet is not None and customer.wallet["lago_id"] != wallet["lago_id"]:
        return False
    return customer.set_wallet(wallet_state(wallet, fetched_at=at, depleted=True), source=source, at=at)


def _apply_feature(customer: LagoCustomer, subject: WebhookSubject, source: str, at: datetime) -> bool:
    """A feature deleted leaves every subscription; one updated keeps only the privileges it still has
    (values are set on plans and subscriptions, so a feature created or a privilege added gives none)."""
    code = subject.object_id
    if code is None or code not in customer.features:
        return False
    features = dict(customer.features)
    if subject.webhook_type == "feature.deleted":
        del features[code]
    else:
        kept = {p.get("code") for p in subject.obj.get("privileges") or ()}
        features[code] = {name: value for name, value in features[code].items() if name in kept}
    return customer.set_features(features, source=source, at=at)


class LagoWebhook(Aggregate):
    """A webhook Lago sent, once, whatever its retries: what it was about and whom it changed."""

    class Received(Aggregate.Created):
        unique_key: str
        webhook_type: str
        object_type: str
        customer_id: str | None
        object_id: str | None
        algorithm: str  # how its signature was checked: "hmac" or "jwt"
        customers: list[str]  # the customers whose stream it changed, in the same commit
        at: datetime

    @classmethod
    def receive(cls, unique_key: str, subject: WebhookSubject, *, algorithm: str, customers: list[str],
                at: datetime) -> "LagoWebhook":
        return cls._create(cls.Received, id=webhook_stream_id(unique_key), unique_key=unique_key,
                           webhook_type=subject.webhook_type, object_type=subject.object_type,
                           customer_id=subject.customer_id, object_id=subject.object_id, algorithm=algorithm,
                           customers=customers, at=at)

    def __init__(self, unique_key: str, webhook_type: str, object_type: str, customer_id: str | None,
                 object_id: str | None, algorithm: str, customers: list[str], at: datetime) -> None:
        self.unique_key = unique_key
        self.webhook_type = webhook_type


# -- sync rounds ------------------------------------------------------------------------------------

class LagoSyncLog(Aggregate):
    """The sync rounds of one UTC day and how each ended."""

    class Opened(Aggregate.Created):
        day: str  # ISO date

    class SyncSucceeded(Aggregate.Event):
        scope: str  # SCOPE_ALL: every customer seen; SCOPE_DUE: those never synced or asking for a refresh
        started_at: datetime  # what the round read is at least this fresh
        at: datetime
        customers: int  # read from Lago
        changed: int  # whose stream changed
        refreshed: list[str]  # the customers a SCOPE_DUE round read ([] for SCOPE_ALL: it read them all)
        skipped: list[str]  # customers Lago refused to show (400, 422, ...): not read this round

    class SyncFailed(Aggregate.Event):
        scope: str
        started_at: datetime
        at: datetime
        reason: str  # what failed (Lago's status or the connection error), never a credential
        customers: int  # read before it failed (their changes are recorded)
        changed: int

    @classmethod
    def open(cls, day: date) -> "LagoSyncLog":
        return cls._create(cls.Opened, id=sync_stream_id(day), day=day.isoformat())

    def __init__(self, day: str) -> None:
        self.day = day

    def succeeded(self, *, scope: str, started_at: datetime, at: datetime, customers: int, changed: int,
                  refreshed: list[str], skipped: list[str]) -> None:
        self.trigger_event(self.SyncSucceeded, scope=scope, started_at=started_at, at=at, customers=customers,
                           changed=changed, refreshed=refreshed, skipped=skipped)

    def failed(self, *, scope: str, started_at: datetime, at: datetime, reason: str, customers: int,
               changed: int) -> None:
        self.trigger_event(self.SyncFailed, scope=scope, started_at=started_at, at=at, reason=reason,
                           customers=customers, changed=changed)


# -- what the entitlement check reads -------------------------------------------------------------

@dataclass(frozen=True)
class Wallet:
    wallet_id: str  # Lago's lago_id
    currency: str  # always USD: other wallets are not used
    balance_usd: Decimal  # credits_ongoing_balance × rate_amount, as Lago last computed it
    computed_at: datetime  # when Lago computed it (last_balance_sync_at), else when the gateway read it
    depleted: bool


@dataclass(frozen=True)
class CustomerBilling:
    customer_id: str
    subscription_id: str | None  # the active subscription's external_id
    plan_code: str | None
    subscription_status: str | None
    features: Mapping[str, Mapping[str, Any]]  # feature code -> {privilege code: value}
    wallet: Wallet | None
    synced_at: datetime  # when Lago's API last confirmed this customer's state
