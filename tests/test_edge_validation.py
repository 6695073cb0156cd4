"""Validation at the edge, one test per defect a fuzzer found: each was a 500 with internal text,
or (a NUL) a request the Postgres projection could never store. Against the real server."""
from __future__ import annotations

import logging
import re
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

import moneta
from moneta.api.errors import install_error_handlers
from moneta.application import validation
from moneta.application.anthropic_messages import validate_request
from moneta.domain.errors import BadRequestError
from tests.edge_server import HEADERS, edge_server, shape_problems, spend_log_rows

USER = {"role": "user", "content": "hi"}
CHAT = {"model": "mock-chat", "messages": [USER]}
MESSAGES = {"model": "mock-chat", "max_tokens": 16, "messages": [USER]}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with edge_server(tmp_path_factory.mktemp("edge")) as running:
        yield running


def _post(server, path: str, body: Any) -> httpx.Response:
    response = httpx.post(server.base_url + path, json=body, headers=HEADERS)
    assert not shape_problems(path, response), shape_problems(path, response)
    return response


def _openai_400(server, path: str, body: Any, param: str) -> dict[str, Any]:
    response = _post(server, path, body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["type"], error["param"]) == ("invalid_request_error", param), error
    return error


def _anthropic_400(server, path: str, body: Any, field: str) -> str:
    response = _post(server, path, body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"].startswith(f"{field}: "), error
    return error["message"]


@pytest.mark.parametrize("role", [["user"], {"role": "user"}])
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/chat/completions"])
def test_a_role_that_is_not_a_string_is_a_400(server, path, role):
    error = _openai_400(server, path, {**CHAT, "messages": [{"role": role, "content": "x"}]}, "messages[0].role")
    assert error["code"] == "invalid_value" and "'user'" in error["message"]


@pytest.mark.parametrize("text", [5, None])
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/utils/token_counter"])
def test_a_text_part_whose_text_is_not_a_string_is_a_400(server, path, text):
    message = {"role": "user", "content": [{"type": "text", "text": "ok"}, {"type": "text", "text": text}]}
    error = _openai_400(server, path, {**CHAT, "messages": [message]}, "messages[0].content[1].text")
    assert error["code"] == "invalid_type" and "expected a string" in error["message"]


@pytest.mark.parametrize("dimensions", ["abc", -1, 0, 10**9])
def test_embedding_dimensions_must_be_a_sensible_integer(server, dimensions):
    _openai_400(server, "/v1/embeddings", {"model": "mock-embed", "input": "x", "dimensions": dimensions},
                "dimensions")
    assert _post(server, "/embeddings", {"model": "mock-embed", "input": "x", "dimensions": 4}).status_code == 200


@pytest.mark.parametrize("path", ["/v1/messages", "/v1/messages/count_tokens"])
@pytest.mark.parametrize("change, field", [
    ({"metadata": "user-1"}, "metadata"),
    ({"system": 5}, "system"),
    ({"tools": 5}, "tools"),
    ({"tools": [5]}, "tools.0"),
    ({"thinking": {"type": "enabled", "budget_tokens": "lots"}}, "thinking.budget_tokens"),
    ({"messages": [{"role": "user", "content": [{"type": "image", "source": "x"}]}]}, "messages.0.content.0.source"),
])
def test_messages_fields_of_the_wrong_type_are_anthropic_400s(server, path, change, field):
    _anthropic_400(server, path, {**MESSAGES, **change}, field)


def test_messages_keep_their_wording_for_max_tokens_and_messages(server):
    without = {k: v for k, v in MESSAGES.items() if k != "max_tokens"}
    assert _anthropic_400(server, "/v1/messages", without, "max_tokens") == \
        "max_tokens: must be an integer of at least 1"
    assert _anthropic_400(server, "/v1/messages", {**MESSAGES, "messages": []}, "messages") == \
        "messages: must be a non-empty array"


@pytest.mark.parametrize("query, param", [
    ("user_id=%00", "user_id"),
    ("model=a%00b", "model"),
    ("api_key=x&start_date=2024-01-01%00", "start_date"),
    ("page=99999999999999999999", "page"),
    ("page_size=0", "page_size"),
    ("start_date=9999-12-31", "start_date"),
    ("end_date=last+week", "end_date"),
])
@pytest.mark.parametrize("path", ["/spend/logs", "/spend/logs/v2"])
def test_spend_log_filters_are_checked(server, path, query, param):
    response = httpx.get(f"{server.base_url}{path}?{query}", headers=HEADERS)
    assert response.status_code == 400 and not shape_problems(path, response), response.text
    assert response.json()["error"]["param"] == param


@pytest.mark.parametrize("query", ["group_by=planet", "start_date=%00", "end_date=2024-13-01"])
def test_spend_report_parameters_are_checked(server, query):
    response = httpx.get(f"{server.base_url}/global/spend/report?{query}", headers=HEADERS)
    assert response.status_code == 400 and not shape_problems("/global/spend/report", response), response.text


@pytest.mark.parametrize("body, param", [
    ({**CHAT, "user": "\u0000"}, "user"),
    ({**CHAT, "model": "mock-chat\u0000"}, "model"),
    ({**CHAT, "model": "no-such-model\u0000"}, "model"),
    ({**CHAT, "metadata": {"team\u0000": 1}}, "metadata.team\\u0000"),
    ({**CHAT, "messages": [{"role": "user", "content": [{"type": "text", "text": "a\u0000b"}]}]},
     "messages[0].content[0].text"),
])
def test_a_nul_anywhere_is_refused_and_the_projection_goes_on(server, body, param):
    error = _openai_400(server, "/v1/chat/completions", body, param)
    assert "NUL" in error["message"] and "\x00" not in error["message"]
    later = _post(server, "/v1/chat/completions", {**CHAT, "user": "after-the-nul"})
    assert later.status_code == 200
    rows = spend_log_rows(server, later.headers["x-request-id"])
    assert [row["user"] for row in rows] == ["after-the-nul"], "the spend projection stalled"


def test_nul_in_the_messages_routes_and_the_token_counter(server):
    response = _post(server, "/v1/messages", {**MESSAGES, "metadata": {"user_id": "\u0000"}})
    assert response.status_code == 400 and "'metadata.user_id'" in response.json()["error"]["message"]
    _openai_400(server, "/utils/token_counter", {"model": "mock-chat", "prompt": "a\u0000"}, "prompt")


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages/count_tokens"])
def test_json_nested_deeper_than_the_writer_can_write_is_a_400(server, path):
    deep: Any = "bottom"
    for _ in range(300):
        deep = [deep]
    body = {**MESSAGES, "tools": [{"name": "t", "input_schema": {"type": "object", "x": deep}}]} \
        if path.startswith("/v1/messages") else {**CHAT, "anything": deep}
    response = _post(server, path, body)
    assert response.status_code == 400 and "240 levels" in response.text


@pytest.mark.parametrize("fields, param", [
    ({"model": "mock-whisper", "temperature": "hot"}, "temperature"),
    ({"model": "mock-whisper", "response_format": "xml"}, "response_format"),
    ({"model": "mock-whisper", "language": "en\x00"}, "language"),
    ({"language": "en"}, "model"),
])
def test_transcription_form_fields_are_checked(server, fields, param):
    response = httpx.post(server.base_url + "/v1/audio/transcriptions", data=fields, headers=HEADERS,
                          files={"file": ("a.wav", b"RIFF0000", "audio/wav")})
    assert response.status_code == 400 and not shape_problems("/v1/audio/transcriptions", response), response.text
    assert response.json()["error"]["param"] == param


@pytest.mark.parametrize("path, body", [
    ("/v1/chat/completions", {"model": "mock-broken", "messages": [USER]}),
    ("/v1/messages", {**MESSAGES, "model": "mock-broken"}),
])
def test_a_500_says_only_that_it_happened_and_under_which_request_id(server, path, body):
    response = httpx.post(server.base_url + path, json=body, headers=HEADERS)

    assert response.status_code == 500
    request_id = response.headers["x-request-id"]
    error = response.json()["error"]
    assert error["message"] == f"The server had an error while processing your request (request id {request_id})."
    assert "mock failure" in server.log() and request_id in server.log()


def test_an_unexpected_exception_is_a_generic_500_and_a_redacted_log(caplog):
    secret = "sk-live-secret-0123456789"
    app = FastAPI()
    install_error_handlers(app, (secret,))

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError(f"upstream said {secret}")

    with caplog.at_level(logging.ERROR, logger="moneta.api"):
        response = TestClient(app).get("/boom")  # raises if the exception escaped to the server

    assert response.status_code == 500
    request_id = response.headers["x-request-id"]
    assert response.json()["error"]["message"].endswith(f"(request id {request_id}).")
    assert "RuntimeError" not in response.text and secret not in response.text
    logged = caplog.text
    assert "RuntimeError: upstream said [REDACTED]" in logged and secret not in logged and request_id in logged


# -- the checks themselves, without a server ---------------------------------------------------

def test_param_paths_name_the_deepest_problem_in_a_union():
    with pytest.raises(BadRequestError) as raised:
        validation.validate_chat({**CHAT, "messages": [{"role": "user", "content": [{"type": "image_url",
                                                                                     "image_url": {"url": 7}}]}]})
    assert raised.value.param == "messages[0].content[0].image_url.url"
    with pytest.raises(BadRequestError, match=re.escape("expected one of a string or an array, but got an integer")):
        validation.validate_chat({**CHAT, "messages": [{"role": "user", "content": 5}]})
    with pytest.raises(BadRequestError) as raised:
        validation.validate_chat({**CHAT, "messages": [{"role": "user", "content": [{"type": "video"}]}]})
    assert raised.value.param == "messages[0].content[0].type"


def test_unknown_members_pass_and_known_ones_are_not_coerced():
    validation.validate_chat({**CHAT, "mock_response": {"any": ["thing"]}, "custom_param": 1})
    for wrong in ({"max_tokens": "5"}, {"temperature": True}, {"n": 1.0}, {"stream": "true"}):
        with pytest.raises(BadRequestError):
            validation.validate_chat({**CHAT, **wrong})


def test_anthropic_content_blocks_of_other_types_reach_the_translation():
    validate_request({**MESSAGES, "messages": [USER, {"role": "assistant", "content": [
        {"type": "server_tool_use", "id": "s1", "name": "web_search", "input": {}}]}]})


async def test_the_library_refuses_what_the_proxy_refuses():
    with pytest.raises(moneta.exceptions.BadRequestError) as raised:
        await moneta.acompletion(model="mock/x", messages=[USER], user="\x00")
    assert raised.value.param == "user"
    with pytest.raises(moneta.exceptions.BadRequestError) as raised:
        await moneta.aembedding(model="mock/e", input="x", dimensions="abc")
    assert raised.value.param == "dimensions"
