"""Lago's usage events on the fake Lago (`fake_lago.FakeLago`), written from its OpenAPI description
and its server's behaviour:

- `POST /events` (`{"event": EventInputObject}`) and `POST /events/batch` (`{"events": [...]}`, at
  most 100, else 422 `{"events": ["too_many_events"]}`; all or nothing: one invalid event refuses
  the whole batch with 422 and `error_details` keyed by the event's index);
- `transaction_id` is unique per `external_subscription_id`: 422 `{"transaction_id":
  ["value_already_exist"]}`;
- `timestamp` is Unix seconds (an integer, or a number or numeric string with decimals); anything
  else, an ISO 8601 string included, is 422 `{"timestamp": ["invalid_format"]}`;
- an unknown subscription is refused (404 `subscription_not_found` for one event, as Lago's
  validating versions answer; in a batch, 422 `{"external_subscription_id": ["subscription_not_found"]}`
  at its index);
- `GET /events` with `external_subscription_id`, `code`, `timestamp_from`, `timestamp_to`,
  `timestamp_from_started_at`, `page` and `per_page` (20 by default), newest first;
  `GET /events/{transaction_id}` (the first found, or the one of `external_subscription_id`).

Events keep `precise_total_amount_cents` as Lago's decimal(40, 15) column does, and show their
timestamp as ISO 8601 with milliseconds.
"""
from __future__ import annotations

import asyncio
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, Callable, Iterable

from aiohttp import web

from tests.fake_lago import FakeLago, json_response, not_found, unprocessable

MAX_BATCH = 100
DEFAULT_PER_PAGE = 20
_CENTS_SCALE = Decimal("1E-15")


@dataclass
class StoredEvent:
    transaction_id: str
    external_subscription_id: str
    code: str
    timestamp: datetime
    precise_total_amount_cents: Decimal | None
    properties: dict[str, Any]
    lago_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def as_object(self) -> dict[str, Any]:
        """Lago's EventObject."""
        cents = self.precise_total_amount_cents
        return {"lago_id": self.lago_id, "transaction_id": self.transaction_id, "lago_customer_id": None,
                "code": self.code, "timestamp": _iso(self.timestamp),
                "precise_total_amount_cents": None if cents is None else _plain(cents),
                "properties": self.properties,
                "lago_subscription_id": str(uuid.uuid5(uuid.NAMESPACE_URL, self.external_subscription_id)),
                "external_subscription_id": self.external_subscription_id, "created_at": _iso(self.created_at)}


class Events:
    """The events Lago holds, and what a test may do to them behind the API's back."""

    def __init__(self, known_subscription: Callable[[str], bool] | None = None) -> None:
        self._events: list[StoredEvent] = []
        self._started: dict[str, datetime | None] = {}
        self._known = known_subscription
        self._lock = threading.Lock()
        self._late_answers: list[float] = []

    # -- test helpers ----------------------------------------------------------------------------

    def add_subscription(self, *external_ids: str, started_at: datetime | None = None) -> None:
        with self._lock:
            for external_id in external_ids:
                self._started[external_id] = started_at

    def stored(self, subscription: str | None = None) -> list[dict[str, Any]]:
        """The events held, as GET /events shows them, oldest received first."""
        with self._lock:
            return [e.as_object() for e in self._events
                    if subscription is None or e.external_subscription_id == subscription]

    def transaction_ids(self) -> set[str]:
        with self._lock:
            return {e.transaction_id for e in self._events}

    def delete(self, transaction_id: str, subscription: str | None = None) -> None:
        """Loses an event on Lago's side (its transaction_id becomes free again)."""
        with self._lock:
            found = self._find(transaction_id, subscription)
            self._events.remove(found)

    def alter(self, transaction_id: str, subscription: str | None = None, **fields: Any) -> None:
        """Changes a held event's fields (`precise_total_amount_cents="12.5"`, ...)."""
        with self._lock:
            found = self._find(transaction_id, subscription)
            for name, value in fields.items():
                setattr(found, name, _cents(value) if name == "precise_total_amount_cents" else value)

    def answer_late(self, seconds: float, count: int = 1) -> None:
        """The next `count` creations are stored at once but answered `seconds` later (the answer
        a client that dies meanwhile never reads)."""
        with self._lock:
            self._late_answers.extend([seconds] * count)

    # -- the API ---------------------------------------------------------------------------------

    async def create(self, request: web.Request) -> web.Response:
        body = await request.json()
        event = body.get("event") if isinstance(body, dict) else None
        if not isinstance(event, dict):
            return json_response({"status": 400, "error": "BadRequest: param is missing or the value is empty: event"},
                                 400)
        with self._lock:
            if not self._is_known(event.get("external_subscription_id")):
                return not_found("subscription")
            errors = self._errors(event, ())
            if errors:
                return unprocessable(errors)
            stored = self._store(event)
            delay = self._late()
        await self._answer_after(delay)
        return json_response({"event": stored.as_object()})

    async def batch(self, request: web.Request) -> web.Response:
        body = await request.json()
        events = body.get("events") if isinstance(body, dict) else None
        if not isinstance(events, list) or not events:
            return unprocessable({"events": ["no_events"]})
        if len(events) > MAX_BATCH:
            return unprocessable({"events": ["too_many_events"]})
        with self._lock:
            details: dict[str, Any] = {}
            for index, event in enumerate(events):
                errors = self._errors(event, events[:index]) if isinstance(event, dict) else {"event": ["invalid"]}
                if not errors and not self._is_known(event.get("external_subscription_id")):
                    errors = {"external_subscription_id": ["subscription_not_found"]}
                if errors:
                    details[str(index)] = errors
            if details:
                return unprocessable(details)
            stored = [self._store(event) for event in events]
            delay = self._late()
        await self._answer_after(delay)
        return json_response({"events": [event.as_object() for event in stored]})

    async def listed(self, request: web.Request) -> web.Response:
        query = request.query
        try:
            start = _parse_time(query.get("timestamp_from"))
            end = _parse_time(query.get("timestamp_to"))
            page = int(query.get("page", 1))
            per_page = int(query.get("per_page", DEFAULT_PER_PAGE))
        except ValueError:
            return unprocessable({"params": ["invalid_value"]})
        subscription = query.get("external_subscription_id")
        if query.get("timestamp_from_started_at", "").lower() == "true":
            if not subscription:
                return unprocessable({"timestamp_from_started_at": ["requires_external_subscription_id"]})
            start = max(filter(None, (start, self._started.get(subscription))), default=None)
        with self._lock:
            found = [e for e in self._events
                     if (subscription is None or e.external_subscription_id == subscription)
                     and (query.get("code") is None or e.code == query["code"])
                     and (start is None or e.timestamp >= start) and (end is None or e.timestamp <= end)]
        found.sort(key=lambda e: (e.timestamp, e.created_at), reverse=True)
        pages = max(1, -(-len(found) // per_page)) if per_page > 0 else 1
        shown = found[(page - 1) * per_page:page * per_page] if page >= 1 and per_page > 0 else []
        return json_response({"events": [e.as_object() for e in shown], "meta": {
            "current_page": page, "next_page": page + 1 if page < pages else None,
            "prev_page": page - 1 if page > 1 else None, "total_pages": pages, "total_count": len(found)}})

    async def show(self, request: web.Request) -> web.Response:
        with self._lock:
            try:
                found = self._find(request.match_info["transaction_id"],
                                   request.query.get("external_subscription_id"))
            except LookupError:
                return not_found("event")
            return json_response({"event": found.as_object()})

    # -- inside ----------------------------------------------------------------------------------

    def _is_known(self, subscription: Any) -> bool:
        if not isinstance(subscription, str):
            return False
        return self._known(subscription) if self._known is not None else subscription in self._started

    def _errors(self, event: dict[str, Any], earlier: Iterable[Any]) -> dict[str, list[str]]:
        errors: dict[str, list[str]] = {}
        for name in ("transaction_id", "code", "external_subscription_id"):
            if not isinstance(event.get(name), str) or not event[name]:
                errors[name] = ["value_is_mandatory"]
        if event.get("timestamp") is not None and _seconds(event["timestamp"]) is None:
            errors["timestamp"] = ["invalid_format"]
        cents = event.get("precise_total_amount_cents")
        if cents is not None and (not isinstance(cents, (str, int, float)) or _cents(cents) is None):
            errors["precise_total_amount_cents"] = ["value_is_invalid"]
        if event.get("properties") is not None and not isinstance(event["properties"], dict):
            errors["properties"] = ["value_is_invalid"]
        key = (event.get("external_subscription_id"), event.get("transaction_id"))
        if "transaction_id" not in errors and (
                any((e.external_subscription_id, e.transaction_id) == key for e in self._events)
                or any(isinstance(e, dict) and (e.get("external_subscription_id"), e.get("transaction_id")) == key
                       for e in earlier)):
            errors["transaction_id"] = ["value_already_exist"]
        return errors

    def _store(self, event: dict[str, Any]) -> StoredEvent:
        seconds = _seconds(event["timestamp"]) if event.get("timestamp") is not None else None
        at = datetime.now(UTC) if seconds is None else datetime.fromtimestamp(0, UTC) + _delta(seconds)
        cents = event.get("precise_total_amount_cents")
        stored = StoredEvent(event["transaction_id"], event["external_subscription_id"], event["code"], at,
                             None if cents is None else _cents(cents), dict(event.get("properties") or {}))
        self._events.append(stored)
        return stored

    def _find(self, transaction_id: str, subscription: str | None) -> StoredEvent:
        for event in self._events:
            if event.transaction_id == transaction_id and subscription in (None, event.external_subscription_id):
                return event
        raise LookupError(transaction_id)

    def _late(self) -> float:
        return self._late_answers.pop(0) if self._late_answers else 0.0

    @staticmethod
    async def _answer_after(seconds: float) -> None:
        if seconds:
            await asyncio.sleep(seconds)


def install(fake: FakeLago, known_subscription: Callable[[str], bool] | None = None) -> Events:
    """Adds the events API to `fake` (before it starts). Subscriptions are those added with
    `add_subscription`, or those `known_subscription` accepts (the billing fake's)."""
    events = Events(known_subscription)
    fake.route("POST", "/events", events.create)
    fake.route("POST", "/events/batch", events.batch)
    fake.route("GET", "/events", events.listed)
    fake.route("GET", "/events/{transaction_id}", events.show)
    return events


def _seconds(value: Any) -> Decimal | None:
    """Unix seconds as Lago reads them (Ruby's Float()): a number, or a numeric string."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        seconds = Decimal(str(value).strip())
    except InvalidOperation:
        return None
    return seconds if seconds.is_finite() else None


def _delta(seconds: Decimal) -> timedelta:
    microseconds = int((seconds * 1_000_000).to_integral_value(ROUND_HALF_UP))
    return timedelta(microseconds=microseconds)


def _cents(value: Any) -> Decimal | None:
    try:
        cents = Decimal(str(value))
    except InvalidOperation:
        return None
    return cents.quantize(_CENTS_SCALE, ROUND_HALF_UP) if cents.is_finite() else None


def _plain(amount: Decimal) -> str:
    """As Rails renders a BigDecimal: no exponent, no trailing zeros (`12.5`, `0.0123`, `3.0`)."""
    text = format(amount.normalize(), "f")
    return text if "." in text else f"{text}.0"


def _parse_time(value: str | None) -> datetime | None:
    if value is None:
        return None
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
