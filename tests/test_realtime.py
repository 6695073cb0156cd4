"""The Realtime API over WebSocket: the official `openai` SDK's realtime client against the real
proxy on loopback (`moneta serve`), relaying to a wire-level fake of OpenAI's and Azure's Realtime API."""
from __future__ import annotations

import asyncio
import time
import uuid
from decimal import Decimal

import openai
import orjson
import pytest
import websockets
from websockets.asyncio.client import connect

from moneta.domain.pricing import TokenPrice
from moneta.domain.usage import Usage
from moneta.infrastructure.event_store import StoreLocation
from tests.fake_realtime import FakeRealtime
from tests.live_server import LiveServer

MASTER_KEY = "sk-master-test-0123456789"
PRICES = {"input_cost_per_token": "0.000004", "output_cost_per_token": "0.000016",
          "cache_read_input_token_cost": "0.0000004", "input_cost_per_audio_token": "0.000032",
          "output_cost_per_audio_token": "0.000064"}
# The fake's usage per response: 120 input tokens (100 audio, 10 cached of the 20 text), 60 output (50 audio).
RESPONSE_COST = (10 * Decimal("0.000004") + 10 * Decimal("0.0000004") + 100 * Decimal("0.000032")
                 + 10 * Decimal("0.000016") + 50 * Decimal("0.000064"))
RESPONSE_USAGE = {"prompt_tokens": 120, "completion_tokens": 60, "cached_tokens": 10, "reasoning_tokens": 0,
                  "audio_prompt_tokens": 100, "audio_completion_tokens": 50}


@pytest.fixture(scope="module")
def upstream():
    fake = FakeRealtime().start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def server(upstream, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("realtime")
    url = f"sqlite:///{workdir / 'ledger.db'}"
    config = {
        "model_list": [
            {"model_name": "voice", "litellm_params": {
                "model": "openai/gpt-realtime", "api_base": upstream.base_url + "/v1",
                "api_key": "os.environ/UPSTREAM_KEY", **PRICES}},
            {"model_name": "azure-voice", "litellm_params": {
                "model": "azure/my-realtime-deployment", "api_base": upstream.base_url,
                "api_version": "2025-04-01-preview", "api_key": "os.environ/UPSTREAM_KEY", **PRICES}},
            {"model_name": "wrong-upstream-key", "litellm_params": {
                "model": "openai/gpt-realtime", "api_base": upstream.base_url + "/v1", "api_key": "sk-not-it",
                **PRICES}},
        ],
        # Short HTTP timeouts: they must not reach a WebSocket that outlives them.
        "general_settings": {"master_key": MASTER_KEY, "body_timeout_s": 0.5, "header_timeout_s": 0.5},
    }
    with LiveServer(config, workdir, env={"UPSTREAM_KEY": upstream.api_key, "DATABASE_URL": url}) as live:
        live.ledger_url = url
        yield live
    assert "ERROR" not in live.log()  # refused sessions are answered, not logged as failures


def _ws_url(server: LiveServer, model: str) -> str:
    return f"ws://127.0.0.1:{server.port}/v1/realtime?model={model}"


def _events(server: LiveServer, request_id: str) -> list:
    store = StoreLocation.from_url(server.ledger_url).open()
    try:
        return list(store.events.get(uuid.UUID(request_id)))
    finally:
        store.close()


async def _settled(server: LiveServer, request_id: str, timeout: float = 10.0) -> list:
    """The session's events once it has ended (the ledger is written as the socket closes)."""
    deadline = time.monotonic() + timeout
    while True:
        events = _events(server, request_id)
        if events and type(events[-1]).__name__ in ("Completed", "Failed", "Denied"):
            return events
        if time.monotonic() > deadline:
            raise AssertionError(f"the session did not end in the ledger: {[type(e).__name__ for e in events]}")
        await asyncio.sleep(0.05)


async def _until_done(connection) -> list[str]:
    types = []
    async for event in connection:
        types.append(event.type)
        if event.type == "response.done":
            return types
    raise AssertionError(f"the connection closed before response.done: {types}")


async def test_a_session_through_the_sdk_is_relayed_and_billed_per_response(server, upstream):
    client = openai.AsyncOpenAI(base_url=server.base_url + "/v1", api_key=MASTER_KEY)
    async with client.realtime.connect(model="voice") as connection:
        request_id = connection._connection.response.headers["x-request-id"]
        first = await connection.recv()
        assert first.type == "session.created" and first.session.model == "gpt-realtime"
        await connection.response.create()
        assert await _until_done(connection) == [
            "response.created", "response.output_text.delta", "response.output_text.delta", "response.done"]
        await connection.response.create()
        assert (await _until_done(connection))[-1] == "response.done"

    handshake = upstream.handshakes[-1]
    assert handshake.path == "/v1/realtime" and handshake.query == {"model": "gpt-realtime"}
    assert handshake.headers["Authorization"] == f"Bearer {upstream.api_key}"  # the provider key, not the master key
    events = await _settled(server, request_id)
    assert [type(e).__name__ for e in events] == ["Admitted", "UsageAdded", "UsageAdded", "Completed"]
    admitted, first_response, second_response, completed = events
    assert admitted.call_type == "realtime" and admitted.model_group == "voice"
    assert [first_response.response_id, second_response.response_id] == ["resp_1", "resp_2"]
    assert first_response.usage == RESPONSE_USAGE and first_response.cost == RESPONSE_COST
    assert first_response.price_source == "config price"
    assert completed.usage == {name: 2 * count for name, count in RESPONSE_USAGE.items()}
    assert completed.cost == 2 * RESPONSE_COST == Decimal("0.013208")
    assert completed.provider_model == "gpt-realtime" and completed.latency_ms > 0


async def test_an_azure_deployment_is_reached_at_its_realtime_url_with_its_api_key(server, upstream):
    client = openai.AsyncOpenAI(base_url=server.base_url + "/v1", api_key=MASTER_KEY)
    async with client.realtime.connect(model="azure-voice") as connection:
        request_id = connection._connection.response.headers["x-request-id"]
        assert (await connection.recv()).type == "session.created"
        await connection.response.create()
        await _until_done(connection)

    handshake = upstream.handshakes[-1]
    assert handshake.path == "/openai/realtime"
    assert handshake.query == {"api-version": "2025-04-01-preview", "deployment": "my-realtime-deployment"}
    assert handshake.headers["api-key"] == upstream.api_key and "Authorization" not in handshake.headers
    completed = (await _settled(server, request_id))[-1]
    assert completed.cost == RESPONSE_COST and completed.provider == "azure"


async def test_the_browser_way_key_in_a_subprotocol_and_binary_frames_pass_both_ways(server, upstream):
    offered = ["realtime", f"openai-insecure-api-key.{MASTER_KEY}", "openai-beta.realtime-v1"]
    async with connect(_ws_url(server, "voice"), subprotocols=offered) as socket:
        assert socket.subprotocol == "realtime"  # never the key
        assert orjson.loads(await socket.recv())["type"] == "session.created"
        await socket.send(b"\x00\x01binary\xff")
        assert await socket.recv() == b"\x00\x01binary\xff"
    assert upstream.handshakes[-1].headers["OpenAI-Beta"] == "realtime=v1"
    assert MASTER_KEY not in str(upstream.handshakes[-1].headers)


async def test_a_wrong_key_is_refused_with_401_and_leaves_no_trace(server, upstream):
    handshakes = len(upstream.handshakes)
    client = openai.AsyncOpenAI(base_url=server.base_url + "/v1", api_key="sk-wrong")
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with client.realtime.connect(model="voice"):
            pass
    response = refused.value.response
    assert response.status_code == 401
    assert orjson.loads(response.body)["error"]["message"] == "Invalid API key."
    # As on HTTP: a key that opens nothing costs no commit, so a flood of them cannot fill the ledger.
    assert _events(server, response.headers["x-request-id"]) == []
    assert len(upstream.handshakes) == handshakes  # nothing reached the upstream


async def test_an_unknown_model_and_a_refused_upstream_are_answered_before_the_session(server, upstream):
    headers = {"Authorization": f"Bearer {MASTER_KEY}"}
    with pytest.raises(websockets.InvalidStatus) as unknown:
        async with connect(_ws_url(server, "no-such-model"), additional_headers=headers):
            pass
    assert unknown.value.response.status_code in (400, 404)
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with connect(_ws_url(server, "wrong-upstream-key"), additional_headers=headers):
            pass
    events = await _settled(server, refused.value.response.headers["x-request-id"])
    assert [type(e).__name__ for e in events] == ["Admitted", "AttemptFailed", "Failed"]
    assert "sk-not-it" not in refused.value.response.body.decode()


async def test_a_session_outlives_the_http_timeouts(server, upstream):
    headers = {"Authorization": f"Bearer {MASTER_KEY}"}
    async with connect(_ws_url(server, "voice"), additional_headers=headers) as socket:
        assert orjson.loads(await socket.recv())["type"] == "session.created"
        await asyncio.sleep(1.2)
        await socket.send(orjson.dumps({"type": "response.create"}).decode())
        while orjson.loads(await socket.recv())["type"] != "response.done":
            pass


async def test_a_client_that_vanishes_ends_the_session_with_what_it_used(server, upstream):
    headers = {"Authorization": f"Bearer {MASTER_KEY}"}
    closed = upstream.closed
    socket = await connect(_ws_url(server, "voice"), additional_headers=headers)
    request_id = socket.response.headers["x-request-id"]
    assert orjson.loads(await socket.recv())["type"] == "session.created"
    await socket.send(orjson.dumps({"type": "response.create"}).decode())
    while orjson.loads(await socket.recv())["type"] != "response.done":
        pass
    socket.transport.abort()  # no close frame: the TCP connection is simply gone

    events = await _settled(server, request_id)
    assert [type(e).__name__ for e in events] == ["Admitted", "UsageAdded", "Completed"]
    assert events[-1].cost == RESPONSE_COST and events[-1].usage == RESPONSE_USAGE
    deadline = time.monotonic() + 5
    while upstream.closed == closed and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert upstream.closed > closed  # the upstream session was closed too


async def test_an_upstream_that_ends_the_session_has_it_completed_before_the_client_is_closed(server, upstream):
    headers = {"Authorization": f"Bearer {MASTER_KEY}"}
    async with connect(_ws_url(server, "voice"), additional_headers=headers) as socket:
        request_id = socket.response.headers["x-request-id"]
        assert orjson.loads(await socket.recv())["type"] == "session.created"
        await socket.send(orjson.dumps({"type": "response.create"}).decode())
        await socket.send(orjson.dumps({"type": "fake.hang_up"}).decode())
        received = [orjson.loads(frame)["type"] async for frame in socket]
    assert received[-1] == "response.done"
    assert socket.close_code == 1000
    events = _events(server, request_id)  # durable before the client's socket was closed: no waiting
    assert [type(e).__name__ for e in events] == ["Admitted", "UsageAdded", "Completed"]
    assert events[-1].cost == RESPONSE_COST


def test_realtime_usage_is_read_and_summed():
    usage = Usage.from_realtime({"input_tokens": 120, "output_tokens": 60,
                                 "input_token_details": {"audio_tokens": 100, "cached_tokens": 10},
                                 "output_token_details": {"audio_tokens": 50}})
    assert (usage + usage).as_event_fields() == {name: 2 * count for name, count in RESPONSE_USAGE.items()}


def test_audio_tokens_are_priced_at_the_text_rate_unless_the_config_prices_them():
    usage = Usage(prompt_tokens=10, completion_tokens=10, audio_prompt_tokens=4, audio_completion_tokens=6)
    text_only = TokenPrice(Decimal("1"), Decimal("2"))
    assert text_only.cost_of(usage) == 10 * 1 + 10 * 2
    with_audio = TokenPrice(Decimal("1"), Decimal("2"), input_audio_per_token=Decimal("5"),
                            output_audio_per_token=Decimal("7"))
    assert with_audio.cost_of(usage) == 6 * 1 + 4 * 5 + 4 * 2 + 6 * 7
