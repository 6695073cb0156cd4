"""A wire-level fake of bedrock-runtime: checks the SigV4 signature by recomputing it with
botocore from the known test credentials, records each request, and answers with JSON or
with real binary event-stream frames written in small pieces."""
from __future__ import annotations

import asyncio
import re
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.providers.fakes.server import start_loopback

ACCESS_KEY = "AKIDEXAMPLE"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
SESSION_TOKEN = "session-token-example"
REGION = "eu-west-3"

_AUTHORIZATION = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[a-z0-9-]+)/bedrock/aws4_request, "
    r"SignedHeaders=(?P<signed>[a-z0-9;-]+), Signature=(?P<signature>[0-9a-f]{64})"
)


def frame(headers: dict[str, Any], payload: bytes) -> bytes:
    """One event-stream message. String values are type 7, bytes type 6, ints type 4."""
    encoded = b"".join(_header(name, value) for name, value in headers.items())
    total = 12 + len(encoded) + len(payload) + 4
    prelude = struct.pack(">II", total, len(encoded))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    body = prelude + encoded + payload
    return body + struct.pack(">I", zlib.crc32(body))


def _header(name: str, value: Any) -> bytes:
    raw_name = name.encode()
    prefix = bytes([len(raw_name)]) + raw_name
    if isinstance(value, bool):
        return prefix + bytes([0 if value else 1])
    if isinstance(value, int):
        return prefix + b"\x04" + struct.pack(">i", value)
    raw = value if isinstance(value, bytes) else value.encode()
    return prefix + (b"\x06" if isinstance(value, bytes) else b"\x07") + struct.pack(">H", len(raw)) + raw


def event(event_type: str, payload: dict[str, Any]) -> bytes:
    return frame({":event-type": event_type, ":content-type": "application/json", ":message-type": "event"},
                 orjson.dumps(payload))


def exception(exception_type: str, message: str) -> bytes:
    return frame({":exception-type": exception_type, ":content-type": "application/json",
                  ":message-type": "exception"}, orjson.dumps({"message": message}))


@dataclass
class Reply:
    status: int = 200
    json: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    frames: list[bytes] | None = None
    piece_size: int = 7  # stream bytes are written this many at a time, cutting frames apart


@dataclass
class Received:
    method: str
    raw_path: str
    headers: dict[str, str]
    body: bytes
    signature_problem: str | None

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)


class FakeBedrock:
    def __init__(self, session_token: str | None = SESSION_TOKEN, region: str = REGION) -> None:
        self.credentials = Credentials(ACCESS_KEY, SECRET_KEY, session_token)
        self.region = region
        self.received: list[Received] = []
        self.reply: Callable[[Received], Reply] = lambda received: Reply(json={})
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> FakeBedrock:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner, port = await start_loopback(app)
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = dict(request.headers)
        received = Received(request.method, request.raw_path, headers, body,
                            self._signature_problem(request, headers, body))
        self.received.append(received)
        if received.signature_problem:
            return web.json_response({"message": received.signature_problem}, status=403,
                                     headers={"x-amzn-ErrorType": "InvalidSignatureException"})
        reply = self.reply(received)
        if reply.frames is None:
            return web.Response(status=reply.status, body=orjson.dumps(reply.json),
                                headers={"Content-Type": "application/json", **reply.headers})
        return await _stream(request, reply)

    def _signature_problem(self, request: web.Request, headers: dict[str, str], body: bytes) -> str | None:
        match = _AUTHORIZATION.fullmatch(headers.get("Authorization", ""))
        if match is None:
            return "Authorization is not an AWS4-HMAC-SHA256 header"
        amz_date = headers.get("X-Amz-Date", "")
        if not re.fullmatch(r"\d{8}T\d{6}Z", amz_date) or match["date"] != amz_date[:8]:
            return "X-Amz-Date is missing or does not match the credential scope"
        if match["key"] != ACCESS_KEY or match["region"] != self.region:
            return "wrong access key or region in the credential scope"
        signed = match["signed"].split(";")
        if self.credentials.token and headers.get("X-Amz-Security-Token") != self.credentials.token:
            return "X-Amz-Security-Token is missing"
        lowered = {name.lower(): value for name, value in headers.items()}
        if any(name not in lowered for name in signed):
            return "a signed header was not sent"
        url = f"http://{request.host}{request.raw_path}"
        aws = AWSRequest(method=request.method, url=url, data=body, headers={n: lowered[n] for n in signed})
        aws.context["timestamp"] = amz_date
        signer = SigV4Auth(self.credentials, "bedrock", self.region)
        if signer.signed_headers(signer.headers_to_sign(aws)) != match["signed"]:
            return "SignedHeaders does not list the signed headers"
        expected = signer.signature(signer.string_to_sign(aws, signer.canonical_request(aws)), aws)
        return None if expected == match["signature"] else "signature mismatch"


async def _stream(request: web.Request, reply: Reply) -> web.StreamResponse:
    response = web.StreamResponse(status=reply.status,
                                  headers={"Content-Type": "application/vnd.amazon.eventstream", **reply.headers})
    await response.prepare(request)
    data = b"".join(reply.frames or [])
    for start in range(0, len(data), reply.piece_size):
        await response.write(data[start:start + reply.piece_size])
        await asyncio.sleep(0.001)  # so that the client reads the pieces separately
    await response.write_eof()
    return response
