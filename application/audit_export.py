"""`moneta audit export`: the ledger's events stamped from `start` (inclusive) to `end` (exclusive),
one per line, and a manifest that ties the file to the audit chain.

Each line: `position`, `stream_id`, `version`, `topic`, `type` (the event's class), `timestamp`,
`request_id` (the stream of a request's events; else the event's own `request_id` field, if any)
and `fields` (the event's other fields; money as exact decimal text). The manifest counts the
events per type, totals the USD `cost` and the `askii` of the calls settled (Completed and
Interrupted) exactly, names the first and last positions, the SHA-256 of the events file, and the
seal that covers the last position, whose hash covers every event up to it.

The events are read a page at a time and written as they come: memory does not grow with the
export.
"""
from __future__ import annotations

import csv
import hashlib
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from decimal import MAX_PREC, Decimal, localcontext
from pathlib import Path
from typing import IO, Any
from uuid import UUID

import orjson
from eventsourcing.utils import get_topic

from moneta.application.audit_window import stamped_until
from moneta.domain.request_record import RequestRecord

FORMATS = ("jsonl", "csv")
COLUMNS = ("position", "stream_id", "version", "topic", "type", "timestamp", "request_id", "fields")
_HEADER_FIELDS = ("originator_id", "originator_version", "timestamp")


def export(pages: Iterable[Sequence[tuple[int, Any]]], start: datetime, end: datetime, fmt: str, out: Path,
           seal_covering: Callable[[int], dict[str, Any] | None]) -> dict[str, Any]:
    """Writes `events.<fmt>` and `manifest.json` in `out`; returns the manifest."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}")
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"events.{fmt}"
    totals = _Totals()
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = _Writer(file, fmt)
        with localcontext() as context:
            context.prec = MAX_PREC  # sums of money are exact
            for position, event in stamped_until(_flushed(pages, file), end, inclusive=False):
                if event.timestamp >= start:
                    writer.write(_line(position, event))
                    totals.add(position, event)
    manifest = {
        "from": start.isoformat(), "to": end.isoformat(), "format": fmt, "file": path.name,
        "sha256": _sha256(path), "events": totals.events, "counts": dict(sorted(totals.counts.items())),
        "usd_total": str(totals.usd), "askii_total": str(totals.askii),
        "first_position": totals.first, "last_position": totals.last,
        "seal": seal_covering(totals.last) if totals.last is not None else None,
        "exported_at": datetime.now(UTC).isoformat(),
    }
    (out / "manifest.json").write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2) + b"\n")
    return manifest


def _flushed(pages: Iterable[Sequence[tuple[int, Any]]], file: IO[str]) -> Iterable[Sequence[tuple[int, Any]]]:
    """Each page's lines are on disk before the next page is read."""
    for page in pages:
        yield page
        file.flush()


class _Totals:
    def __init__(self) -> None:
        self.events = 0
        self.counts: Counter[str] = Counter()
        self.usd = Decimal(0)
        self.askii = Decimal(0)
        self.first: int | None = None
        self.last: int | None = None

    def add(self, position: int, event: Any) -> None:
        self.events += 1
        self.counts[type(event).__qualname__] += 1
        if isinstance(event, RequestRecord.Completed):  # Interrupted is one
            self.usd += event.cost
            if event.askii is not None:
                self.askii += event.askii
        self.first = position if self.first is None else self.first
        self.last = position


class _Writer:
    def __init__(self, file: IO[str], fmt: str) -> None:
        self._file = file
        self._csv = csv.writer(file) if fmt == "csv" else None
        if self._csv is not None:
            self._csv.writerow(COLUMNS)

    def write(self, line: dict[str, Any]) -> None:
        if self._csv is None:
            self._file.write(orjson.dumps(line, default=_plain).decode())
            self._file.write("\n")
        else:
            fields = orjson.dumps(line["fields"], default=_plain, option=orjson.OPT_SORT_KEYS).decode()
            self._csv.writerow([*(line[column] for column in COLUMNS[:-1]), fields])


def _line(position: int, event: Any) -> dict[str, Any]:
    stream_id = str(event.originator_id)
    fields = {name: value for name, value in event.__dict__.items() if name not in _HEADER_FIELDS}
    request_id = stream_id if isinstance(event, RequestRecord.Event) else fields.get("request_id")
    return {"position": position, "stream_id": stream_id, "version": event.originator_version,
            "topic": get_topic(type(event)), "type": type(event).__qualname__,
            "timestamp": event.timestamp.isoformat(), "request_id": request_id, "fields": fields}


def _plain(value: Any) -> Any:
    """What orjson does not write itself: money as exact text."""
    if isinstance(value, (Decimal, UUID)):
        return str(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
