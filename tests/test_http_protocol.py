"""`LimitedHttpToolsProtocol` on a fake transport, for what a real client cannot show: a pause in
reading caused by the server is not held against the client."""
from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.config import Config
from uvicorn.server import ServerState

from moneta.api.http_protocol import LimitedHttpToolsProtocol
from moneta.application.config import ConnectionLimits

TIMEOUT_S = 0.1


class Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 4000), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def write(self, data: bytes) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def never_reads(scope: dict, receive: Any, send: Any) -> None:
    await asyncio.Event().wait()


async def test_the_body_timeout_waits_while_the_server_does_not_read():
    config = Config(never_reads, log_level="warning")
    config.load()
    limits = ConnectionLimits(header_timeout_s=TIMEOUT_S, body_timeout_s=TIMEOUT_S)
    protocol = LimitedHttpToolsProtocol(config=config, server_state=ServerState(), app_state={}, limits=limits)
    transport = Transport()
    protocol.connection_made(transport)
    protocol.data_received(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
    protocol.flow.pause_reading()  # as uvicorn does when the app leaves too much body unread

    await asyncio.sleep(TIMEOUT_S * 4)
    assert not transport.closed

    protocol.flow.resume_reading()
    await asyncio.sleep(TIMEOUT_S * 4)
    assert transport.closed and transport.written.startswith(b"HTTP/1.1 408 ")
    protocol.connection_lost(None)
