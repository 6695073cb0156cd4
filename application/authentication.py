"""Turns a presented key into a Principal: the master key is compared in constant time; a virtual
key is looked up by its hash in the in-memory directory.

A hash the directory does not know is looked up once in the access view (a key made a moment ago
by another worker) and, when it is not there either, remembered as unknown for a few seconds, so
that a flood of wrong keys costs no database work.
"""
from __future__ import annotations

import asyncio
import hmac
import time
from datetime import UTC, datetime
from typing import Any, Protocol

from moneta.application.access_directory import Directory
from moneta.application.principal import Principal, master, of_key
from moneta.domain.errors import AuthenticationError
from moneta.domain.redaction import key_hash

UNKNOWN_FOR_S = 5.0
_MAX_REMEMBERED = 10_000


class KeyView(Protocol):
    def key_row(self, token: str) -> dict[str, Any] | None:
        """The access view's row of the key with this hash (kind, name, token, data, revision)."""
        ...


class Authenticator:
    def __init__(self, directory: Directory, master_key: str | None, view: KeyView | None = None) -> None:
        self.directory = directory
        self._master_key = master_key.encode() if master_key else None
        self._master_hash = key_hash(master_key) if master_key else ""
        self._view = view
        self._unknown: dict[str, float] = {}
        self._known: dict[str, tuple[int, Principal]] = {}  # hash -> (directory version, principal)

    @property
    def is_open(self) -> bool:
        """No master key configured: the gateway takes calls from anyone (as LiteLLM does)."""
        return self._master_key is None

    async def principal(self, key: str | None) -> Principal | None:
        """None when the gateway is open; AuthenticationError when the key opens nothing."""
        if self._master_key is None:
            return None
        if not key:
            raise AuthenticationError("No API key provided. Pass it as 'Authorization: Bearer <key>' or 'x-api-key'.")
        if hmac.compare_digest(key.encode(), self._master_key):
            return master(self._master_hash)
        token = key_hash(key)
        known = self._known.get(token)
        if known is not None and known[0] == self.directory.version and not known[1].expired(time.time()):
            return known[1]  # nothing changed in the directory since it was made
        if self.directory.key_by_token(token) is None:
            await self._look_up(token)
        principal = of_key(self.directory, token, datetime.now(UTC))
        if len(self._known) >= _MAX_REMEMBERED:
            self._known.clear()
        self._known[token] = (self.directory.version, principal)
        return principal

    async def _look_up(self, token: str) -> None:
        now = time.monotonic()
        if self._view is None or self._unknown.get(token, 0.0) > now:
            return
        row = await asyncio.to_thread(self._view.key_row, token)
        if row is not None:
            self.directory.put(row["kind"], row["name"], row["data"])
            return
        if len(self._unknown) >= _MAX_REMEMBERED:
            self._unknown.clear()
        self._unknown[token] = now + UNKNOWN_FOR_S
