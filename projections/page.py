"""One page of the notification log, as the views apply it: its events, in log order, and what
a view derived from them for the views after it."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Page:
    events: list[Any]
    # The spend log rows of the requests that reached their outcome in this page (set by
    # spend_log, read by usage_report).
    ended_requests: list[dict[str, Any]] = field(default_factory=list)
