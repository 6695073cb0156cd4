"""Realtime API sessions (OpenAI's Realtime over WebSocket), relayed to one deployment.

A session is one request stream in the ledger: admitted like any call, then one UsageAdded per
`response.done` the upstream sends, and Completed with the session's totals when either side
closes. Frames pass through as they are; only `response.done` events are parsed.
"""
from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Awaitable, Callable, Mapping
from uuid import UUID

import orjson

from moneta.application.admission import Admission
from moneta.application.config import Deployment
from moneta.application.gateway import Caller, Gateway
from moneta.application.ports import Channel, Frame, RealtimeConnector
from moneta.domain.request_record import RequestRecord
from moneta.domain.usage import Usage

log = logging.getLogger("moneta.realtime")

CALL_TYPE = "realtime"
_DONE_TEXT = '"response.done"'
_DONE_BYTES = _DONE_TEXT.encode()


class RealtimeSessions:
    def __init__(self, gateway: Gateway, connector: RealtimeConnector) -> None:
        self._gateway = gateway
        self._connector = connector

    async def open(self, caller: Caller, model: str, request_id: UUID,
                   headers: Mapping[str, str]) -> "RealtimeSession":
        """Admits the session and connects to a deployment of the model group (another one if
        connecting fails, as the retry policy allows); raises the GatewayError that refused it."""
        started = time.perf_counter()
        body = {"model": model}
        # The gateway's own admission and attempts, so that a session is admitted, routed and
        # recorded as any call is.
        record, first, admitted = await self._gateway._admit(CALL_TYPE, caller, body, request_id, stream=True)
        try:
            upstream, deployment, _ = await self._gateway._attempt(
                record, first, admitted, body, lambda d: self._connector.connect(d, headers), stream=True,
                barred=caller.barred_providers)
        except asyncio.CancelledError:
            await self._gateway._cancelled(record, admitted)
            raise
        return RealtimeSession(record, admitted, deployment, upstream, self._gateway, started)


class RealtimeSession:
    def __init__(self, record: RequestRecord, admitted: Admission, deployment: Deployment, upstream: Channel,
                 gateway: Gateway, started: float) -> None:
        self._record = record
        self._admitted = admitted
        self._deployment = deployment
        self._upstream = upstream
        self._gateway = gateway
        self._started = started
        self.usage = Usage()
        self.cost = Decimal(0)
        self._price_source = ""
        self._writes: list[asyncio.Future[None]] = []

    async def relay(self, client: Channel) -> None:
        """Relays frames both ways until either side closes; then closes the upstream, records the
        session's end (durably), and closes the client."""
        pumps = [asyncio.ensure_future(_pump(client, self._upstream, _ignore)),
                 asyncio.ensure_future(_pump(self._upstream, client, self._observe))]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            await asyncio.shield(self._end(client))

    async def _end(self, client: Channel) -> None:
        await _quietly(self._upstream.close)
        try:
            self._complete()
            await self._admitted.settle()
            await asyncio.gather(*self._writes)
        finally:
            await _quietly(client.close)

    def _observe(self, frame: Frame) -> None:
        needle: Any = _DONE_TEXT if isinstance(frame, str) else _DONE_BYTES
        if needle not in frame:
            return
        try:
            event = orjson.loads(frame)
        except orjson.JSONDecodeError:
            return
        if isinstance(event, dict) and event.get("type") == "response.done":
            self._add_response(event.get("response") or {})

    def _add_response(self, response: dict[str, Any]) -> None:
        usage = Usage.from_realtime(response.get("usage"))
        quote = self._gateway.prices.quote(self._deployment, usage, datetime.now(timezone.utc))
        self._record.add_usage(response_id=str(response.get("id") or ""), usage=usage, cost=quote.cost,
                               price_source=quote.source)
        self.usage += usage
        self.cost += quote.cost
        self._price_source = quote.source
        self._writes.append(self._gateway.ledger.record(self._record))

    def _complete(self) -> None:
        deployment, settled_at = self._deployment, datetime.now(timezone.utc)
        source = self._price_source or self._gateway.prices.quote(deployment, Usage(), settled_at).source
        askii, askii_rate = self._gateway.askii.settle(self.cost, settled_at)
        self._record.complete(
            deployment_id=deployment.id,
            provider=deployment.provider,
            provider_model=deployment.provider_model,
            usage=self.usage,
            cost=self.cost,
            price_source=source,
            latency_ms=round((time.perf_counter() - self._started) * 1000, 3),
            askii=askii,
            askii_rate=askii_rate,
        )


async def _pump(source: Channel, sink: Channel, observe: Callable[[Frame], None]) -> None:
    try:
        while (frame := await source.receive()) is not None:
            observe(frame)
            await sink.send(frame)
    except Exception as error:  # a side that fails ends the session like one that closes
        log.info("realtime relay ended by %s", type(error).__name__)


def _ignore(_: Frame) -> None:
    return None


async def _quietly(close: Callable[[], Awaitable[None]]) -> None:
    try:
        await close()
    except Exception as error:  # the other end may be gone already
        log.debug("closing a realtime channel: %s", type(error).__name__)
