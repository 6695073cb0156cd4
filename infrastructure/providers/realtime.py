"""The upstream side of a Realtime API session: a WebSocket (aiohttp's client, on the shared
session) to an OpenAI-compatible or Azure deployment, which gives its URL and credentials."""
from __future__ import annotations

import asyncio
from typing import Mapping

import aiohttp

from moneta.application.config import Deployment
from moneta.application.ports import Frame, ProviderRegistry
from moneta.domain import errors
from moneta.infrastructure.http_session import session
from moneta.infrastructure.providers.http_errors import error_from_response
from moneta.infrastructure.providers.openai_compatible import OpenAICompatibleProvider

CLOSE_TIMEOUT_S = 10.0


class RealtimeWebSockets:
    def __init__(self, providers: ProviderRegistry) -> None:
        self._providers = providers

    async def connect(self, deployment: Deployment, headers: Mapping[str, str]) -> "UpstreamSocket":
        adapter = self._providers.for_deployment(deployment)
        if not isinstance(adapter, OpenAICompatibleProvider):
            raise errors.BadRequestError(
                f"{deployment.provider} does not offer the Realtime API through Moneta", param="model",
                code="unsupported_endpoint", provider=deployment.provider, model=deployment.provider_model)
        url, credentials = await adapter.realtime_target(deployment)
        try:
            socket = await session().ws_connect(
                url, headers={**headers, **credentials}, max_msg_size=0, autoping=True,
                timeout=aiohttp.ClientWSTimeout(ws_close=CLOSE_TIMEOUT_S))
        except aiohttp.WSServerHandshakeError as exc:
            status = exc.status if exc.status >= 400 else 502  # a 2xx or 3xx that is no WebSocket
            raise error_from_response(status, f"the realtime handshake was refused ({exc.status})",
                                      exc.headers or {}, provider=deployment.provider,
                                      model=deployment.provider_model) from None
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise errors.APIConnectionError(
                f"could not reach {deployment.provider}'s realtime API: {type(exc).__name__}",
                provider=deployment.provider, model=deployment.provider_model) from None
        return UpstreamSocket(socket)


class UpstreamSocket:
    def __init__(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        self._socket = socket

    async def receive(self) -> Frame | None:
        message = await self._socket.receive()
        if message.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
            return message.data
        return None  # closing, closed, or an error

    async def send(self, frame: Frame) -> None:
        if isinstance(frame, str):
            await self._socket.send_str(frame)
        else:
            await self._socket.send_bytes(frame)

    async def close(self) -> None:
        await self._socket.close()
