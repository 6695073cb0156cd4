"""What the use cases need from the outside world; `infrastructure` implements these."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import Any, AsyncIterator, Protocol, Sequence

from application.config import Deployment
from domain.pricing import CostQuote
from domain.request_record import RequestRecord
from domain.usage import Usage


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

    def record(self, record: RequestRecord) -> "asyncio.Future[None]":
        """Takes the record's pending events now; the future resolves once they are durable."""
        ...

    def is_healthy(self) -> bool: ...


class PriceBook(Protocol):
    def check_priced(self, deployment: Deployment) -> None:
        """Raises BadRequestError when the deployment has no price and zero cost is not allowed."""
        ...

    def quote(self, deployment: Deployment, usage: Usage, at: datetime) -> CostQuote: ...


class Tokenizer(Protocol):
    def count_text(self, model: str, text: str) -> int: ...

    def count_messages(self, model: str, messages: Sequence[dict[str, Any]]) -> int: ...


class Router(Protocol):
    def plan(self, model_group: str, body: dict[str, Any]) -> Sequence[Deployment]:
        """Deployments to try, in order; ModelNotFoundError for an unknown group."""
        ...

    def on_success(self, deployment: Deployment, latency_ms: float) -> None: ...

    def on_failure(self, deployment: Deployment, error: Exception) -> None: ...
