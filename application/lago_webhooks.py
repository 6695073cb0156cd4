"""Lago's webhooks, received: the signature checked, each webhook recorded once (by its
`X-Lago-Unique-Key`), and what it says applied to the customers it concerns, all in one commit.

Applied: subscription started, updated, terminated or canceled; a wallet's ongoing balance
depleted; wallet transactions (recorded with their amounts: the read side then reads the
customer's wallet again, for a transaction does not carry the new ongoing balance); features
updated or deleted (on every customer whose subscription holds them). `plan.updated` is recorded
and the read side reads the plan's subscribers again. Any other type is recorded as received.
A webhook about a customer the gateway never read from Lago changes no stream: the customer is
read in full when first seen.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Callable, Mapping, Protocol

from moneta.application.billing_state import BillingDirectory
from moneta.application.config import LagoSettings
from moneta.application.ports import AggregateReader
from moneta.domain.billing import (
    FEATURE_TYPES, TRANSACTION_TYPES, LagoCustomer, LagoWebhook, WebhookSubject, apply_webhook, customer_stream_id,
    webhook_stream_id, webhook_subject,
)
from moneta.domain.errors import AuthenticationError, BadRequestError, ServiceUnavailableError

SIGNATURE = "x-lago-signature"
ALGORITHM = "x-lago-signature-algorithm"
UNIQUE_KEY = "x-lago-unique-key"
_ATTEMPTS = 3  # a customer's stream moved while the webhook was applied: apply it again on the new state


class SignatureCheck(Protocol):
    async def verify(self, body: bytes, signature: str | None, algorithm: str | None) -> str | None:
        """"hmac" or "jwt" when the signature is Lago's, else None; raises ServiceUnavailableError when
        it cannot be checked now (Lago's public key out of reach)."""
        ...


@dataclass(frozen=True)
class WebhookOutcome:
    unique_key: str
    webhook_type: str
    duplicate: bool  # received before: nothing new recorded
    customers: tuple[str, ...] = ()  # whose state it changed


class LagoWebhookInbox:
    def __init__(self, settings: LagoSettings, signatures: SignatureCheck, reader: AggregateReader,
                 save: Callable[..., bool], directory: BillingDirectory, *,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        """`save(*aggregates)` commits them together; False when a stream moved meanwhile."""
        self.settings = settings
        self.signatures = signatures
        self.reader = reader
        self.save = save
        self.directory = directory
        self.clock = clock

    async def receive(self, body: bytes, headers: Mapping[str, str]) -> WebhookOutcome:
        """Answers once the webhook is durable; AuthenticationError (nothing recorded) for a bad or
        missing signature, BadRequestError for a body that is not a webhook."""
        algorithm = await self.signatures.verify(body, headers.get(SIGNATURE), headers.get(ALGORITHM))
        if algorithm is None:
            raise AuthenticationError("The webhook's X-Lago-Signature is missing or not Lago's.",
                                      code="invalid_signature")
        subject = self._resolved(webhook_subject(_payload(body)))
        # Without Lago's unique key (older Lago), the body names the webhook: a retry resends it as it was.
        unique_key = headers.get(UNIQUE_KEY) or "sha256:" + hashlib.sha256(body).hexdigest()
        for _ in range(_ATTEMPTS):
            outcome = await asyncio.to_thread(self._record, unique_key, subject, algorithm)
            if outcome is not None:
                return outcome
        raise ServiceUnavailableError("The webhook's customers kept changing while it was applied; send it again.",
                                      code="concurrent_change")

    def _resolved(self, subject: WebhookSubject) -> WebhookSubject:
        """A wallet transaction without its wallet names its customer through the wallet's id."""
        if subject.customer_id is None and subject.webhook_type in TRANSACTION_TYPES:
            wallet_id = subject.obj.get("lago_wallet_id")
            customer_id = self.directory.customer_of_wallet(str(wallet_id)) if wallet_id else None
            return replace(subject, customer_id=customer_id)
        return subject

    def _record(self, unique_key: str, subject: WebhookSubject, algorithm: str) -> WebhookOutcome | None:
        """The outcome, or None when a customer's stream moved meanwhile (apply it again)."""
        if self.reader.get(webhook_stream_id(unique_key)) is not None:
            return WebhookOutcome(unique_key, subject.webhook_type, duplicate=True)
        at = self.clock()
        changed = [customer for customer in self._concerned(subject)
                   if apply_webhook(customer, subject, metric_code=self.settings.billable_metric_code, at=at)]
        customers = [customer.customer_id for customer in changed]
        webhook = LagoWebhook.receive(unique_key, subject, algorithm=algorithm, customers=customers, at=at)
        if self.save(webhook, *changed):
            return WebhookOutcome(unique_key, subject.webhook_type, duplicate=False, customers=tuple(customers))
        if self.reader.get(webhook_stream_id(unique_key)) is not None:  # another worker took it first
            return WebhookOutcome(unique_key, subject.webhook_type, duplicate=True)
        return None

    def _concerned(self, subject: WebhookSubject) -> list[LagoCustomer]:
        if subject.webhook_type in FEATURE_TYPES:
            ids = self.directory.holders(subject.object_id) if subject.object_id else []
        else:
            ids = [subject.customer_id] if subject.customer_id else []
        found = (self.reader.get(customer_stream_id(customer_id)) for customer_id in ids)
        return [customer for customer in found if customer is not None]


def _payload(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body, parse_float=Decimal)  # amounts stay exact
    except ValueError:
        payload = None
    if not isinstance(payload, dict) or not isinstance(payload.get("webhook_type"), str):
        raise BadRequestError("A Lago webhook is a JSON object with its webhook_type.", code="invalid_webhook")
    return payload
