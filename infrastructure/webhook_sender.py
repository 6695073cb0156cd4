"""Posts webhook bodies over aiohttp, with a session of its own (the deliverer's event loop is not
the providers'), short timeouts and no redirects followed: a webhook answers where it was told to."""
from __future__ import annotations

import asyncio
from typing import Mapping

import aiohttp

from moneta.application.alert_delivery import WebhookUnreachable


class AiohttpWebhookSender:
    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    async def post(self, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float) -> int:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(trust_env=False, headers={"User-Agent": "moneta-alerts"})
        try:
            async with self._session.post(url, data=body, headers=dict(headers), allow_redirects=False,
                                          timeout=aiohttp.ClientTimeout(total=timeout_s)) as response:
                await response.read()
                return response.status
        except asyncio.TimeoutError:
            raise WebhookUnreachable(f"no answer within {timeout_s:g}s") from None
        except aiohttp.ClientConnectorError as error:
            raise WebhookUnreachable(f"cannot connect ({error.os_error.strerror or type(error.os_error).__name__})") \
                from None
        except aiohttp.ClientError as error:  # its message may name the URL: the type says enough
            raise WebhookUnreachable(type(error).__name__) from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
