"""The official `openai` SDK against the real proxy on loopback, backed by a fake OpenAI."""
from __future__ import annotations

import io
import time
import uuid
import wave
from decimal import Decimal

import httpx
import openai
import pytest

from moneta.domain.request_record import RequestRecord
from moneta.infrastructure.event_store import StoreLocation
from tests import services
from tests.fake_openai import FakeOpenAI
from tests.live_server import LiveServer

MASTER_KEY = "sk-master-test-0123456789"


@pytest.fixture(scope="module")
def shared_upstream():
    fake = FakeOpenAI().start()
    yield fake
    fake.stop()


@pytest.fixture
def upstream(shared_upstream):
    shared_upstream.fail_with = None
    return shared_upstream


def _config(upstream: FakeOpenAI) -> dict:
    return {
        "model_list": [
            {"model_name": "gpt-4o-mini", "litellm_params": {
                "model": "openai/gpt-4o-mini", "api_base": upstream.base_url, "api_key": "os.environ/UPSTREAM_KEY"}},
            {"model_name": "embedder", "litellm_params": {
                "model": "openai/text-embedding-3-small", "api_base": upstream.base_url,
                "api_key": "os.environ/UPSTREAM_KEY"}},
            {"model_name": "whisper", "litellm_params": {
                "model": "openai/whisper-1", "api_base": upstream.base_url, "api_key": "os.environ/UPSTREAM_KEY"}},
            {"model_name": "legacy", "litellm_params": {
                "model": "openai/gpt-3.5-turbo-instruct", "api_base": upstream.base_url,
                "api_key": "os.environ/UPSTREAM_KEY"}},
            {"model_name": "mock-gpt", "litellm_params": {"model": "mock/mock-gpt"}},
            {"model_name": "slow-mock", "litellm_params": {
                "model": "mock/slow", "mock_latency_ms": 300, "mock_stream_chunks": 40,
                "mock_response": " ".join(f"word{i}" for i in range(200))}},
        ],
        "general_settings": {"master_key": MASTER_KEY, "max_request_size_mb": 1},
    }


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(request, shared_upstream, tmp_path_factory):
    """One server per ledger backend for the whole module (starting one takes a second)."""
    workdir = tmp_path_factory.mktemp(request.param)
    url = f"sqlite:///{workdir / 'ledger.db'}" if request.param == "sqlite" else services.create_database()
    env = {"UPSTREAM_KEY": shared_upstream.api_key, "DATABASE_URL": url}
    try:
        with LiveServer(_config(shared_upstream), workdir, env=env) as live:
            live.ledger_url = url
            yield live
    finally:
        if request.param == "postgres":
            services.drop_database(url)


@pytest.fixture
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key=MASTER_KEY, max_retries=0)


def _ledger_record(server: LiveServer, request_id: str) -> RequestRecord:
    app = StoreLocation.from_url(server.ledger_url).open()
    try:
        return app.repository.get(uuid.UUID(request_id))
    finally:
        app.close()


def _events(server: LiveServer, request_id: str) -> list[str]:
    app = StoreLocation.from_url(server.ledger_url).open()
    try:
        return [type(e).__name__ for e in app.events.get(uuid.UUID(request_id))]
    finally:
        app.close()


def test_chat_completion_reaches_upstream_and_is_in_the_ledger(client, server, upstream):
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Say hello"}], temperature=0.2, user="alice")
    completion = raw.parse()
    assert completion.choices[0].message.content == upstream.reply
    assert completion.usage.total_tokens == 18
    sent = upstream.requests[-1]
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["Authorization"] == f"Bearer {upstream.api_key}"  # the provider key, not the master key
    assert sent.body["model"] == "gpt-4o-mini" and sent.body["temperature"] == 0.2
    record = _ledger_record(server, raw.headers["x-request-id"])
    assert record.outcome == "completed"
    assert record.model_group == "gpt-4o-mini"
    # genai-prices, gpt-4o-mini: $0.15/M input, $0.60/M output
    assert record.cost == Decimal(11) * Decimal("0.00000015") + Decimal(7) * Decimal("0.0000006")
    assert _events(server, raw.headers["x-request-id"]) == ["Admitted", "Completed"]


def test_streamed_chat_with_usage(client, server, upstream):
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True,
        stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == upstream.reply
    assert chunks[-1].usage.prompt_tokens == 11 and chunks[-1].choices == []
    assert upstream.requests[-1].body["stream_options"] == {"include_usage": True}


def test_streamed_chat_without_usage_hides_the_usage_chunk_but_records_it(client, server, upstream):
    with client.chat.completions.with_streaming_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True) as response:
        request_id = response.headers["x-request-id"]
        chunks = list(response.parse())
    assert all(c.usage is None for c in chunks)
    assert upstream.requests[-1].body["stream_options"] == {"include_usage": True}  # asked on our own account
    record = _ledger_record(server, request_id)
    assert record.outcome == "completed" and record.cost > 0


def test_text_completion_embedding_and_transcription(client, server, upstream):
    assert client.completions.create(model="legacy", prompt="Once upon").choices[0].text == upstream.reply
    vectors = client.embeddings.create(model="embedder", input=["a", "b"])
    assert [d.embedding for d in vectors.data] == [[0.1, 0.2, 0.3]] * 2
    audio = io.BytesIO()
    with wave.open(audio, "wb") as writer:
        writer.setnchannels(1), writer.setsampwidth(2), writer.setframerate(8000)
        writer.writeframes(b"\0\0" * 8000)
    raw = client.audio.transcriptions.with_raw_response.create(model="whisper", file=("a.wav", audio.getvalue()))
    assert raw.parse().text == upstream.reply
    sent = upstream.requests[-1]
    assert sent.path == "/v1/audio/transcriptions" and sent.body["model"] == "whisper-1"
    assert sent.body["response_format"] == "verbose_json" and sent.body["file"] == "<file a.wav>"
    # 12.5 s (the upstream's reported duration) at whisper-1's $0.006 per minute
    assert _ledger_record(server, raw.headers["x-request-id"]).cost == Decimal("12.5") * Decimal("0.006") / 60


def test_models_lists_the_groups(client):
    assert [m.id for m in client.models.list()] == ["embedder", "gpt-4o-mini", "legacy", "mock-gpt", "slow-mock",
                                                       "whisper"]


def test_wrong_or_missing_key_is_401(server):
    bad = openai.OpenAI(base_url=server.base_url + "/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as caught:
        bad.chat.completions.create(model="mock-gpt", messages=[{"role": "user", "content": "x"}])
    assert caught.value.body["type"] == "authentication_error"
    assert "sk-wrong" not in str(caught.value)
    response = httpx.post(server.base_url + "/v1/chat/completions", json={"model": "mock-gpt"})
    assert response.status_code == 401 and "x-request-id" in response.headers


def test_x_api_key_header_is_accepted(server):
    response = httpx.post(server.base_url + "/chat/completions", headers={"x-api-key": MASTER_KEY},
                          json={"model": "mock-gpt", "messages": [{"role": "user", "content": "x"}]})
    assert response.status_code == 200


def test_unknown_model_is_404_and_recorded_as_a_denial(client, server):
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    assert caught.value.body["code"] == "model_not_found"
    record = _ledger_record(server, caught.value.response.headers["x-request-id"])
    assert record.outcome == "denied" and record.cost == 0


@pytest.mark.parametrize("body, param", [
    ({"model": "mock-gpt"}, "messages"),
    ({"model": "mock-gpt", "messages": "hi"}, "messages"),
    ({"model": "mock-gpt", "messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
    ({"model": "mock-gpt", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"}, "temperature"),
    ({"model": "mock-gpt", "messages": [{"role": "user", "content": "x"}], "max_tokens": True}, "max_tokens"),
    ({"messages": [{"role": "user", "content": "x"}]}, "model"),
])
def test_wrong_types_are_400_naming_the_parameter(server, body, param):
    response = httpx.post(server.base_url + "/v1/chat/completions", json=body,
                          headers={"Authorization": f"Bearer {MASTER_KEY}"})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_malformed_json_is_400_and_the_server_keeps_serving(server, client):
    response = httpx.post(server.base_url + "/v1/chat/completions", content=b'{"model": ',
                          headers={"Authorization": f"Bearer {MASTER_KEY}", "content-type": "application/json"})
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_json"
    assert client.chat.completions.create(model="mock-gpt", messages=[{"role": "user", "content": "ok"}]).choices


def test_oversized_body_is_413(server, client):
    huge = "x" * (1024 * 1024 + 10)
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="mock-gpt", messages=[{"role": "user", "content": huge}])
    assert caught.value.status_code == 413
    assert caught.value.body["code"] == "request_too_large"


def test_upstream_errors_pass_through_with_their_status_class(client, server, upstream):
    upstream.fail_with = (429, {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"})
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    assert caught.value.response.headers.get("retry-after") == "1"
    record = _ledger_record(server, caught.value.response.headers["x-request-id"])
    assert record.outcome == "failed" and record.cost == 0 and record.attempts >= 1
    upstream.fail_with = (400, {"message": "This model's maximum context length is 128000 tokens.",
                                "type": "invalid_request_error", "code": "context_length_exceeded"})
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    assert caught.value.body["code"] == "context_length_exceeded"
    upstream.fail_with = (500, {"message": "boom", "type": "server_error", "code": None})
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])


def test_upstream_key_never_reaches_the_client_or_the_ledger(client, server, upstream):
    upstream.fail_with = (401, {"message": f"Incorrect API key provided: {upstream.api_key}",
                                "type": "invalid_request_error", "code": "invalid_api_key"})
    with pytest.raises(openai.AuthenticationError) as caught:
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    assert upstream.api_key not in caught.value.response.text
    app = StoreLocation.from_url(server.ledger_url).open()
    try:
        stored = b"".join(n.state for n in app.recorder.select_notifications(start=1, limit=1000))
    finally:
        app.close()
    assert upstream.api_key.encode() not in stored and MASTER_KEY.encode() not in stored


def test_health_routes(server):
    assert httpx.get(server.base_url + "/health/liveliness").status_code == 200
    readiness = httpx.get(server.base_url + "/health/readiness")
    assert readiness.status_code == 200 and readiness.json()["db"] == "connected"


def test_client_leaving_mid_stream_still_leaves_a_record_of_what_was_consumed(server):
    headers = {"Authorization": f"Bearer {MASTER_KEY}"}
    body = {"model": "slow-mock", "stream": True, "messages": [{"role": "user", "content": "talk"}]}
    with httpx.stream("POST", server.base_url + "/v1/chat/completions", json=body, headers=headers) as response:
        request_id = response.headers["x-request-id"]
        lines = response.iter_lines()
        received = [line for line, _ in zip(lines, range(3)) if line.startswith("data:")]
    assert received  # then the client hangs up, 2 of 40 chunks in
    deadline = time.monotonic() + 10
    while _events(server, request_id)[-1:] != ["Interrupted"] and time.monotonic() < deadline:
        time.sleep(0.05)
    record = _ledger_record(server, request_id)
    assert record.outcome == "interrupted"
    interrupted = _last_event(server, request_id)
    assert interrupted.usage_estimated is True
    assert 0 < interrupted.usage["completion_tokens"] < 200  # what was streamed, not the whole reply
    assert interrupted.cost > 0


def _last_event(server: LiveServer, request_id: str):
    app = StoreLocation.from_url(server.ledger_url).open()
    try:
        return list(app.events.get(uuid.UUID(request_id)))[-1]
    finally:
        app.close()
