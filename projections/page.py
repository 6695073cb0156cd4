"""One page of the notification log, as the views apply it: its events, in log order, and what
a view derived from them for the views after it."""
from __future__ import annotations

from dataclasses import dataclass, field
from collections.abc import Sequence
from typing import Any


@dataclass
class Page:
    events: list[Any]
    # The stored notifications the events were decoded from, of every topic (what the audit seals hash).
    notifications: Sequence[Any] = ()
    # The spend log rows of the requests that reached their outcome in this page (set by
    # spend_log, read by usage_report).
    ended_requests: list[dict[str, Any]] = field(default_factory=list)
    _stream_ids: dict[int, str] = field(default_factory=dict, repr=False)
    _classes: dict[Any, set[type]] = field(default_factory=dict, repr=False)

    def of(self, types: type | tuple[type, ...]) -> list[Any]:
        """The page's events that are instances of `types`, in log order: each class in the page is
        tested once, not each event (`isinstance` on every event, by every view, against a view's
        many event types cost the read side more than some views' statements)."""
        wanted = self._classes.get(types)
        if wanted is None:
            present = self._classes.get(None)
            if present is None:
                present = self._classes[None] = {type(event) for event in self.events}
            wanted = self._classes[types] = {cls for cls in present if issubclass(cls, types)}
        return [event for event in self.events if type(event) in wanted]

    def stream_id(self, event: Any) -> str:
        """The event's stream id as text, made once per event for every view (UUID.__str__ was
        a twentieth of the read side's CPU when each view made its own)."""
        key = id(event)  # the page holds its events: the id stays theirs
        found = self._stream_ids.get(key)
        if found is None:
            found = self._stream_ids[key] = str(event.originator_id)
        return found
