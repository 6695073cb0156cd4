"""Closing the calls of gateway processes that are gone, so that no request stays pending forever.

Each serving process beats several times per `abandon_after_s` (projections.instances); a call
admitted by one that has been silent that long ends as Abandoned. A call of a process that never
beat (a library script, a gateway older than the beats) is given UNREGISTERED_AFTER_S instead.
"""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Callable, Iterable, Mapping, Protocol, Sequence
from uuid import UUID

from moneta.application.ports import AggregateReader
from moneta.domain.request_record import RequestRecord

UNREGISTERED_AFTER_S = 3600.0
BEATS_PER_SILENCE = 6  # a process beats this often within the silence that declares it gone


class InFlight(Protocol):
    """A call admitted and not settled, as far as the read side has seen."""

    @property
    def request_id(self) -> UUID: ...

    @property
    def instance(self) -> str: ...

    @property
    def admitted_at(self) -> datetime: ...


class InFlightView(Protocol):
    def admitted_before(self, when: datetime) -> Sequence[InFlight]:
        """The calls admitted before `when` and not settled."""
        ...

    def last_beats(self) -> Mapping[str, datetime]:
        """When each registered gateway process last beat."""
        ...


def beat_interval_s(abandon_after_s: float) -> float:
    return abandon_after_s / BEATS_PER_SILENCE


def sweep(view: InFlightView, reader: AggregateReader, save: Callable[[RequestRecord], bool], now: datetime,
          abandon_after_s: float) -> int:
    """Ends as Abandoned the open calls of processes that are gone; returns how many."""
    candidates = view.admitted_before(now - timedelta(seconds=abandon_after_s))
    return close_abandoned(gone(candidates, view.last_beats(), now, abandon_after_s), reader, save)


def gone(calls: Iterable[InFlight], beats: Mapping[str, datetime], now: datetime,
         abandon_after_s: float) -> list[InFlight]:
    """The calls whose process is gone by now."""
    silent_since = now - timedelta(seconds=abandon_after_s)
    unregistered_since = now - timedelta(seconds=UNREGISTERED_AFTER_S)
    return [call for call in calls
            if (beats[call.instance] < silent_since if call.instance in beats
                else call.admitted_at < unregistered_since)]


def close_abandoned(calls: Iterable[InFlight], reader: AggregateReader,
                    save: Callable[[RequestRecord], bool]) -> int:
    """Appends Abandoned to each call still open; `save` returns False when the call's stream
    moved meanwhile (its process settled it after all). Returns how many were closed."""
    closed = 0
    for call in calls:
        record = reader.get(call.request_id)
        if record is None or not record.is_open:
            continue
        record.abandon(instance=call.instance, reason="the gateway process running the call ended before settling it")
        closed += save(record)
    return closed
