"""Lago's events API over httpx (`lago_http`): the `LagoEvents` port of delivery and reconciliation.

The client is made on first use, in the event loop that uses it (the deliverer runs one of its own).
"""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Sequence

import httpx

from moneta.application.config import LagoSettings
from moneta.application.lago_events import Answer, LagoUnavailable
from moneta.infrastructure import lago_http

PER_PAGE = 100


class HttpLagoEvents:
    def __init__(self, settings: LagoSettings, timeout_s: float = lago_http.TIMEOUT_S) -> None:
        self.settings = settings
        self.timeout_s = timeout_s
        self._http: httpx.AsyncClient | None = None

    async def send_batch(self, events: Sequence[dict[str, Any]]) -> Answer:
        return await self._post("/events/batch", {"events": list(events)})

    async def send(self, event: dict[str, Any]) -> Answer:
        return await self._post("/events", {"event": event})

    async def listed(self, subscription: str, code: str, start: datetime, end: datetime) -> list[dict[str, Any]]:
        params = {"external_subscription_id": subscription, "code": code, "per_page": PER_PAGE,
                  "timestamp_from": _iso(start), "timestamp_to": _iso(end)}
        events: list[dict[str, Any]] = []
        page: int | None = 1
        while page is not None:
            try:
                answer = await lago_http.call(self._client(), "GET", "/events", params={**params, "page": page})
            except lago_http.LagoError as error:
                raise LagoUnavailable(str(error)) from None
            events.extend(answer.get("events") or ())
            page = (answer.get("meta") or {}).get("next_page")
        return events

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def _post(self, path: str, body: dict[str, Any]) -> Answer:
        try:
            answer = await lago_http.call(self._client(), "POST", path, body=body)
        except lago_http.LagoUnreachable as error:
            return Answer(None, error=str(error))
        except lago_http.LagoError as error:
            return Answer(error.status, error.body, error.retry_after_s, str(error))
        return Answer(200, answer)

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = lago_http.client(self.settings, timeout_s=self.timeout_s)
        return self._http


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
