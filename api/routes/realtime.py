"""OpenAI's Realtime API over WebSocket: `/v1/realtime?model=<model group>`, relayed to one deployment."""
from __future__ import annotations

import uuid

from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketState

from moneta.api.admission import checked, with_seen
from moneta.api.auth import authenticator, caller_of, presented_key
from moneta.api.errors import error_response, public
from moneta.application.gateway import Caller, Gateway
from moneta.application.ports import Frame
from moneta.application.realtime import CALL_TYPE, RealtimeSessions
from moneta.domain.errors import BadRequestError, GatewayError

router = APIRouter()

# Browsers cannot set headers on a WebSocket: OpenAI's clients pass the key (and the beta flag)
# as subprotocols, beside `realtime`, the one the server accepts.
KEY_SUBPROTOCOL = "openai-insecure-api-key."
BETA_SUBPROTOCOL = "openai-beta.realtime-v1"
ACCEPTED_SUBPROTOCOL = "realtime"


@router.websocket("/v1/realtime")
@router.websocket("/realtime")
async def realtime(websocket: WebSocket) -> None:
    gateway: Gateway = websocket.app.state.container.gateway
    request_id = uuid.uuid4()
    model = websocket.query_params.get("model", "")
    try:
        caller = await authenticate(websocket)
    except GatewayError as error:  # as on HTTP, a key that opens nothing leaves no trace in the ledger
        await _refuse(websocket, error, request_id)
        return
    seen: dict = {}
    try:
        try:
            if not model:
                raise BadRequestError("The 'model' query parameter is required: /v1/realtime?model=<model>.",
                                      param="model")
            caller, call = await checked(websocket, caller, {"model": model}, request_id, CALL_TYPE, seen)
        except GatewayError as error:
            await gateway.deny(with_seen(caller, seen), CALL_TYPE, model, error, request_id)
            raise
        model = call["model"]
        sessions = RealtimeSessions(gateway, websocket.app.state.container.realtime)
        session = await sessions.open(caller, model, request_id, _passed_headers(websocket))
    except GatewayError as error:
        await _refuse(websocket, error, request_id)
        return
    offered = websocket.scope.get("subprotocols") or []
    try:
        await websocket.accept(subprotocol=ACCEPTED_SUBPROTOCOL if ACCEPTED_SUBPROTOCOL in offered else None,
                               headers=[(b"x-request-id", str(request_id).encode())])
    finally:  # a client gone while the upstream was connected still ends the session, in the ledger too
        await session.relay(_ClientSocket(websocket))


async def authenticate(websocket: WebSocket) -> Caller:
    """The caller of a session: the key from the headers, as on HTTP, or from the subprotocol."""
    principal = await authenticator(websocket.app).principal(
        presented_key(websocket.headers) or _subprotocol_key(websocket))
    websocket.state.principal = principal
    return caller_of(principal)


def _subprotocol_key(websocket: WebSocket) -> str | None:
    for offered in websocket.scope.get("subprotocols") or []:
        if offered.startswith(KEY_SUBPROTOCOL):
            return offered[len(KEY_SUBPROTOCOL):]
    return None


def _passed_headers(websocket: WebSocket) -> dict[str, str]:
    """What the upstream is told of the client's request: the Realtime API version it speaks."""
    beta = websocket.headers.get("openai-beta")
    if beta is None and BETA_SUBPROTOCOL in (websocket.scope.get("subprotocols") or []):
        beta = "realtime=v1"
    return {"OpenAI-Beta": beta} if beta else {}


async def _refuse(websocket: WebSocket, error: GatewayError, request_id: uuid.UUID) -> None:
    """Denies the handshake with the HTTP error an HTTP call would get, where the server can;
    else accepts and closes at once (1008: refused, 1011: the gateway or upstream failed)."""
    error = public(error, str(request_id), websocket.app.state.container.config.secrets())
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(error_response(error, str(request_id)))
        return
    await websocket.accept()
    await websocket.close(code=1011 if error.status_code >= 500 else 1008, reason=_close_reason(error.message))


def _close_reason(message: str) -> str:
    return message.encode()[:120].decode(errors="ignore")  # a close frame holds 123 bytes of reason


class _ClientSocket:
    """The client's side of a session, as the relay sees it."""

    def __init__(self, websocket: WebSocket) -> None:
        self._websocket = websocket

    async def receive(self) -> Frame | None:
        message = await self._websocket.receive()
        if message["type"] == "websocket.disconnect":
            return None
        text = message.get("text")
        return text if text is not None else message.get("bytes")

    async def send(self, frame: Frame) -> None:
        if isinstance(frame, str):
            await self._websocket.send_text(frame)
        else:
            await self._websocket.send_bytes(frame)

    async def close(self) -> None:
        websocket = self._websocket
        if WebSocketState.DISCONNECTED not in (websocket.client_state, websocket.application_state):
            await websocket.close()
