"""The port to Lago's events API (`/events`, `/events/batch`), as delivery and reconciliation use it."""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, Sequence

_REASON_CHARS = 500


@dataclass(frozen=True)
class Answer:
    """What Lago answered: `status` None when it did not (refused, timed out, dropped)."""

    status: int | None
    body: Any = None
    retry_after_s: float | None = None  # from Retry-After or X-RateLimit-Reset
    error: str = ""  # why there was no answer, or which request was refused

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def retryable(self) -> bool:
        """No answer, 408, 429 and 5xx: the same request may succeed later."""
        return self.status is None or self.status in (408, 429) or self.status >= 500

    def reason(self) -> str:
        """Lago's reason, as it gave it: its `error_details`, else its `code`, else its `error`."""
        if self.status is None:
            return self.error
        body = self.body if isinstance(self.body, dict) else {}
        for key in ("error_details", "code", "error"):
            if body.get(key):
                detail = body[key] if isinstance(body[key], str) else json.dumps(body[key], sort_keys=True)
                return f"HTTP {self.status}: {detail}"[:_REASON_CHARS]
        return f"HTTP {self.status}"


class LagoUnavailable(Exception):
    """Lago could not be read (no answer, or a refusal): the message says which, never the key."""


class LagoEvents(Protocol):
    async def send_batch(self, events: Sequence[dict[str, Any]]) -> Answer:
        """POST /events/batch with `{"events": events}`."""
        ...

    async def send(self, event: dict[str, Any]) -> Answer:
        """POST /events with `{"event": event}`."""
        ...

    async def listed(self, subscription: str, code: str, start: datetime, end: datetime) -> list[dict[str, Any]]:
        """Every event Lago holds for `subscription` and `code` with a timestamp in [start, end]
        (GET /events, all pages); raises LagoUnavailable."""
        ...

    async def close(self) -> None: ...
