"""Errors as OpenAI's JSON, with the status the official SDKs map to the right exception."""
from __future__ import annotations

import logging
import math

from fastapi import FastAPI, Request, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from moneta.api.responses import json_response
from moneta.domain.errors import GatewayError, InternalServerError
from moneta.domain.redaction import redact

log = logging.getLogger("moneta.api")


def error_response(error: GatewayError, request_id: str | None = None) -> Response:
    headers = {}
    if request_id:
        headers["x-request-id"] = request_id
    if error.retry_after is not None:
        headers["retry-after"] = str(max(1, math.ceil(error.retry_after)))
    return json_response(error.to_openai(), status_code=error.status_code, headers=headers)


def install_error_handlers(app: FastAPI, secrets: tuple[str, ...]) -> None:
    @app.exception_handler(GatewayError)
    async def on_gateway_error(request: Request, error: GatewayError) -> Response:
        error.message = redact(error.message, secrets)
        return error_response(error, getattr(request.state, "request_id", None))

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, error: StarletteHTTPException) -> Response:
        kind = "invalid_request_error" if error.status_code < 500 else "server_error"
        body = {"error": {"message": str(error.detail), "type": kind, "param": None, "code": str(error.status_code)}}
        return json_response(body, status_code=error.status_code, headers=getattr(error, "headers", None))

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, error: Exception) -> Response:
        log.error("unhandled %s: %s", type(error).__name__, redact(str(error), secrets))
        return error_response(InternalServerError("The server had an error while processing your request."),
                              getattr(request.state, "request_id", None))
