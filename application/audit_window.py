"""Reading the ledger up to a moment, though positions and timestamps do not agree exactly.

Positions are commit order; an event's timestamp is when it was made, a little before its commit
(a write that waits longer than `ledger_timeout_s`, 5 s by default, is dropped, never written
later). So an event stamped before a moment may follow one stamped after it, but never by more than
SKEW: a reader of the events up to `end` reads on until it meets one stamped past `end + SKEW`,
and one that starts at `start` may begin at a position where the events are stamped before
`start - SKEW`. Hosts whose clocks differ by more than SKEW break this.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from moneta.domain.errors import BadRequestError

SKEW = timedelta(seconds=60)


def stamped_until(pages: Iterable[Sequence[tuple[int, Any]]], end: datetime, *, inclusive: bool = True
                  ) -> Iterator[tuple[int, Any]]:
    """(position, event) of the events stamped up to `end` (before it when not `inclusive`), in
    position order; stops reading once past `end + SKEW`."""
    last = end + SKEW
    for page in pages:
        for position, event in page:
            stamped = event.timestamp
            if stamped > last:
                return
            if stamped < end or (inclusive and stamped == end):
                yield position, event


def parse_moment(text: str, param: str) -> datetime:
    """An ISO 8601 time (a date is its midnight), in UTC when it names no offset."""
    try:
        moment = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        raise BadRequestError(f"{param} must be an ISO 8601 time (e.g. 2026-05-01T14:03:00Z)", param=param,
                              code="invalid_time") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)
