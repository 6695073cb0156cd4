"""The Python floor: the least a FastAPI gateway can do, to compare the real one against.

One POST route forwards the request body to the upstream with one shared aiohttp session and
returns the upstream's bytes: no validation, no auth, no ledger. Served by uvicorn with uvloop
and httptools, one worker, no access log, like `moneta serve`:

    python benchmarks/floor.py --port 8001 --upstream http://127.0.0.1:9000/v1/chat/completions
"""
from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import uvicorn
from fastapi import FastAPI, Request, Response

FORWARDED_HEADERS = {"Content-Type": "application/json"}


def build_app(upstream: str) -> FastAPI:
    session: aiohttp.ClientSession | None = None

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        nonlocal session
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        yield
        await session.close()

    app = FastAPI(lifespan=lifespan)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        assert session is not None
        async with session.post(upstream, data=await request.body(), headers=FORWARDED_HEADERS) as answer:
            return Response(await answer.read(), status_code=answer.status, media_type="application/json")

    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="the upstream's chat completions URL")
    args = parser.parse_args(argv)
    uvicorn.run(build_app(args.upstream), host=args.host, port=args.port, workers=1, loop="uvloop",
                http="httptools", access_log=False, log_level="warning")


if __name__ == "__main__":
    main()
