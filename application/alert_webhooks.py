"""What a budget alert webhook carries: a Slack-compatible JSON body and its signature headers.

The signature is `X-Moneta-Signature: sha256=<hex>`, the HMAC-SHA256 with the configured secret
of `<X-Moneta-Timestamp>.<raw body>`: a receiver recomputes it over the bytes it got, compares in
constant time, and refuses a timestamp far from its clock (a replayed request keeps its old one).
`Idempotency-Key` is the alert's id, the same on every retry: a receiver keeps the first.
"""
from __future__ import annotations

import hashlib
import hmac
import json
from decimal import Decimal
from typing import Any

from moneta.domain.budget_alerts import BudgetAlert

_KINDS = {"soft_budget": "soft budget", "max_budget": "budget"}


def body(alert: BudgetAlert) -> bytes:
    fields = {"alert_id": alert.alert_id, "scope": alert.scope, "period": alert.period, "kind": alert.kind,
              "threshold": _money(alert.threshold), "spend": _money(alert.spend), "limit": _money(alert.limit),
              "resets_at": alert.resets_at, "request_id": alert.request_id,
              "crossed_at": alert.crossed_at.isoformat()}
    return json.dumps({"text": text(alert), **fields}, separators=(",", ":")).encode()


def text(alert: BudgetAlert) -> str:
    resets = f"; it resets at {alert.resets_at}" if alert.resets_at else ""
    return (f"Budget alert: {alert.scope} crossed its {_KINDS.get(alert.kind, alert.kind)} of"
            f" ${_money(alert.threshold)} in period {alert.period}: ${_money(alert.spend)} spent of a"
            f" ${_money(alert.limit)} limit{resets}.")


def headers(alert_id: str, raw_body: bytes, secret: str, timestamp: int) -> dict[str, str]:
    return {"Content-Type": "application/json", "Idempotency-Key": alert_id,
            "X-Moneta-Timestamp": str(timestamp), "X-Moneta-Signature": signature(raw_body, secret, timestamp)}


def signature(raw_body: bytes, secret: str, timestamp: int) -> str:
    signed = f"{timestamp}.".encode() + raw_body
    return "sha256=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def _money(amount: Any) -> str:
    """Exact, never in exponent form (Decimal('1E+1') reads 10)."""
    return format(Decimal(amount), "f")
