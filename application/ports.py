"""What the use cases need from the outside world; `infrastructure` implements these."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import Any, AsyncIterator, Mapping, Protocol, Sequence
from uuid import UUID

from moneta.application.config import Deployment
from moneta.domain.deployment_health import DeploymentHealth
from moneta.domain.pricing import CostQuote
from moneta.domain.request_record import RequestRecord
from moneta.domain.usage import Usage


@dataclass(frozen=True)
class AudioFile:
    filename: str
    content: bytes
    content_type: str


class Provider(Protocol):
    """A provider API. Requests and responses are in OpenAI's shape; the adapter translates."""

    async def chat(self, deployment: Deployment, body: dict[str, Any]) -> dict[str, Any]: ...

    def chat_stream(self, deployment: Deployment, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Yields `chat.completion.chunk` dicts; the last one carries `usage`."""
        ...

    async def text_completion(self, deployment: Deployment, body: dict[str, Any]) -> dict[str, Any]: ...

    async def embedding(self, deployment: Deployment, body: dict[str, Any]) -> dict[str, Any]: ...

    async def transcription(
        self, deployment: Deployment, audio: AudioFile, fields: dict[str, Any]
    ) -> dict[str, Any]: ...


class ProviderRegistry(Protocol):
    def for_deployment(self, deployment: Deployment) -> Provider:
        """The adapter for the deployment's provider; BadRequestError if there is none."""
        ...


class Ledger(Protocol):
    """The append-only event store, behind group commit."""

    def record(self, record: RequestRecord | DeploymentHealth) -> "asyncio.Future[None]":
        """Takes the aggregate's pending events now; the future resolves once they are durable."""
        ...

    def is_healthy(self) -> bool:
        """False while commits are failing."""
        ...

    def close(self, timeout: float = 30.0) -> None:
        """Commits what is queued, then stops taking records."""
        ...


class LedgerObserver(Protocol):
    """Told of each commit the ledger made, on its writer thread, before the callers learn their
    events are durable: it must be quick and must not raise."""

    def committed(self, records: Sequence[tuple[RequestRecord | DeploymentHealth, Sequence[Any]]],
                  seconds: float) -> None:
        """`records`: each aggregate with the events this commit wrote; `seconds`: the commit's time."""
        ...


class PriceBook(Protocol):
    def check_priced(self, deployment: Deployment) -> None:
        """Raises BadRequestError when the deployment has no price and zero cost is not allowed."""
        ...

    def quote(self, deployment: Deployment, usage: Usage, at: datetime) -> CostQuote: ...

    def known_models(self, provider: str) -> Sequence[str]:
        """The models the price library lists for a provider prefix (`openai`), by their names there."""
        ...


class Tokenizer(Protocol):
    def count_text(self, model: str, text: str) -> int: ...

    def count_messages(self, model: str, messages: Sequence[dict[str, Any]]) -> int: ...


@dataclass(frozen=True)
class CooldownState:
    cooling: Mapping[str, float]  # deployment id -> when it returns (epoch seconds)
    lapsed: frozenset[str]  # back from a cooldown whose recovery nobody has recorded yet


class CooldownStore(Protocol):
    """Failure counters and cooldowns; every worker sharing the store shares one view."""

    def count_failure(self, deployment_id: str, kind: str, allowed_fails: int, window_s: float,
                      cooldown_s: float) -> float | None:
        """Counts a failure; once more than `allowed_fails` of this kind fell within `window_s`,
        starts a cooldown unless one is running. Returns its end (epoch seconds) to the one
        caller that started it, else None."""
        ...

    def start_cooldown(self, deployment_id: str, cooldown_s: float) -> float:
        """A manual cooldown: the deployment cools down from now for `cooldown_s`, whatever runs
        already (the admin's word wins, shorter or longer). Returns its end (epoch seconds)."""
        ...

    def state(self) -> CooldownState:
        """The cooldowns now; may be a moment old (a short cache keeps the hot path local)."""
        ...

    def claim_recovery(self, deployment_id: str) -> bool:
        """True for the one caller that first sees the deployment serve again after a cooldown."""
        ...

    def close(self) -> None:
        """Stops whatever keeps the store's view fresh."""
        ...


class UsageMeter(Protocol):
    """Requests and tokens started per deployment in the current minute, against its rpm/tpm;
    every worker sharing the meter shares one count."""

    def seen(self, deployment_ids: Sequence[str]) -> dict[str, tuple[int, int]]:
        """(requests, tokens) this minute as last seen, without I/O. Never above the true count,
        since a minute's counts only grow."""
        ...

    async def take(self, deployment_id: str, tokens: int, rpm: int | None, tpm: int | None,
                   group: Sequence[str]) -> bool:
        """Counts one request of `tokens` against the deployment if this minute's count stays
        within `rpm` and `tpm`, else counts nothing and returns False. Refreshes what `seen`
        returns for the deployments of `group`."""
        ...


class CacheStore(Protocol):
    """Where cached answers are kept, as opaque bytes under their key. A store that cannot be
    reached answers as if it held nothing, and takes what it is given without keeping it."""

    kind: str  # "local" or "redis", as `/cache/ping` names it

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl_s: float | None) -> None:
        """Keeps `value` for `ttl_s` seconds (None: until evicted)."""
        ...

    async def ping(self) -> bool:
        """Whether the store answers now."""
        ...

    async def close(self) -> None: ...


class AggregateReader(Protocol):
    def get(self, aggregate_id: UUID) -> Any | None:
        """The aggregate at its latest version, or None if it has no events."""
        ...


class LedgerReader(AggregateReader, Protocol):
    def head(self) -> int:
        """The last notification id committed; raises when the ledger is unreachable."""
        ...


Frame = str | bytes  # a WebSocket message: text or binary


class Channel(Protocol):
    """One side of a relayed WebSocket session: the client's or the upstream's."""

    async def receive(self) -> Frame | None:
        """The next message; None once the other end has closed or gone."""
        ...

    async def send(self, frame: Frame) -> None: ...

    async def close(self) -> None:
        """Closes this side (normal closure); does nothing if it is closed already."""
        ...


class RealtimeConnector(Protocol):
    async def connect(self, deployment: Deployment, headers: Mapping[str, str]) -> Channel:
        """Opens the deployment's Realtime API WebSocket, passing on `headers` (the client's, such
        as OpenAI-Beta) beside the deployment's credentials; raises a GatewayError when it cannot."""
        ...
