"""Response caching end to end: the real proxy on loopback, a fake OpenAI that records what reaches
it, and the official `openai` SDK as the client."""
from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
import uuid
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest

from moneta.infrastructure.config_loader import ConfigError, parse_config
from tests import services
from tests.fake_openai import FakeOpenAI
from tests.live_server import LiveServer
from tests.tcp_proxy import TcpProxy

MASTER_KEY = "sk-master-cache-0123456789"
CACHE_KEY_HEADER = "x-litellm-cache-key"


@pytest.fixture(scope="module")
def upstream():
    fake = FakeOpenAI().start()
    yield fake
    fake.stop()


def _config(upstream: FakeOpenAI, cache_params: dict[str, Any] | None = None) -> dict[str, Any]:
    def deployment(name: str, model: str) -> dict[str, Any]:
        return {"model_name": name, "litellm_params": {
            "model": model, "api_base": upstream.base_url, "api_key": "os.environ/UPSTREAM_KEY"}}

    litellm: dict[str, Any] = {"cache": True}
    if cache_params is not None:
        litellm["cache_params"] = cache_params
    return {
        "model_list": [deployment("gpt-4o-mini", "openai/gpt-4o-mini"),
                       deployment("gpt-4o-mini-b", "openai/gpt-4o-mini"),
                       deployment("embedder", "openai/text-embedding-3-small"),
                       deployment("legacy", "openai/gpt-3.5-turbo-instruct")],
        "general_settings": {"master_key": MASTER_KEY},
        "litellm_settings": litellm,
    }


@pytest.fixture(scope="module")
def server(upstream, tmp_path_factory):
    """One server with the in-process cache for the module; each test asks its own questions."""
    workdir = tmp_path_factory.mktemp("local-cache")
    env = {"UPSTREAM_KEY": upstream.api_key, "DATABASE_URL": f"sqlite:///{workdir / 'ledger.db'}"}
    with LiveServer(_config(upstream), workdir, env=env) as live:
        yield live


def _client(server: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key=MASTER_KEY, max_retries=0)


def _question() -> list[dict[str, str]]:
    return [{"role": "user", "content": f"What is {uuid.uuid4().hex}?"}]


def _calls(upstream: FakeOpenAI, path: str = "/v1/chat/completions") -> int:
    return sum(1 for recorded in upstream.requests if recorded.path == path)


def _chat(client: openai.OpenAI, messages: list[dict[str, str]], **kwargs: Any) -> Any:
    return client.chat.completions.with_raw_response.create(model=kwargs.pop("model", "gpt-4o-mini"),
                                                            messages=messages, **kwargs)


def _spend_log(server: LiveServer, request_id: str, timeout: float = 10.0) -> dict[str, Any]:
    """The request's spend-log row, once the read side has it (it follows the ledger within moments)."""
    deadline = time.monotonic() + timeout
    while True:
        rows = httpx.get(server.base_url + "/spend/logs", params={"request_id": request_id},
                         headers={"Authorization": f"Bearer {MASTER_KEY}"}).json()
        if rows or time.monotonic() > deadline:
            assert rows, f"request {request_id} never reached the spend log"
            return rows[0]
        time.sleep(0.1)


def test_a_repeated_chat_reaches_the_upstream_once_and_the_hit_is_recorded_at_zero_cost(server, upstream):
    client, question = _client(server), _question()
    before = _calls(upstream)

    first = _chat(client, question)
    hit = _chat(client, question)

    assert _calls(upstream) == before + 1
    assert hit.parse().model_dump() == first.parse().model_dump()  # the cached id too, as LiteLLM answers
    assert CACHE_KEY_HEADER not in first.headers
    key = hit.headers[CACHE_KEY_HEADER]
    assert len(key) == 64 and question[0]["content"] not in key  # the key's hash, never the body
    assert "cache" not in upstream.requests[-1].body

    filled = _spend_log(server, first.headers["x-request-id"])
    served = _spend_log(server, hit.headers["x-request-id"])
    assert filled["cache_hit"] is False and Decimal(filled["spend_exact"]) > 0
    assert served["cache_hit"] is True and served["status"] == "success"
    assert Decimal(served["spend_exact"]) == 0 and served["spend"] == 0
    assert served["metadata"]["filled_by"] == first.headers["x-request-id"]
    assert served["metadata"]["cache_key"] == key
    assert served["prompt_tokens"] == upstream.usage["prompt_tokens"]  # the cached answer's usage
    assert served["model_id"] is None  # no deployment served it


def test_the_usage_report_counts_hits_apart_from_provider_usage(server, upstream):
    client, question = _client(server), _question()
    first = _chat(client, question)
    hit = _chat(client, question)
    _spend_log(server, first.headers["x-request-id"])
    _spend_log(server, hit.headers["x-request-id"])

    report = httpx.get(server.base_url + "/global/spend/report", params={"group_by": "model"},
                       headers={"Authorization": f"Bearer {MASTER_KEY}"}).json()

    (entry,) = [m for day in report for m in day["models"] if m["model"] == "gpt-4o-mini"]
    assert entry["cache_hits"] >= 1
    assert entry["requests"] - entry["cache_hits"] >= 1
    # tokens count provider usage only: each call that reached the upstream, never a hit
    assert entry["prompt_tokens"] == (entry["requests"] - entry["cache_hits"]) * upstream.usage["prompt_tokens"]


def test_no_cache_reads_past_the_cache_and_still_stores(server, upstream):
    client, question = _client(server), _question()
    before = _calls(upstream)
    _chat(client, question)
    _chat(client, question, extra_body={"cache": {"no-cache": True}})
    assert _calls(upstream) == before + 2
    assert "cache" not in upstream.requests[-1].body  # the gateway's own field, never sent on
    assert CACHE_KEY_HEADER in _chat(client, question).headers
    assert _calls(upstream) == before + 2


def test_no_store_keeps_nothing(server, upstream):
    client, question = _client(server), _question()
    before = _calls(upstream)
    _chat(client, question, extra_body={"cache": {"no-store": True}})
    second = _chat(client, question)
    assert _calls(upstream) == before + 2 and CACHE_KEY_HEADER not in second.headers


def test_a_request_ttl_expires_its_entry(server, upstream):
    client, question = _client(server), _question()
    before = _calls(upstream)
    _chat(client, question, extra_body={"cache": {"ttl": 1}})
    assert CACHE_KEY_HEADER in _chat(client, question).headers
    time.sleep(1.2)
    assert CACHE_KEY_HEADER not in _chat(client, question).headers
    assert _calls(upstream) == before + 2


def test_s_maxage_accepts_only_a_young_enough_entry(server, upstream):
    client, question = _client(server), _question()
    before = _calls(upstream)
    _chat(client, question)
    time.sleep(0.2)
    assert CACHE_KEY_HEADER not in _chat(client, question, extra_body={"cache": {"s-maxage": 0.1}}).headers
    assert CACHE_KEY_HEADER in _chat(client, question, extra_body={"cache": {"s-maxage": 60}}).headers
    assert _calls(upstream) == before + 2


def test_bad_cache_controls_are_a_400_naming_them(server):
    with pytest.raises(openai.BadRequestError, match="cache.ttl"):
        _client(server).chat.completions.create(model="gpt-4o-mini", messages=_question(),
                                                extra_body={"cache": {"ttl": "soon"}})


def _stream_text(client: openai.OpenAI, question: list[dict[str, str]]) -> tuple[str, list[Any]]:
    chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=question, stream=True,
                                                 stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return text, chunks


def test_a_stream_fills_the_cache_and_a_streamed_hit_streams(server, upstream):
    client, question = _client(server), _question()
    before = _calls(upstream)

    text, _ = _stream_text(client, question)
    cached_text, chunks = _stream_text(client, question)

    assert _calls(upstream) == before + 1
    assert cached_text == text == upstream.reply
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == upstream.usage["prompt_tokens"]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    plain = _chat(client, question)  # the assembled answer serves a call that does not stream, too
    assert plain.parse().choices[0].message.content == text and CACHE_KEY_HEADER in plain.headers

    with httpx.stream("POST", server.base_url + "/v1/chat/completions",
                      headers={"Authorization": f"Bearer {MASTER_KEY}"},
                      json={"model": "gpt-4o-mini", "messages": question, "stream": True}) as raw:
        assert raw.headers["content-type"].startswith("text/event-stream")
        assert CACHE_KEY_HEADER in raw.headers
        lines = [line for line in raw.iter_lines() if line]
    assert lines[-1] == "data: [DONE]" and '"usage"' not in "".join(lines)  # no include_usage: no usage chunk
    assert _calls(upstream) == before + 1
    row = _spend_log(server, raw.headers["x-request-id"])
    assert row["cache_hit"] is True and row["spend"] == 0


def test_embeddings_and_completions_are_cached(server, upstream):
    client, text = _client(server), f"embed {uuid.uuid4().hex}"
    before = _calls(upstream, "/v1/embeddings")
    first = client.embeddings.create(model="embedder", input=text)
    hit = client.embeddings.with_raw_response.create(model="embedder", input=text)
    assert _calls(upstream, "/v1/embeddings") == before + 1
    assert hit.parse().data[0].embedding == first.data[0].embedding and CACHE_KEY_HEADER in hit.headers

    prompt, before = f"Say {uuid.uuid4().hex}", _calls(upstream, "/v1/completions")
    first_text = client.completions.create(model="legacy", prompt=prompt).choices[0].text
    assert client.completions.create(model="legacy", prompt=prompt).choices[0].text == first_text
    assert _calls(upstream, "/v1/completions") == before + 1


def test_model_groups_and_sampling_parameters_never_share_an_entry(server, upstream):
    client, question = _client(server), _question()
    before = _calls(upstream)
    _chat(client, question, model="gpt-4o-mini")
    assert CACHE_KEY_HEADER not in _chat(client, question, model="gpt-4o-mini-b").headers
    assert CACHE_KEY_HEADER not in _chat(client, question, temperature=0.5).headers
    assert CACHE_KEY_HEADER not in _chat(client, question, max_tokens=5).headers
    assert _calls(upstream) == before + 4
    # fields that do not change the answer are not part of the key
    assert CACHE_KEY_HEADER in _chat(client, question, user="someone-else", metadata={"a": "b"}).headers


def test_cache_ping_answers_for_the_admin(server):
    answer = httpx.get(server.base_url + "/cache/ping", headers={"Authorization": f"Bearer {MASTER_KEY}"})
    assert answer.status_code == 200
    assert answer.json()["status"] == "healthy" and answer.json()["cache_type"] == "local"
    assert httpx.get(server.base_url + "/cache/ping").status_code == 401


def test_cache_ping_without_a_cache_is_a_503_as_in_litellm(upstream, tmp_path):
    config = _config(upstream)
    config["litellm_settings"] = {}
    env = {"UPSTREAM_KEY": upstream.api_key, "DATABASE_URL": f"sqlite:///{tmp_path / 'ledger.db'}"}
    with LiveServer(config, tmp_path, env=env) as live:
        answer = httpx.get(live.base_url + "/cache/ping", headers={"Authorization": f"Bearer {MASTER_KEY}"})
        question, before = _question(), _calls(upstream)
        _chat(_client(live), question, extra_body={"cache": {"ttl": 5}})
        second = _chat(_client(live), question)
    assert answer.status_code == 503 and "Cache not initialized" in answer.json()["error"]["message"]
    assert _calls(upstream) == before + 2 and CACHE_KEY_HEADER not in second.headers
    assert "cache" not in upstream.requests[-2].body  # not sent on with caching off either


# -- Redis ---------------------------------------------------------------------------------------


@pytest.mark.redis
@pytest.mark.postgres
def test_two_servers_share_the_redis_cache(upstream, redis_url, postgres_url, tmp_path):
    env = {"UPSTREAM_KEY": upstream.api_key, "DATABASE_URL": postgres_url}
    config = _config(upstream, {"type": "redis", "namespace": "moneta-test"})
    config["router_settings"] = {"redis_url": redis_url}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with LiveServer(config, tmp_path / "a", env=env) as first, LiveServer(config, tmp_path / "b", env=env) as second:
        question, before = _question(), _calls(upstream)
        filled = _chat(_client(first), question)
        hit = _chat(_client(second), question)
        assert _calls(upstream) == before + 1
        assert hit.parse().model_dump() == filled.parse().model_dump()
        assert hit.headers[CACHE_KEY_HEADER].startswith("moneta-test:")
        row = _spend_log(first, hit.headers["x-request-id"])
        assert row["cache_hit"] is True and row["metadata"]["filled_by"] == filled.headers["x-request-id"]
        ping = httpx.get(second.base_url + "/cache/ping", headers={"Authorization": f"Bearer {MASTER_KEY}"}).json()
        assert ping["cache_type"] == "redis" and ping["ping_response"] is True


@pytest.mark.redis
def test_a_cut_redis_is_a_miss_never_an_error(upstream, redis_url, tmp_path):
    with TcpProxy.in_front_of(redis_url) as proxy:
        env = {"UPSTREAM_KEY": upstream.api_key, "DATABASE_URL": f"sqlite:///{tmp_path / 'ledger.db'}"}
        host, port = "127.0.0.1", proxy.port
        config = _config(upstream, {"type": "redis", "host": host, "port": port})
        with LiveServer(config, tmp_path, env=env) as live:
            client, question = _client(live), _question()
            _chat(client, question)
            assert CACHE_KEY_HEADER in _chat(client, question).headers

            proxy.cut()
            before = _calls(upstream)
            started = time.monotonic()
            answers = [_chat(client, question) for _ in range(3)]
            assert time.monotonic() - started < 3
            assert all(a.parse().choices[0].message.content == upstream.reply for a in answers)
            assert _calls(upstream) == before + 3
            ping = httpx.get(live.base_url + "/cache/ping", headers={"Authorization": f"Bearer {MASTER_KEY}"})
            assert ping.status_code == 503
            assert live.log().count("the response cache's Redis is unreachable") == 1

            proxy.restore()
            deadline = time.monotonic() + 10
            while CACHE_KEY_HEADER not in _chat(client, question).headers:
                assert time.monotonic() < deadline, "the cache never came back with Redis"
                time.sleep(0.5)


# -- the config ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("params", "message"), [
    ({"type": "s3", "s3_bucket_name": "b"}, r"cache_params.s3_bucket_name is not supported"),
    ({"type": "qdrant-semantic"}, r"cache_params.type: 'qdrant-semantic' is not one of local, redis"),
    ({"type": "redis"}, r"cache_params.type redis needs"),
    ({"ttl": -1}, r"cache_params.ttl must be positive"),
    ({"supported_call_types": ["acompletion", "summon"]}, r"'summon' is not one of"),
    ({"mode": "default_off"}, r"cache_params.mode"),
])
def test_a_cache_moneta_cannot_provide_stops_start_up(params, message):
    with pytest.raises(ConfigError, match=message):
        parse_config({"litellm_settings": {"cache": True, "cache_params": params}}, {})


def test_cache_params_as_litellm_writes_them():
    config = parse_config({"litellm_settings": {"cache": "true", "cache_params": {
        "type": "redis", "host": "cache.internal", "port": 6380, "password": "os.environ/CACHE_PW", "ttl": 60,
        "namespace": "prod", "supported_call_types": ["acompletion", "aembedding", "atranscription"]}}},
        {"CACHE_PW": "pw-secret"})
    cache = config.cache
    assert (cache.kind, cache.ttl_s, cache.namespace) == ("redis", 60, "prod")
    assert cache.call_types == {"chat", "embedding"}
    assert cache.redis_url == "redis://:pw-secret@cache.internal:6380/0" and "pw-secret" in config.secrets()
    assert "litellm_settings.cache_params.supported_call_types[atranscription]" in config.notices[0]
    assert parse_config({"litellm_settings": {"cache": False, "cache_params": {"type": "local"}}}, {}).cache is None
    shared = parse_config({"litellm_settings": {"cache": True, "cache_params": {"type": "redis"}},
                           "router_settings": {"redis_url": "redis://r:6379/0"}}, {}).cache
    assert shared.redis_url == "redis://r:6379/0" and shared.ttl_s is None


# -- streams as answers and answers as streams ---------------------------------------------------


def test_a_stream_with_tool_calls_assembles_and_plays_back():
    from moneta.application.stream_assembly import StreamAssembler, as_chunks
    from moneta.domain.usage import Usage

    head = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    call = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}
    chunks = [
        {**head, "choices": [{"index": 0, "delta": {"role": "assistant", "tool_calls": [call]}}]},
        {**head, "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '{"city"'}}]}}]},
        {**head, "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": ': "Oslo"}'}}]}}]},
        {**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
        {**head, "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}},
    ]
    assembler = StreamAssembler()
    for chunk in chunks:
        assembler.add(chunk)
    answer = assembler.response(Usage(prompt_tokens=3, completion_tokens=2))

    (choice,) = answer["choices"]
    assert answer["id"] == "chatcmpl-1" and answer["object"] == "chat.completion" and choice["finish_reason"] == "tool_calls"
    assert choice["message"]["tool_calls"] == [{"id": "call_1", "type": "function", "function": {
        "name": "get_weather", "arguments": '{"city": "Oslo"}'}}]
    played = list(as_chunks(answer, with_usage=True))
    again = StreamAssembler()
    for chunk in played:
        again.add(chunk)
    assert again.response(Usage()) == answer
    assert [c["object"] for c in played] == ["chat.completion.chunk"] * 3 and played[-1]["usage"]["total_tokens"] == 5


# -- the read side -------------------------------------------------------------------------------


def _cache_hit(world, filled_by: str):
    from moneta.domain.usage import Usage

    record = world.admit()
    record.serve_from_cache(cache_key="k", filled_by=filled_by, usage=Usage(prompt_tokens=10, completion_tokens=5),
                            latency_ms=0.2, finish_reason="stop")
    world.ledger.record_blocking(record, timeout=10)
    return record


def test_a_hit_spends_nothing_and_leaves_no_call_in_flight_even_in_a_report_made_before_hits(world):
    from moneta.projections.in_flight import InFlightQueries

    with world.store.transaction() as cur:  # a usage report made before cache hits were counted
        cur.execute("DROP TABLE usage_daily")
        cur.execute(world.store.ddl("""CREATE TABLE usage_daily (day TEXT NOT NULL, api_key TEXT NOT NULL,
            end_user TEXT NOT NULL, model TEXT NOT NULL, requests BIGINT NOT NULL, successful_requests BIGINT NOT NULL,
            failed_requests BIGINT NOT NULL, interrupted_requests BIGINT NOT NULL, denied_requests BIGINT NOT NULL,
            prompt_tokens BIGINT NOT NULL, completion_tokens BIGINT NOT NULL, total_tokens BIGINT NOT NULL,
            spend {money} NOT NULL, PRIMARY KEY (day, api_key, end_user, model))"""))
    world.runner.create_tables()
    filled = world.completed(Decimal("0.5"))
    hit = _cache_hit(world, str(filled.id))
    world.runner.catch_up()

    row = world.queries.spend_logs(request_id=str(hit.id)).rows[0]
    assert (row["cache_hit"], row["spend"], row["status"], row["total_tokens"]) == (True, 0, "success", 15)
    assert world.queries.total_spend("api_key", row["api_key"]) == Decimal("0.5")
    (day,) = world.queries.spend_report(group_by="model")
    (entry,) = day["models"]
    assert (entry["requests"], entry["successful_requests"], entry["cache_hits"]) == (2, 2, 1)
    assert entry["total_tokens"] == 15 and day["total_spend"] == Decimal("0.5")  # the provider's, once
    assert InFlightQueries(world.store).admitted_before(datetime.now(UTC) + timedelta(hours=1)) == []
