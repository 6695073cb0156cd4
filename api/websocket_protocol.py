"""uvicorn's sans-I/O WebSocket protocol (over the `websockets` library), as `moneta serve` runs it.

uvicorn 0.54 counts only an accepted handshake as complete: after a denial response (a refused
Realtime session answered 401, 404, ...) it logs "ASGI callable returned without completing
handshake" at ERROR, for a refusal the client received as intended. Marking the handshake complete
once the denial is sent, as uvicorn's wsproto protocol does, keeps the log for real failures
(uvicorn pull request #3138 makes the same change upstream).
"""
from __future__ import annotations

from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol


class DenialAwareWebSocketProtocol(WebSocketsSansIOProtocol):
    async def send(self, message: Any) -> None:
        await super().send(message)
        if message["type"] == "websocket.http.response.body" and not message.get("more_body", False):
            self.handshake_complete = True
