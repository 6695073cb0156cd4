"""Decoder for AWS's binary event-stream framing (`application/vnd.amazon.eventstream`).

A message is: total length (uint32), headers length (uint32), CRC32 of those 8 bytes,
the headers, the payload, and a CRC32 of everything before it. Integers are big-endian.
Network reads cut messages anywhere, so the decoder buffers until a whole message is in.
"""
from __future__ import annotations

import struct
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_PRELUDE = struct.Struct(">III")
_CRC = struct.Struct(">I")
_MIN_MESSAGE = _PRELUDE.size + _CRC.size
# AWS caps one event message at 16 MiB; anything larger is a corrupted length field.
_MAX_MESSAGE = 16 * 1024 * 1024


class EventStreamError(Exception):
    """The bytes are not a valid event stream (bad checksum, length or header)."""


@dataclass(frozen=True)
class EventMessage:
    headers: dict[str, Any]
    payload: bytes


class EventStreamDecoder:
    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[EventMessage]:
        """Adds bytes from the network; returns the messages they complete, in order."""
        self._buffer += data
        messages = []
        while (message := self._take_message()) is not None:
            messages.append(message)
        return messages

    def finish(self) -> None:
        """Raises if the stream ended in the middle of a message."""
        if self._buffer:
            raise EventStreamError(f"event stream ended inside a message ({len(self._buffer)} bytes left)")

    def _take_message(self) -> EventMessage | None:
        if len(self._buffer) < _PRELUDE.size:
            return None
        total, headers_length, prelude_crc = _PRELUDE.unpack_from(self._buffer)
        if zlib.crc32(self._buffer[:8]) != prelude_crc:
            raise EventStreamError("event stream prelude checksum mismatch")
        if not _MIN_MESSAGE + headers_length <= total <= _MAX_MESSAGE:
            raise EventStreamError(f"event stream message length {total} is invalid")
        if len(self._buffer) < total:
            return None
        frame = bytes(self._buffer[:total])
        del self._buffer[:total]
        (message_crc,) = _CRC.unpack_from(frame, total - _CRC.size)
        if zlib.crc32(frame[:-_CRC.size]) != message_crc:
            raise EventStreamError("event stream message checksum mismatch")
        headers_end = _PRELUDE.size + headers_length
        return EventMessage(
            headers=decode_headers(frame[_PRELUDE.size:headers_end]),
            payload=frame[headers_end:-_CRC.size],
        )


def _fixed(fmt: str) -> Callable[[bytes, int], tuple[Any, int]]:
    layout = struct.Struct(fmt)

    def read(data: bytes, offset: int) -> tuple[Any, int]:
        return layout.unpack_from(data, offset)[0], offset + layout.size

    return read


def _sized(decode: Callable[[bytes], Any]) -> Callable[[bytes, int], tuple[Any, int]]:
    def read(data: bytes, offset: int) -> tuple[Any, int]:
        (length,) = struct.unpack_from(">H", data, offset)
        start = offset + 2
        if start + length > len(data):
            raise EventStreamError("event stream header value overruns the headers")
        return decode(data[start:start + length]), start + length

    return read


def _uuid(data: bytes, offset: int) -> tuple[Any, int]:
    return uuid.UUID(bytes=bytes(data[offset:offset + 16])), offset + 16


_VALUE_READERS: dict[int, Callable[[bytes, int], tuple[Any, int]]] = {
    0: lambda data, offset: (True, offset),
    1: lambda data, offset: (False, offset),
    2: _fixed(">b"),
    3: _fixed(">h"),
    4: _fixed(">i"),
    5: _fixed(">q"),
    6: _sized(bytes),
    7: _sized(lambda raw: raw.decode("utf-8")),
    8: _fixed(">q"),  # timestamp, milliseconds since the epoch
    9: _uuid,
}


def decode_headers(data: bytes) -> dict[str, Any]:
    headers: dict[str, Any] = {}
    offset = 0
    try:
        while offset < len(data):
            name_length = data[offset]
            name = data[offset + 1:offset + 1 + name_length].decode("utf-8")
            offset += 1 + name_length
            reader = _VALUE_READERS.get(data[offset])
            if reader is None:
                raise EventStreamError(f"event stream header {name!r} has unknown type {data[offset]}")
            headers[name], offset = reader(data, offset + 1)
    except (IndexError, struct.error, UnicodeDecodeError) as exc:
        raise EventStreamError(f"event stream headers are malformed: {type(exc).__name__}") from None
    return headers
