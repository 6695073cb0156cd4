"""Server-sent events of a chat stream, in whichever framing the route speaks.

Headers are gone once a stream has started, so an error after that is told in-band, in the
framing's own shape, with configured secrets redacted.
"""
from __future__ import annotations

from typing import Any, AsyncGenerator, AsyncIterator, Iterable, Protocol

import orjson
from fastapi.responses import StreamingResponse

from moneta.domain.errors import GatewayError
from moneta.domain.redaction import redact


class Framing(Protocol):
    def start(self) -> Iterable[bytes]: ...

    def chunk(self, chunk: dict[str, Any]) -> Iterable[bytes]: ...

    def finish(self) -> Iterable[bytes]: ...

    def error(self, error: GatewayError) -> bytes: ...


class OpenAIFraming:
    """`data: <chat.completion.chunk>` per chunk, then `data: [DONE]`."""

    def start(self) -> Iterable[bytes]:
        return ()

    def chunk(self, chunk: dict[str, Any]) -> Iterable[bytes]:
        return (b"data: " + orjson.dumps(chunk) + b"\n\n",)

    def finish(self) -> Iterable[bytes]:
        return (b"data: [DONE]\n\n",)

    def error(self, error: GatewayError) -> bytes:
        return b"data: " + orjson.dumps(error.to_openai()) + b"\n\n"


def stream_response(chunks: AsyncGenerator[dict[str, Any], None], framing: Framing, secrets: tuple[str, ...],
                    headers: dict[str, str]) -> StreamingResponse:
    return StreamingResponse(_events(chunks, framing, secrets), media_type="text/event-stream",
                             headers={**headers, "cache-control": "no-cache"})


async def _events(chunks: AsyncGenerator[dict[str, Any], None], framing: Framing,
                  secrets: tuple[str, ...]) -> AsyncIterator[bytes]:
    try:
        for frame in framing.start():
            yield frame
        async for chunk in chunks:
            for frame in framing.chunk(chunk):
                yield frame
        for frame in framing.finish():
            yield frame
    except GatewayError as error:
        error.message = redact(error.message, secrets)
        yield framing.error(error)
    finally:
        await chunks.aclose()
