"""Explains one call from its ledger stream: who called, what was decided and on which numbers, each
attempt, the settlement, the streams related to it, and every event as recorded.

Related streams are found through `RELATED`: per name, a function from the request's id and events
to the ids of streams that may belong to it. A stream that does not exist is left out, and so is
one whose first event names another request (`request_id`): an alert of the same budget and period
that another call crossed.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol
from uuid import UUID

from moneta.application.authentication import KeyView
from moneta.domain.budget_alerts import alert_stream_id
from moneta.domain.lago_usage import usage_stream_id
from moneta.domain.request_record import RequestRecord

RelatedStreams = Callable[[UUID, Sequence[Any]], Iterable[UUID]]
_ALERT_KINDS = ("soft_budget", "max_budget")  # as the budget view names the alerts it files
_ROUTE_FIELDS = ("deployment", "reason", "strategy", "candidates", "route_error", "cache")
_ENVELOPE = ("originator_id", "originator_version", "timestamp", "originator_topic")
_ENDINGS = (RequestRecord.Completed, RequestRecord.CacheHit, RequestRecord.Failed, RequestRecord.Abandoned)


class StreamReader(Protocol):
    def events(self, stream_id: UUID) -> list[Any]:
        """The stream's events in order ([] for no stream)."""
        ...


def by_request_id(stream_id: Callable[[UUID], UUID]) -> RelatedStreams:
    """A related stream whose id derives from the request id alone (its Lago usage delivery)."""
    return lambda request_id, events: (stream_id(request_id),)


def crossed_alerts(request_id: UUID, events: Sequence[Any]) -> list[UUID]:
    """The budget alerts the call may have crossed: each budget it reserved on, in its period."""
    first = events[0] if events else None
    budget = (getattr(first, "decision", None) or {}).get("budget") or {}
    return [alert_stream_id(f"{scope['scope']}|{scope['period']}|{kind}")
            for scope in budget.get("scopes") or () for kind in _ALERT_KINDS]


RELATED: dict[str, RelatedStreams] = {
    "budget_alerts": crossed_alerts,
    "lago_usage": by_request_id(lambda request_id: usage_stream_id(str(request_id))),
}


class RequestExplainer:
    def __init__(self, streams: StreamReader, keys: KeyView | None = None, master_key_hash: str = "",
                 related: Mapping[str, RelatedStreams] | None = None) -> None:
        """`keys` finds the id of a key named by its hash alone (calls recorded before principals
        named their key's id)."""
        self.streams = streams
        self.keys = keys
        self.master_key_hash = master_key_hash
        self.related = RELATED if related is None else related

    def explain(self, request_id: UUID) -> dict[str, Any] | None:
        """None when no request has this id."""
        events = self.streams.events(request_id)
        if not events or not isinstance(events[0], (RequestRecord.Admitted, RequestRecord.Denied)):
            return None
        first = events[0]
        return {
            "request_id": str(request_id),
            "caller": self._caller(first),
            "decision": decision(first),
            "attempts": attempts(events),
            "settlement": settlement(events),
            "events": [event_entry(event) for event in events],
            "related": {name: self._related(request_id, found(request_id, events))
                        for name, found in self.related.items()},
        }

    def _caller(self, first: Any) -> dict[str, Any]:
        principal = first.principal or {}
        is_master = bool(first.key_hash) and first.key_hash == self.master_key_hash
        key_id = principal.get("key_id") or (None if is_master else self._key_id(first.key_hash))
        kind = ("master_key" if is_master else "virtual_key" if principal or key_id
                else "unknown_key" if first.key_hash else "none")
        return {
            "kind": kind,
            "key_hash": first.key_hash or None,
            "key_id": key_id or None,
            "key_alias": principal.get("key_alias") or None,
            "team_id": principal.get("team_id") or None,
            "user_id": principal.get("user_id") or None,
            "org_id": principal.get("org_id") or None,
            "end_user": first.end_user or None,
        }

    def _key_id(self, key_hash: str) -> str | None:
        if not key_hash or self.keys is None:
            return None
        row = self.keys.key_row(key_hash)
        return None if row is None else row["data"].get("key_id")

    def _related(self, request_id: UUID, stream_ids: Iterable[UUID]) -> list[dict[str, Any]]:
        streams = []
        for stream_id in dict.fromkeys(stream_ids):
            events = self.streams.events(stream_id)
            if events and str(getattr(events[0], "request_id", request_id)) == str(request_id):
                streams.append({"stream_id": str(stream_id),
                                "aggregate": getattr(events[0], "originator_topic", "").rpartition(":")[2] or None,
                                "events": [event_entry(event) for event in events]})
        return streams


def decision(first: Any) -> dict[str, Any]:
    """The admission or refusal, with the numbers each check saw."""
    recorded = dict(first.decision or {})
    route = {name: recorded.pop(name) for name in _ROUTE_FIELDS if name in recorded}
    budget = recorded.pop("budget", None)
    explained: dict[str, Any] = {
        "outcome": "admitted" if isinstance(first, RequestRecord.Admitted) else "denied",
        "at": first.timestamp,
        "call_type": first.call_type,
        "model_group": first.model_group,
        "route": route or None,
        "rate_limits": recorded.pop("limits", None),
        "budget": _budget(budget),
        "max_tokens_capped_to": (budget or {}).get("max_tokens_capped_to"),
        "entitlement": recorded.pop("entitlement", None),
    }
    if isinstance(first, RequestRecord.Admitted):
        explained.update(stream=first.stream, instance=first.instance or None)
    else:
        explained["refusal"] = {"status_code": first.status_code, "error_type": first.error_type,
                                "code": first.code, "reason": first.reason}
    if recorded:
        explained["other"] = recorded
    return explained


def _budget(budget: dict[str, Any] | None) -> dict[str, Any] | None:
    if budget is None:
        return None
    return {**budget, "scopes": [{**scope, "headroom": _headroom(scope)} for scope in budget.get("scopes") or ()]}


def _headroom(scope: dict[str, Any]) -> str | None:
    """What the budget had left for this call: its limit less what was spent and what calls in
    flight held, as the reservation saw them (USD text, like them)."""
    try:
        return format(Decimal(scope["limit"]) - Decimal(scope["spent"]) - Decimal(scope["reserved"]), "f")
    except (KeyError, TypeError, InvalidOperation):
        return None


def attempts(events: Sequence[Any]) -> list[dict[str, Any]]:
    """Each provider call: the failed ones, then the one that answered (if one did)."""
    tried = [{"attempt": e.attempt, "at": e.timestamp, "deployment_id": e.deployment_id, "provider": e.provider,
              "provider_model": e.provider_model, "outcome": "failed", "status_code": e.status_code,
              "error_type": e.error_type, "reason": e.reason, "latency_ms": e.latency_ms}
             for e in events if isinstance(e, RequestRecord.AttemptFailed)]
    answered = next((e for e in events if isinstance(e, RequestRecord.Completed)), None)
    if answered is not None:
        interrupted = isinstance(answered, RequestRecord.Interrupted)
        tried.append({"attempt": len(tried) + 1, "at": answered.timestamp, "deployment_id": answered.deployment_id,
                      "provider": answered.provider, "provider_model": answered.provider_model,
                      "outcome": "interrupted" if interrupted else "succeeded",
                      "status_code": answered.status_code if interrupted else None,
                      "error_type": answered.error_type if interrupted else None,
                      "reason": answered.cause if interrupted else None, "latency_ms": answered.latency_ms,
                      "first_token_ms": answered.first_token_ms})
    return tried


def settlement(events: Sequence[Any]) -> dict[str, Any]:
    """How the call ended and what it cost; `in_flight` while it has not ended."""
    end = next((e for e in reversed(events) if isinstance(e, _ENDINGS)), None)
    if isinstance(events[0], RequestRecord.Denied):
        settled: dict[str, Any] = {"outcome": "denied", "at": events[0].timestamp, "cost_usd": Decimal(0)}
    elif end is None:
        settled = {"outcome": "in_flight"}
    else:
        settled = {"at": end.timestamp, **_ending(end)}
    responses = [{"response_id": e.response_id, "at": e.timestamp, "usage": e.usage, "cost_usd": e.cost,
                  "price_source": e.price_source} for e in events if isinstance(e, RequestRecord.UsageAdded)]
    if responses:
        settled["responses"] = responses
    settled["overruns"] = [{"at": e.timestamp, "reserved_usd": e.reserved, "charged_usd": e.charged,
                            "reason": e.reason} for e in events if isinstance(e, RequestRecord.BudgetOverrun)]
    return settled


def _ending(end: Any) -> dict[str, Any]:
    if isinstance(end, RequestRecord.Completed):
        ending = {"outcome": "interrupted" if isinstance(end, RequestRecord.Interrupted) else "completed",
                  "deployment_id": end.deployment_id, "provider": end.provider, "provider_model": end.provider_model,
                  **_tokens(end.usage), "cost_usd": end.cost, "askii": end.askii, "askii_rate": end.askii_rate,
                  "price_source": end.price_source, "latency_ms": end.latency_ms,
                  "first_token_ms": end.first_token_ms, "finish_reason": end.finish_reason}
        if isinstance(end, RequestRecord.Interrupted):
            ending.update(cause=end.cause, error_type=end.error_type, status_code=end.status_code,
                          usage_estimated=end.usage_estimated)
        return ending
    if isinstance(end, RequestRecord.CacheHit):
        return {"outcome": "cache_hit", **_tokens(end.usage), "cost_usd": end.cost, "cache_key": end.cache_key,
                "filled_by": end.filled_by, "latency_ms": end.latency_ms, "finish_reason": end.finish_reason}
    if isinstance(end, RequestRecord.Failed):
        return {"outcome": "failed", "cost_usd": Decimal(0), "status_code": end.status_code,
                "error_type": end.error_type, "reason": end.reason}
    return {"outcome": "abandoned", "cost_usd": Decimal(0), "deployment_id": end.deployment_id or None,
            "instance": end.instance, "reason": end.reason}


def _tokens(usage: dict[str, int]) -> dict[str, Any]:
    prompt, completion = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
    return {"usage": usage, "prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


def event_entry(event: Any) -> dict[str, Any]:
    """An event as stored, in its class's current shape (older events upcast as they were read)."""
    return {"type": type(event).__qualname__, "version": event.originator_version,
            "class_version": getattr(type(event), "class_version", 1), "timestamp": event.timestamp,
            "fields": {name: _plain(value) for name, value in vars(event).items() if name not in _ENVELOPE}}


def _plain(value: Any) -> Any:
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value
