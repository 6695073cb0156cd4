"""Limits that hold against hostile clients, on `moneta serve` as real processes: bodies past the
limit (chunked too), oversized heads, slow and idle connections. The clients are raw sockets:
an HTTP client library would not send what these tests send.

A refusal closes the connection while the client may still be sending: its kernel may then see a
reset, after which the answer already received can still be read (Linux keeps it), or not.
"""
from __future__ import annotations

import select
import socket
import time
from pathlib import Path
from typing import Iterator

import httpx
import orjson
import pytest

from moneta.application.config import ConnectionLimits
from moneta.infrastructure.config_loader import ConfigError, parse_config
from tests.live_server import LiveServer

MASTER_KEY = "sk-limits-test"
HEADERS = {"Authorization": f"Bearer {MASTER_KEY}"}
BODY_LIMIT = 1024 * 1024
HEADER_TIMEOUT_S = 2.0
BODY_TIMEOUT_S = 2.0
KEEP_ALIVE_S = 1.0
SLACK_S = 1.5


def _config() -> dict:
    return {"model_list": [{"model_name": "m", "litellm_params": {
        "model": "mock/m", "input_cost_per_token": 0.000001, "output_cost_per_token": 0.000002}}],
        "general_settings": {"master_key": MASTER_KEY, "max_request_size_mb": BODY_LIMIT / 1024 / 1024,
                             "header_timeout_s": HEADER_TIMEOUT_S, "body_timeout_s": BODY_TIMEOUT_S,
                             "keep_alive_timeout_s": KEEP_ALIVE_S}}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with LiveServer(_config(), tmp_path_factory.mktemp("limits")) as live:
        yield live


# -- raw HTTP ------------------------------------------------------------------------------------

def _connect(server: LiveServer) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _answered(sock: socket.socket) -> bool:
    return bool(select.select([sock], [], [], 0)[0])


def _send_until_closed(sock: socket.socket, pieces: Iterator[bytes]) -> int:
    """Sends the pieces, whatever the server answers meanwhile, until it closes the connection;
    returns the bytes sent."""
    sent = 0
    try:
        for piece in pieces:
            sock.sendall(piece)
            sent += len(piece)
    except (BrokenPipeError, ConnectionResetError):
        pass
    return sent


def _read_to_end(sock: socket.socket) -> bytes:
    """What the server sent until it closed (b"" after a reset that came first)."""
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass
    return received


def _read_response(sock: socket.socket) -> bytes:
    """One response with a Content-Length, leaving the connection open."""
    received = b""
    while b"\r\n\r\n" not in received:
        received += sock.recv(65536)
    head, body = received.split(b"\r\n\r\n", 1)
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def _status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def _error_code(answer: bytes) -> str:
    return orjson.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]["code"]


def _head(method: str, path: str, *headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: limits.test", f"Authorization: Bearer {MASTER_KEY}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def chat(server: LiveServer, client: httpx.Client | None = None) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hello"}]}
    response = (client or httpx).post(server.base_url + "/v1/chat/completions", json=body, headers=HEADERS,
                                      timeout=10)
    assert response.status_code == 200, response.text


# -- settings ------------------------------------------------------------------------------------

def test_the_connection_limits_have_defaults_and_are_read_from_general_settings(caplog):
    assert parse_config({}, {}).connection_limits == ConnectionLimits(
        max_header_bytes=65536, max_header_count=100, header_timeout_s=10, body_timeout_s=30, keep_alive_timeout_s=5)
    general = {"max_header_size_kb": 16, "max_header_count": 50, "header_timeout_s": 3, "body_timeout_s": 4.5,
               "keep_alive_timeout_s": 75}
    assert parse_config({"general_settings": general}, {}).connection_limits == ConnectionLimits(16384, 50, 3, 4.5, 75)
    assert caplog.text == ""  # known keys


@pytest.mark.parametrize("key, value", [("max_header_size_kb", 0), ("max_header_count", 10.5),
                                        ("max_header_count", 0), ("header_timeout_s", -1), ("body_timeout_s", "x"),
                                        ("keep_alive_timeout_s", 0)])
def test_an_invalid_connection_limit_names_its_key(key, value):
    with pytest.raises(ConfigError, match=f"general_settings.{key}"):
        parse_config({"general_settings": {key: value}}, {})


# -- bodies --------------------------------------------------------------------------------------

def _chunked(first: bytes, total: int, size: int = 256 * 1024) -> Iterator[bytes]:
    """`total` bytes of body in chunked transfer coding, `first` at the start of it."""
    sent, data = 0, first + b"a" * (size - len(first))
    while sent < total:
        yield b"%x\r\n%s\r\n" % (len(data), data)
        sent += len(data)
        data = b"a" * size
    yield b"0\r\n\r\n"


UPLOADS = {
    "chat": ("/v1/chat/completions", "application/json", b'{"model": "m", "messages": [{"role": "user", "content": "'),
    "transcription": ("/v1/audio/transcriptions", "multipart/form-data; boundary=XyZ",
                      b'--XyZ\r\nContent-Disposition: form-data; name="model"\r\n\r\nm\r\n--XyZ\r\nContent-Disposition:'
                      b' form-data; name="file"; filename="a.wav"\r\nContent-Type: audio/wav\r\n\r\n'),
}


@pytest.mark.parametrize("route", UPLOADS)
def test_a_chunked_upload_past_the_limit_is_refused_before_it_is_read(server, route):
    path, content_type, start = UPLOADS[route]
    total = 25_000_000
    with _connect(server) as sock:
        sock.sendall(_head("POST", path, f"Content-Type: {content_type}", "Transfer-Encoding: chunked"))
        sent = _send_until_closed(sock, _chunked(start, total))
        answer = _read_to_end(sock)
    assert sent < total / 2, f"the server read {sent} bytes of a body over its limit of {BODY_LIMIT}"
    if answer:
        assert (_status(answer), _error_code(answer)) == (413, "request_too_large")
    chat(server)


def test_a_chunked_body_within_the_limit_is_served(server):
    body = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "x" * 300_000}]})
    pieces = (body[i:i + 100_000] for i in range(0, len(body), 100_000))
    response = httpx.post(server.base_url + "/v1/chat/completions", content=pieces, timeout=10,
                          headers={**HEADERS, "Content-Type": "application/json"})
    assert response.status_code == 200, response.text


# -- heads ---------------------------------------------------------------------------------------

def test_a_32_mb_header_is_refused_with_431_before_it_is_read(server):
    total = 32 * 1024 * 1024
    with _connect(server) as sock:
        start = b"GET /health/liveliness HTTP/1.1\r\nHost: limits.test\r\nX-Big: "
        pieces = (start if i == 0 else b"a" * 65536 for i in range(total // 65536))
        sent = _send_until_closed(sock, pieces)
        answer = _read_to_end(sock)
    assert sent < total / 2, f"the server read {sent} bytes of a header"
    if answer:
        assert (_status(answer), _error_code(answer)) == (431, "request_header_fields_too_large")
    chat(server)


def test_a_request_with_1000_headers_is_refused_with_431(server):
    with _connect(server) as sock:
        sock.sendall(_head("GET", "/health/liveliness", *(f"X-Header-{i}: {i}" for i in range(1000))))
        answer = _read_to_end(sock)  # all was read before the refusal: no reset
    assert (_status(answer), _error_code(answer)) == (431, "request_header_fields_too_large")
    chat(server)


def test_heads_within_the_limits_are_served(server):
    many = {f"x-header-{i}": "v" for i in range(90)}
    assert httpx.get(server.base_url + "/health/liveliness", headers=many).status_code == 200
    large = {"cookie": "c" * 60_000}  # one header of 60 KB within 64 KiB
    assert httpx.get(server.base_url + "/health/liveliness", headers=large).status_code == 200


# -- idle and slow connections ---------------------------------------------------------------------

def test_an_idle_keep_alive_connection_is_closed_after_the_keep_alive_timeout(server):
    with _connect(server) as sock:
        for _ in range(2):  # the connection is kept between requests
            sock.sendall(b"GET /health/liveliness HTTP/1.1\r\nHost: limits.test\r\n\r\n")
            assert _status(_read_response(sock)) == 200
        idle = time.monotonic()
        assert _read_to_end(sock) == b""
    assert time.monotonic() - idle < KEEP_ALIVE_S + SLACK_S


def test_a_stalled_body_is_answered_408_after_the_body_timeout(server):
    with _connect(server) as sock:
        sock.sendall(_head("POST", "/v1/chat/completions", "Content-Type: application/json", "Content-Length: 100"))
        for piece in (b'{"model": ', b'"m", ', b'"messages": '):  # pauses of half the timeout, longer together
            time.sleep(BODY_TIMEOUT_S / 2)
            sock.sendall(piece)
        assert not _answered(sock)
        stalled = time.monotonic()
        answer = _read_to_end(sock)
    assert BODY_TIMEOUT_S / 2 < time.monotonic() - stalled < BODY_TIMEOUT_S + SLACK_S
    assert (_status(answer), _error_code(answer)) == (408, "request_timeout")


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


class SlowClients:
    """Sockets that each send one byte of a request head at a time, 1 to 2 s apart."""

    HEAD = b"POST /v1/chat/completions HTTP/1.1\r\nHost: limits.test\r\nContent-Type: application/json\r\n\r\n"

    def __init__(self, server: LiveServer, count: int) -> None:
        self.opened = time.monotonic()
        self.open = {_connect(server): 0 for _ in range(count)}
        self.next_send = {sock: self.opened + 1 + i / count for i, sock in enumerate(self.open)}
        self.answers: list[bytes] = []
        for sock in self.open:
            sock.setblocking(False)
            sock.send(self.HEAD[:1])
            self.open[sock] = 1

    def step(self) -> None:
        readable, _, _ = select.select(list(self.open), [], [], 0.05)
        for sock in readable:
            self._collect(sock)
        now = time.monotonic()
        for sock, sent in list(self.open.items()):
            if now >= self.next_send[sock]:
                try:
                    sock.send(self.HEAD[sent:sent + 1])
                except (BrokenPipeError, ConnectionResetError):
                    self._collect(sock)
                    continue
                self.open[sock] = sent + 1
                self.next_send[sock] = now + 1 + (sent % 2) * 0.9

    def _collect(self, sock: socket.socket) -> None:
        sock.setblocking(True)
        self.answers.append(_read_to_end(sock))
        sock.close()
        del self.open[sock]


def test_200_slow_clients_are_closed_by_the_header_timeout_and_memory_stays_flat(server):
    with httpx.Client() as client:
        for _ in range(50):
            chat(server, client)
        rss_before = _rss_kb(server.process.pid)
        storm = SlowClients(server, 200)
        served = 0
        while storm.open and time.monotonic() - storm.opened < HEADER_TIMEOUT_S + 2 * SLACK_S:
            storm.step()
            chat(server, client)
            served += 1
        lasted = time.monotonic() - storm.opened
        rss_after = _rss_kb(server.process.pid)
    assert not storm.open, f"{len(storm.open)} slow clients still connected after {lasted:.1f} s"
    assert served >= 10
    assert {_status(a) for a in storm.answers if a} == {408}
    assert rss_after - rss_before < 30 * 1024, f"RSS grew from {rss_before} kB to {rss_after} kB"


def test_every_worker_holds_the_limits(tmp_path):
    with LiveServer(_config(), tmp_path, workers=2) as workers:
        for _ in range(4):
            with _connect(workers) as sock:
                sock.sendall(_head("GET", "/health/liveliness", *(f"X-Header-{i}: {i}" for i in range(101))))
                assert _status(_read_to_end(sock)) == 431
        with _connect(workers) as idle:
            opened = time.monotonic()
            assert _status(_read_to_end(idle)) == 408
        assert time.monotonic() - opened < HEADER_TIMEOUT_S + SLACK_S
        chat(workers)
