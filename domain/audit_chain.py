"""The audit hash chain: what is hashed, and how a recorded seal is checked against the events the
ledger holds now.

Each stored event is hashed as stored, in a fixed encoding (big-endian integers, lengths before
variable fields):

    digest = SHA-256( u64 position | 16 bytes originator id (the UUID's bytes) | u64 version
                      | u32 len(topic) | topic (UTF-8) | u32 len(state) | state )

A seal covers the events read since the previous seal, in position order, and that seal:

    hash_k = SHA-256( "moneta-seal-v1" | u64 k | hash_(k-1) (32 bytes; 32 zero bytes for k = 1)
                      | i64 sealed_at (microseconds since 1970-01-01 UTC) | u32 len(positions)
                      | positions (ASCII) | u64 n | digest_1 | ... | digest_n )

where `positions` lists the covered positions as runs ("7-506,509"). A seal keeps its digests, so
a check names the first event altered (its digest differs), removed (a sealed position is gone)
or inserted (a position the seal does not list) — and a seal whose own row was edited no longer
matches its hash.
"""
from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from uuid import UUID

SEAL_TAG = b"moneta-seal-v1"
GENESIS = bytes(32)
DIGEST_SIZE = 32
_EVENT_HEAD = struct.Struct(">Q16sQI")
_LENGTH = struct.Struct(">I")
_SEAL_HEAD = struct.Struct(">Q32sqI")
_COUNT = struct.Struct(">Q")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def event_preimage(position: int, originator_id: bytes, version: int, topic: bytes, state: bytes) -> bytes:
    """The bytes an event's digest is taken of (`originator_id`: the UUID's 16 bytes)."""
    if len(originator_id) != 16:
        raise ValueError("an originator id is 16 bytes")
    return _EVENT_HEAD.pack(position, originator_id, version, len(topic)) + topic + _LENGTH.pack(len(state)) + state


def event_digest(position: int, originator_id: UUID, version: int, topic: str, state: bytes) -> bytes:
    return hashlib.sha256(event_preimage(position, originator_id.bytes, version, topic.encode(), state)).digest()


def micros(moment: datetime) -> int:
    return (moment - _EPOCH) // _MICROSECOND


def seal_hash(seq: int, previous: bytes, sealed_at: datetime, positions: str, digests: bytes) -> bytes:
    runs = positions.encode("ascii")
    hasher = hashlib.sha256(SEAL_TAG)
    hasher.update(_SEAL_HEAD.pack(seq, previous, micros(sealed_at), len(runs)))
    hasher.update(runs)
    hasher.update(_COUNT.pack(len(digests) // DIGEST_SIZE))
    hasher.update(digests)
    return hasher.digest()


def runs(positions: Sequence[int]) -> str:
    """Increasing positions as runs: [7, 8, 9, 12] -> "7-9,12"."""
    parts: list[str] = []
    start = previous = positions[0]
    for position in positions[1:]:
        if position != previous + 1:
            parts.append(_run(start, previous))
            start = position
        previous = position
    parts.append(_run(start, previous))
    return ",".join(parts)


def _run(start: int, end: int) -> str:
    return str(start) if start == end else f"{start}-{end}"


def expand(text: str) -> list[int]:
    positions: list[int] = []
    for part in text.split(","):
        start, _, end = part.partition("-")
        positions.extend(range(int(start), int(end or start) + 1))
    return positions


@dataclass(frozen=True)
class Seal:
    """One row of the chain, as stored."""

    seq: int
    previous: str  # hex
    hash: str  # hex
    first_position: int
    last_position: int
    events: int  # covered by this seal
    total: int  # covered by the chain up to this seal
    positions: str
    digests: bytes
    sealed_at: datetime

    def summary(self) -> dict[str, object]:
        return {"seq": self.seq, "last_position": self.last_position, "hash": self.hash, "count": self.total,
                "events": self.events, "sealed_at": self.sealed_at.isoformat()}


def new_seal(previous: Seal | None, positions: Sequence[int], digests: Sequence[bytes], sealed_at: datetime) -> Seal:
    seq = previous.seq + 1 if previous else 1
    prior = bytes.fromhex(previous.hash) if previous else GENESIS
    text, joined = runs(positions), b"".join(digests)
    return Seal(seq=seq, previous=prior.hex(), hash=seal_hash(seq, prior, sealed_at, text, joined).hex(),
                first_position=positions[0], last_position=positions[-1], events=len(positions),
                total=(previous.total if previous else 0) + len(positions), positions=text, digests=joined,
                sealed_at=sealed_at)


# -- checking ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Problem:
    kind: str  # altered | removed | inserted | seal_altered | seal_missing | chain_broken | head_unknown
    position: int | None  # the event's position (None for a problem of the seals alone)
    seq: int | None  # the seal concerned
    detail: str


@dataclass
class Report:
    seals: int = 0
    events: int = 0  # events read and checked against the seals
    head: Seal | None = None
    unsealed: int = 0  # events after the head seal: not sealed yet
    problems: list[Problem] = field(default_factory=list)  # the first ones, in position order
    problem_count: int = 0

    @property
    def holds(self) -> bool:
        return self.problem_count == 0


Row = tuple[int, bytes | None]  # (position, preimage); None for a row that cannot be encoded


class ChainCheck:
    """Feeds seals, in seq order, with the stored events of their ranges; collects problems in
    position order (the first `keep` of them). `expected`: a head hash copied earlier, which the
    chain must still hold."""

    def __init__(self, expected: str | None = None, keep: int = 20) -> None:
        self.report = Report()
        self._expected = expected.lower() if expected else None
        self._keep = keep
        self._previous: Seal | None = None

    def check(self, seal: Seal, rows: Sequence[Row]) -> None:
        self._check_row(seal)
        self._check_events(seal, rows)
        self.report.seals += 1
        self.report.events += len(rows)
        self.report.head = self._previous = seal
        if self._expected == seal.hash:
            self._expected = None

    def finish(self, unsealed: int) -> Report:
        self.report.unsealed = unsealed
        if self._expected is not None:
            self._add(Problem("head_unknown", None, None, f"the chain holds no seal with hash {self._expected}: "
                                                          "seals were removed or rewritten since it was copied"))
        return self.report

    def _check_row(self, seal: Seal) -> None:
        previous = self._previous
        expected_seq = previous.seq + 1 if previous else 1
        if seal.seq != expected_seq:
            self._add(Problem("seal_missing", None, seal.seq, f"seals {expected_seq} to {seal.seq - 1} are missing"))
        prior = previous.hash if previous else GENESIS.hex()
        if seal.previous != prior:
            self._add(Problem("chain_broken", None, seal.seq, f"seal {seal.seq} does not follow seal "
                                                              f"{expected_seq - 1}: its previous hash differs"))
        recomputed = seal_hash(seal.seq, bytes.fromhex(seal.previous), seal.sealed_at, seal.positions, seal.digests)
        positions = expand(seal.positions)
        consistent = (positions[0] == seal.first_position and positions[-1] == seal.last_position
                      and len(positions) == seal.events == len(seal.digests) // DIGEST_SIZE
                      and seal.total == (previous.total if previous else 0) + seal.events)
        if recomputed.hex() != seal.hash or not consistent:
            self._add(Problem("seal_altered", None, seal.seq, f"seal {seal.seq} was altered: its stored fields do"
                                                              " not match its hash"))

    def _check_events(self, seal: Seal, rows: Sequence[Row]) -> None:
        positions = expand(seal.positions)
        sha256 = hashlib.sha256
        if [row[0] for row in rows] == positions and \
                b"".join([sha256(row[1]).digest() for row in rows if row[1] is not None]) == seal.digests:
            return
        for problem in _differences(seal, positions, rows):
            self._add(problem)

    def _add(self, problem: Problem) -> None:
        self.report.problem_count += 1
        if len(self.report.problems) < self._keep:
            self.report.problems.append(problem)


def _differences(seal: Seal, positions: list[int], rows: Sequence[Row]) -> Iterator[Problem]:
    """Merges the sealed positions with the stored ones: the slow path, once a seal does not match."""
    slot, index = 0, 0
    while slot < len(positions) or index < len(rows):
        sealed = positions[slot] if slot < len(positions) else None
        stored = rows[index] if index < len(rows) else None
        if stored is not None and (sealed is None or stored[0] < sealed):
            yield Problem("inserted", stored[0], seal.seq, f"event {stored[0]} {_described(stored[1])}is not in the"
                                                           f" chain: it was inserted after seal {seal.seq} was made")
            index += 1
        elif stored is None or (sealed is not None and sealed < stored[0]):
            yield Problem("removed", sealed, seal.seq, f"event {sealed}, sealed in seal {seal.seq}, is no longer"
                                                       " in the ledger")
            slot += 1
        else:
            wanted = seal.digests[slot * DIGEST_SIZE:(slot + 1) * DIGEST_SIZE]
            if stored[1] is None or hashlib.sha256(stored[1]).digest() != wanted:
                yield Problem("altered", sealed, seal.seq, f"event {sealed} {_described(stored[1])}was altered: its"
                                                           f" stored bytes differ from those sealed in seal {seal.seq}")
            slot += 1
            index += 1


def _described(preimage: bytes | None) -> str:
    """The stream, version and topic of an event, read back from its encoding."""
    if preimage is None:
        return "(which cannot be read as an event) "
    try:
        _, originator, version, length = _EVENT_HEAD.unpack_from(preimage)
        topic = preimage[_EVENT_HEAD.size:_EVENT_HEAD.size + length].decode()
    except (struct.error, UnicodeDecodeError):
        return ""
    return f"(stream {UUID(bytes=originator)} version {version}, {topic}) "


def rows_by_seal(seals: Iterable[Seal], pages: Iterable[Sequence[Row]]) -> Iterator[tuple[Seal, list[Row]]]:
    """Pairs each seal with the stored events up to its last position (after the previous seal's)."""
    page_iter = iter(pages)
    buffer: Sequence[Row] = ()
    index = 0
    for seal in seals:
        taken: list[Row] = []
        while True:
            if index == len(buffer):
                buffer, index = next(page_iter, ()), 0
                if not buffer:
                    break
            end = _first_after(buffer, index, seal.last_position)
            taken.extend(buffer[index:end])
            index = end
            if end < len(buffer):
                break
        yield seal, taken


def _first_after(rows: Sequence[Row], start: int, position: int) -> int:
    """The index of the first row past `position` (rows are in position order)."""
    low, high = start, len(rows)
    while low < high:
        middle = (low + high) // 2
        if rows[middle][0] <= position:
            low = middle + 1
        else:
            high = middle
    return low


def verify_chain(head: Seal | None, seals: Iterable[Seal], pages: Callable[[int, int], Iterable[Sequence[Row]]],
                 count_after: Callable[[int], int], expected: str | None = None, keep: int = 20) -> Report:
    """Checks every seal up to `head` against the stored events (`pages(after, up_to)`, in position
    order); the events after the head seal are counted, not sealed yet."""
    check = ChainCheck(expected, keep)
    if head is not None:
        for seal, rows in rows_by_seal(seals, pages(0, head.last_position)):
            check.check(seal, rows)
    return check.finish(count_after(head.last_position if head else 0))
