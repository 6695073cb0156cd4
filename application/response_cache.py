"""Response caching as LiteLLM does it: an exact match on everything that changes the answer.

The key is the sha256 of the call type, the model group and the body's fields in canonical JSON
(sorted keys), leaving out the fields that do not change the answer (`user`, `stream`, ...); it
is prefixed with the configured namespace. A request steers the cache with LiteLLM's body field
`cache`: `no-cache` (do not read, still store), `no-store`, `ttl` (this entry's, in seconds),
`s-maxage` (accept only an entry at most this many seconds old).
"""
from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

import orjson

from moneta.application.config import CacheSettings
from moneta.application.ports import CacheStore
from moneta.domain.usage import Usage

log = logging.getLogger("moneta.cache")

# Fields that do not change the answer: who asks, how it is delivered, and the cache's own controls.
IGNORED_FIELDS = frozenset({"user", "stream", "stream_options", "metadata", "cache"})


@dataclass(frozen=True)
class CacheControls:
    no_cache: bool = False
    no_store: bool = False
    ttl_s: float | None = None
    max_age_s: float | None = None

    @classmethod
    def of(cls, body: dict[str, Any]) -> "CacheControls":
        asked = body.get("cache")
        if not isinstance(asked, dict):
            return _DEFAULT_CONTROLS
        return cls(no_cache=asked.get("no-cache") is True, no_store=asked.get("no-store") is True,
                   ttl_s=_seconds(asked.get("ttl")), max_age_s=_seconds(asked.get("s-maxage")))


_DEFAULT_CONTROLS = CacheControls()


def _seconds(value: Any) -> float | None:
    """A number of seconds (the proxy validated it; a library caller may pass anything)."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0 else None


@dataclass(frozen=True)
class CachedAnswer:
    response: dict[str, Any]
    usage: Usage
    filled_by: str  # the request id of the call whose answer this is


@dataclass(frozen=True)
class Lookup:
    key: str
    controls: CacheControls
    hit: CachedAnswer | None


def cache_key(namespace: str, call_type: str, body: dict[str, Any]) -> str:
    material = {name: value for name, value in body.items() if name not in IGNORED_FIELDS}
    digest = hashlib.sha256(orjson.dumps([call_type, material], option=orjson.OPT_SORT_KEYS)).hexdigest()
    return f"{namespace}:{digest}" if namespace else digest


class ResponseCache:
    def __init__(self, store: CacheStore, settings: CacheSettings, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.settings = settings
        self._clock = clock

    def applies(self, call_type: str) -> bool:
        return call_type in self.settings.call_types

    async def lookup(self, call_type: str, body: dict[str, Any]) -> Lookup | None:
        """The request's key and controls, with the entry that answers it, if any; None for a body
        that has no canonical form."""
        try:
            key = cache_key(self.settings.namespace, call_type, body)
        except orjson.JSONEncodeError:  # e.g. an integer beyond 64 bits: such a call is not cached
            return None
        controls = CacheControls.of(body)
        hit = None if controls.no_cache else self._answer(await self.store.get(key), controls)
        return Lookup(key, controls, hit)

    async def fill(self, lookup: Lookup, response: dict[str, Any], usage: Usage, request_id: str) -> None:
        if lookup.controls.no_store:
            return
        entry = {"response": response, "usage": usage.as_event_fields(), "filled_by": request_id,
                 "stored_at": self._clock()}
        ttl = lookup.controls.ttl_s if lookup.controls.ttl_s is not None else self.settings.ttl_s
        await self.store.set(lookup.key, orjson.dumps(entry), ttl)

    def _answer(self, stored: bytes | None, controls: CacheControls) -> CachedAnswer | None:
        if stored is None:
            return None
        try:
            entry = orjson.loads(stored)
            answer = CachedAnswer(entry["response"], Usage(**entry["usage"]), entry["filled_by"])
            stored_at = float(entry["stored_at"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            log.warning("a cache entry could not be read; the call goes to the provider")
            return None
        if controls.max_age_s is not None and self._clock() - stored_at > controls.max_age_s:
            return None
        return answer
