"""A property-based fuzz of the edge: requests thrown at every route of `moneta serve`, which
must never answer a 5xx, must answer every 4xx in the route's error shape, must log no
traceback, and must still serve (and project spend) at the end.

The requests are structure-aware: a valid request of the route, mutated one to three times at
random paths (a value replaced by one of the wrong type, a NUL, a huge number, deep nesting;
a member removed or added; a container emptied), sometimes not JSON at all; with random
headers, credentials and query strings. Reproducible: derandomized, a fixed number of cases
per route (EXAMPLES), no example database.
"""
from __future__ import annotations

import copy
import json
import urllib.parse
from dataclasses import dataclass
from typing import Any, Iterator

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.edge_server import HEADERS, MASTER_KEY, edge_server, shape_problems, spend_log_rows

EXAMPLES = 200
WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
CHAT = {
    "model": "mock-chat",
    "messages": [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": [{"type": "text", "text": "Look"},
                                     {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR",
                                                                         "detail": "low"}}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
        {"role": "user", "content": "And tomorrow?", "name": "ann"},
    ],
    "tools": [{"type": "function",
               "function": {"name": "weather", "description": "The weather", "parameters": WEATHER}}],
    "tool_choice": {"type": "function", "function": {"name": "weather"}},
    "response_format": {"type": "json_schema", "json_schema": {"name": "answer", "schema": WEATHER}},
    "temperature": 0.5, "top_p": 1, "max_tokens": 50, "n": 1, "stop": ["END"], "seed": 7, "user": "fuzzer",
    "metadata": {"tag": "fuzz"}, "stream": True, "stream_options": {"include_usage": True},
}
MESSAGES = {
    "model": "mock-chat", "max_tokens": 64, "system": [{"type": "text", "text": "Be terse."}],
    "metadata": {"user_id": "fuzzer"}, "temperature": 0.5, "top_p": 1, "top_k": 5, "stop_sequences": ["END"],
    "thinking": {"type": "enabled", "budget_tokens": 2048}, "stream": False,
    "tools": [{"name": "weather", "description": "The weather", "input_schema": WEATHER}],
    "tool_choice": {"type": "tool", "name": "weather"},
    "messages": [
        {"role": "user", "content": [{"type": "text", "text": "Look"}, {"type": "image", "source": {
            "type": "base64", "media_type": "image/png", "data": "iVBOR"}}]},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "hm", "signature": "sig"},
                                          {"type": "tool_use", "id": "toolu_1", "name": "weather",
                                           "input": {"city": "Paris"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                                      "content": [{"type": "text", "text": "18C"}]}]},
    ],
}
COUNT_TOKENS = {k: v for k, v in MESSAGES.items() if k not in ("max_tokens", "stream")}
COMPLETION = {"model": "mock-chat", "prompt": ["Once upon", "a time"], "max_tokens": 16, "temperature": 0.3,
              "stop": ["\n"], "user": "fuzzer", "echo": False, "best_of": 1}
EMBEDDING = {"model": "mock-embed", "input": ["hello", "world"], "dimensions": 8, "encoding_format": "float",
             "user": "fuzzer"}
TOKEN_COUNT = {"model": "mock-chat", "messages": CHAT["messages"]}
TRANSCRIPTION = {"model": "mock-whisper", "language": "en", "prompt": "A talk", "response_format": "json",
                 "temperature": "0.2", "timestamp_granularities[]": "word"}
SPEND_LOGS = {"start_date": "2024-01-01", "end_date": "2030-12-31", "api_key": MASTER_KEY, "user_id": "fuzzer",
              "model": "mock-chat", "request_id": "00000000-0000-0000-0000-000000000000", "page": "1",
              "page_size": "10"}
SPEND_REPORT = {"start_date": "2024-01-01", "end_date": "2030-12-31T23:59:59+02:00", "group_by": "model"}


@dataclass(frozen=True)
class Route:
    paths: tuple[str, ...]
    seeds: tuple[dict[str, Any], ...]  # valid requests
    kind: str = "json"  # or "form" (multipart fields), "query" (query parameters)


ROUTES = {
    "chat": Route(("/v1/chat/completions", "/chat/completions"), (CHAT,)),
    "completions": Route(("/v1/completions", "/completions"), (COMPLETION,)),
    "embeddings": Route(("/v1/embeddings", "/embeddings"), (EMBEDDING,)),
    "transcriptions": Route(("/v1/audio/transcriptions", "/audio/transcriptions"), (TRANSCRIPTION,), "form"),
    "messages": Route(("/v1/messages",), (MESSAGES,)),
    "count_tokens": Route(("/v1/messages/count_tokens",), (COUNT_TOKENS,)),
    "token_counter": Route(("/utils/token_counter",), (TOKEN_COUNT, {"model": "mock-chat", "prompt": ["Once", "up"]})),
    "spend_logs": Route(("/spend/logs", "/spend/logs/v2"), (SPEND_LOGS,), "query"),
    "spend_report": Route(("/global/spend/report",), (SPEND_REPORT,), "query"),
}


# -- values that do not belong -------------------------------------------------------------------

@dataclass(frozen=True)
class Deep:
    """A list nested `depth` deep, written into the JSON text as brackets (too deep for json.dumps)."""

    depth: int


HUGE = [2**63, 2**64, -(2**63) - 1, 10**30, 1e308, -1e308, 1e-308, -0.0]
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(HUGE), st.text(max_size=12), st.text(max_size=6).map(lambda text: text + "\x00"),
    st.sampled_from(["", "\x00", "\ud800", "null", "1", "user", "text", "function", "9999-12-31", "%00"]),
)
NASTY = st.one_of(
    SCALARS,
    st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                                       max_size=3), max_leaves=6),
    st.builds(Deep, st.integers(60, 1100)),
)
TEXT = st.one_of(st.text(max_size=16), st.text(max_size=6).map(lambda text: text + "\x00"),
                 st.sampled_from(["", "-1", "0", "99999999999999999999", "1e400", "nan", "2024-02-30", "team"]))


def _paths(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield path
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        yield from _paths(child, (*path, key))


def _at(body: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        body = body[step]
    return body


@st.composite
def _mutation(draw: st.DrawFn, body: Any, values: st.SearchStrategy[Any]) -> Any:
    """The body with one change at a random path (the body itself, when the path is empty)."""
    path = draw(st.sampled_from(list(_paths(body))))
    target = _at(body, path)
    kind = draw(st.sampled_from(["replace", "replace", "remove", "add", "empty"]))
    if kind == "replace":
        return _put(body, path, draw(values))
    if kind == "remove" and path:
        del _at(body, path[:-1])[path[-1]]
    elif kind == "add" and isinstance(target, dict):
        target[draw(st.text(max_size=8))] = draw(values)
    elif kind == "add" and isinstance(target, list):
        target.append(draw(values))
    elif kind == "empty" and isinstance(target, (dict, list, str)):
        return _put(body, path, type(target)())
    return body


def _put(body: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    _at(body, path[:-1])[path[-1]] = value
    return body


@st.composite
def mutated(draw: st.DrawFn, route: Route, values: st.SearchStrategy[Any]) -> Any:
    body = copy.deepcopy(draw(st.sampled_from(route.seeds)))
    for _ in range(draw(st.integers(1, 3))):
        if not isinstance(body, (dict, list)):
            break
        body = draw(_mutation(body, values))
    return body


def _json_text(body: Any) -> bytes:
    deep: dict[str, int] = {}

    def placeholder(value: Deep) -> str:
        token = f"__deep_{len(deep)}__"
        deep[token] = value.depth
        return token

    text = json.dumps(body, default=placeholder)
    for token, depth in deep.items():
        text = text.replace(f'"{token}"', "[" * depth + "]" * depth)
    return text.encode()


NOT_JSON = st.one_of(st.binary(max_size=40), st.sampled_from([b"", b"null", b"[]", b'"x"', b"{" * 2000,
                                                              b'{"model": "mock-chat", "messages": [', b"\xff\xfe{}"]))


@st.composite
def json_content(draw: st.DrawFn, route: Route) -> bytes:
    if draw(st.integers(0, 9)) == 0:
        raw = _json_text(route.seeds[0])
        return draw(NOT_JSON | st.integers(0, len(raw) - 1).map(lambda cut: raw[:cut]))
    return _json_text(draw(mutated(route, NASTY)))


# -- requests ---------------------------------------------------------------------------------

CREDENTIALS = st.sampled_from([HEADERS] * 6 + [{"x-api-key": MASTER_KEY}, {"Authorization": "Bearer sk-wrong"}, {}])
HEADER_NAMES = st.sampled_from(["content-type", "accept", "x-request-id", "user-agent", "anthropic-version",
                                "openai-organization", "x-fuzz", "content-language"])
HEADER_VALUES = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7e), max_size=40).map(str.strip)
QUERY_PIECES = st.one_of(
    st.tuples(st.text(max_size=8), TEXT).map(lambda kv: urllib.parse.urlencode([kv])),
    st.sampled_from(["%00", "%", "a=%ff", "page=99999999999999999999", "=&=", "user_id=%00&user_id=x"]),
)


@st.composite
def extras(draw: st.DrawFn) -> tuple[dict[str, str], str]:
    headers = {**draw(CREDENTIALS), **draw(st.dictionaries(HEADER_NAMES, HEADER_VALUES, max_size=2))}
    return headers, "&".join(draw(st.lists(QUERY_PIECES, max_size=2)))


@st.composite
def form_request(draw: st.DrawFn, route: Route) -> dict[str, Any]:
    fields = draw(mutated(route, TEXT))
    fields = fields if isinstance(fields, dict) else {}
    upload = draw(st.sampled_from(["file", "file", "none", "text"]))
    name = draw(st.sampled_from(["a.wav", "", "a\x00.wav", "../../etc/passwd", "ü.mp3"]))
    content = draw(st.sampled_from([b"RIFF0000", b"", b"\x00" * 64]))
    if upload == "text":
        fields["file"] = name
    return {"data": fields, "files": {"file": (name, content, "audio/wav")} if upload == "file" else None}


def _request(route: Route) -> st.SearchStrategy[Any]:
    """JSON text, a form's fields and file, or query parameters."""
    if route.kind == "form":
        return form_request(route)
    if route.kind == "query":
        return mutated(route, TEXT).map(lambda params: params if isinstance(params, dict) else {})
    return json_content(route)


def _send(client: httpx.Client, route: Route, path: str, request: Any, headers: dict[str, str],
          query: str) -> httpx.Response:
    if route.kind == "query":
        query = "&".join(part for part in (urllib.parse.urlencode(request), query) if part)
        return client.get(f"{path}?{query}", headers=headers)
    url = f"{path}?{query}" if query else path
    if route.kind == "form":
        return client.post(url, data=request["data"], files=request["files"], headers=headers)
    return client.post(url, content=request, headers={"content-type": "application/json", **headers})


# -- the test ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with edge_server(tmp_path_factory.mktemp("fuzz")) as running:
        yield running


@pytest.fixture(scope="module")
def client(server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=30) as session:
        yield session


@pytest.mark.parametrize("name", ROUTES)
def test_the_seeds_are_valid_requests(client, name):
    """The fuzz starts from valid requests: each seed alone is answered with a 200."""
    route = ROUTES[name]
    for seed in route.seeds:
        request: Any = seed
        if route.kind == "form":
            request = {"data": seed, "files": {"file": ("a.wav", b"RIFF0000", "audio/wav")}}
        elif route.kind == "json":
            request = _json_text(seed)
        for path in route.paths:
            response = _send(client, route, path, request, HEADERS, "")
            assert response.status_code == 200, (path, response.text)


@pytest.mark.parametrize("name", ROUTES)
def test_no_request_gets_a_5xx_or_an_error_out_of_shape(client, name):
    route = ROUTES[name]

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(path=st.sampled_from(route.paths), request=_request(route), extra=extras())
    def fuzz(path: str, request: Any, extra: tuple[dict[str, str], str]) -> None:
        response = _send(client, route, path, request, *extra)
        assert not shape_problems(path, response), (path, request, extra, shape_problems(path, response))

    fuzz()


def test_the_server_survived_and_still_projects_spend(server, client):
    """Runs after the fuzz (pytest keeps the file's order)."""
    assert client.get("/health/liveliness").status_code == 200
    answer = client.post("/v1/chat/completions", headers=HEADERS,
                         json={"model": "mock-chat", "messages": [{"role": "user", "content": "still there?"}]})
    assert answer.status_code == 200
    assert spend_log_rows(server, answer.headers["x-request-id"]), "the spend projection stalled"
    assert "Traceback" not in server.log(), server.log()[-3000:]
