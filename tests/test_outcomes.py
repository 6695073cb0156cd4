"""Every admitted request ends with the outcome that happened: a cancelled call, a stream the
provider broke off, a stream the client left."""
from __future__ import annotations

import asyncio
import uuid

import pytest

from moneta.application.gateway import Caller
from moneta.domain.errors import GatewayError
from moneta.infrastructure.http_session import close_session
from tests.fake_openai import FakeOpenAI
from tests.test_router_gateway import gateway, mock, upstream

HELLO = [{"role": "user", "content": "hello there"}]


def events(container, request_id: uuid.UUID) -> list:
    return list(container.event_store.events.get(request_id))


async def test_a_call_cancelled_by_its_caller_ends_failed_with_499(sqlite_url):
    with gateway(sqlite_url, [mock("slow", "slow", mock_latency_ms=5000)]) as container:
        request_id = uuid.uuid4()
        call = container.gateway.chat(Caller(), {"model": "slow", "messages": HELLO}, request_id)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(call, timeout=0.3)
        await asyncio.sleep(0.1)  # the writer commits the outcome it was handed
        last = events(container, request_id)[-1]
    assert type(last).__name__ == "Failed" and (last.status_code, last.error_type) == (499, "cancelled")


async def test_a_stream_cancelled_before_its_first_chunk_ends_failed_with_499(sqlite_url):
    with gateway(sqlite_url, [mock("slow", "slow", mock_latency_ms=5000)]) as container:
        request_id = uuid.uuid4()
        opening = container.gateway.open_chat_stream(Caller(), {"model": "slow", "messages": HELLO, "stream": True},
                                                      request_id)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(opening, timeout=0.3)
        await asyncio.sleep(0.1)
        last = events(container, request_id)[-1]
    assert type(last).__name__ == "Failed" and last.status_code == 499


@pytest.fixture
async def broken_upstream():
    fake = FakeOpenAI(reply="one two three four").start()
    fake.stream_error = {"message": "the model fell over", "type": "server_error"}
    yield fake
    await close_session()
    fake.stop()


async def test_a_stream_the_provider_breaks_off_is_a_failure_that_bills_what_was_streamed(sqlite_url, broken_upstream):
    with gateway(sqlite_url, [upstream("gpt", "gpt", broken_upstream)]) as container:
        request_id = uuid.uuid4()
        chunks = await container.gateway.open_chat_stream(
            Caller(), {"model": "gpt", "messages": HELLO, "stream": True}, request_id)
        received = []
        with pytest.raises(GatewayError, match="fell over"):
            async for chunk in chunks:
                received.append(chunk)
        last = events(container, request_id)[-1]
    assert received and type(last).__name__ == "Interrupted"
    assert (last.cause, last.status_code) == ("upstream_error", 500) and last.error_type
    assert last.usage["completion_tokens"] > 0 and last.usage_estimated and last.cost > 0


async def test_a_stream_the_client_leaves_is_interrupted_by_the_client(sqlite_url):
    with gateway(sqlite_url, [mock("m", "m", mock_stream_chunks=20, mock_response="a b c d e f g h")]) as container:
        request_id = uuid.uuid4()
        chunks = await container.gateway.open_chat_stream(
            Caller(), {"model": "m", "messages": HELLO, "stream": True}, request_id)
        await anext(chunks)
        await chunks.aclose()
        last = events(container, request_id)[-1]
    assert type(last).__name__ == "Interrupted" and last.cause == "client_disconnected" and last.status_code is None
