"""Errors as OpenAI's JSON, with the status the official SDKs map to the right exception.

A 500 tells the client only that it happened, and under which request id: what went wrong
(an exception's text, a provider's message) goes to the log, secrets redacted.
"""
from __future__ import annotations

import logging
import math
import sqlite3
import traceback
import uuid

import psycopg
from fastapi import FastAPI, Request, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from moneta.api.responses import json_response
from moneta.domain.errors import GatewayError, InternalServerError, ServiceUnavailableError
from moneta.domain.redaction import redact

log = logging.getLogger("moneta.api")


def request_id_of(request: Request) -> str:
    """The request's id: its ledger stream's, or one made now (answered in `x-request-id` too)."""
    request_id = getattr(request.state, "request_id", None)
    if request_id is None:
        request_id = request.state.request_id = str(uuid.uuid4())
    return request_id


def public(error: GatewayError, request_id: str, secrets: tuple[str, ...]) -> GatewayError:
    """What the client may see of an error: its message with secrets redacted, or for a 500
    a generic message with the request id (the detail is logged)."""
    if error.status_code != 500:
        error.message = redact(error.message, secrets)
        return error
    log.error("request %s failed: %s", request_id, redact(error.message, secrets))
    return InternalServerError(f"The server had an error while processing your request (request id {request_id}).")


def error_response(error: GatewayError, request_id: str) -> Response:
    headers = {"x-request-id": request_id}
    if error.retry_after is not None:
        headers["retry-after"] = str(max(1, math.ceil(error.retry_after)))
    return json_response(error.to_openai(), status_code=error.status_code, headers=headers)


def unexpected(error: Exception, request_id: str, secrets: tuple[str, ...]) -> GatewayError:
    """A 500 for an exception the gateway did not expect: its traceback goes to the log only.
    A database that cannot be reached (the views, during an outage) is a 503: try again."""
    if isinstance(error, (psycopg.OperationalError, sqlite3.OperationalError)):
        log.warning("request %s: database unavailable: %s", request_id, redact(str(error), secrets))
        return ServiceUnavailableError("The gateway's database is unavailable; try again shortly.",
                                       code="database_unavailable")
    detail = "".join(traceback.format_exception(error))
    return public(InternalServerError(detail), request_id, secrets)


class _Unexpected:
    """Answers an exception that no handler took with a 500 saying nothing of it. (Starlette's
    own last resort would re-raise it, for the server to log unredacted.) Once the response
    has started, only the log hears of it."""

    def __init__(self, app: ASGIApp, secrets: tuple[str, ...]) -> None:
        self.app = app
        self.secrets = secrets

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except ClientDisconnect:  # the client left while sending its body: nobody to answer
            log.debug("client disconnected before its request body was complete")
        except Exception as error:  # noqa: BLE001 - the last resort
            request_id = request_id_of(Request(scope))
            answer = unexpected(error, request_id, self.secrets)
            if not started:
                await error_response(answer, request_id)(scope, receive, send)


def install_error_handlers(app: FastAPI, secrets: tuple[str, ...]) -> None:
    app.add_middleware(_Unexpected, secrets=secrets)

    @app.exception_handler(GatewayError)
    async def on_gateway_error(request: Request, error: GatewayError) -> Response:
        request_id = request_id_of(request)
        return error_response(public(error, request_id, secrets), request_id)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, error: StarletteHTTPException) -> Response:
        kind = "invalid_request_error" if error.status_code < 500 else "server_error"
        body = {"error": {"message": str(error.detail), "type": kind, "param": None, "code": str(error.status_code)}}
        return json_response(body, status_code=error.status_code, headers=getattr(error, "headers", None))
