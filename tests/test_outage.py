"""Outages answered fast. A real `moneta serve` whose Postgres sits behind a TCP proxy that the
test cuts and restores: readiness answers within a second, a call within ledger_timeout_s, and
once the database is back nothing fails on a connection that died in the outage. And readiness
never waits on a check that hangs."""
from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterator

import httpx
import pytest
from eventsourcing.persistence import OperationalError
from fastapi.testclient import TestClient

from moneta.api.app import create_app
from moneta.bootstrap import build
from moneta.domain.request_record import RequestRecord
from moneta.infrastructure.aggregate_reader import EventStoreReader
from moneta.infrastructure.config_loader import parse_config
from moneta.infrastructure.event_store import StoreLocation, migrate
from tests.test_group_commit import _completed_record
from tests.live_server import LiveServer
from tests.tcp_proxy import TcpProxy

MASTER_KEY = "sk-outage-test"
HEADERS = {"Authorization": f"Bearer {MASTER_KEY}"}
LEDGER_TIMEOUT_S = 2
SLACK_S = 1.5  # a try under way at the deadline (a 1 s wait for a connection), and the HTTP round trip
CONFIG = {
    "model_list": [{"model_name": "m", "litellm_params": {
        "model": "mock/m", "input_cost_per_token": 0.000001, "output_cost_per_token": 0.000002}}],
    "general_settings": {"master_key": MASTER_KEY, "ledger_timeout_s": LEDGER_TIMEOUT_S},
}


@pytest.fixture
def proxied_server(tmp_path, postgres_url) -> Iterator[tuple[LiveServer, TcpProxy]]:
    with TcpProxy.in_front_of(postgres_url) as proxy, \
            LiveServer(CONFIG, tmp_path, env={"DATABASE_URL": proxy.url_for(postgres_url)}) as server:
        yield server, proxy


def test_an_outage_is_answered_fast_and_recovered_from(proxied_server):
    server, proxy = proxied_server
    before = _chat(server)
    assert before.status_code == 200, before.text
    _wait_for(lambda: _readiness(server).status_code == 200, "readiness 200 before the outage")
    _spend_queries_at_once(server, 8)  # the views' pool now holds several connections for the cut to kill

    proxy.cut()
    readiness, elapsed = _timed(lambda: _readiness(server))
    assert readiness.status_code == 503 and readiness.json()["db"] == "unreachable", readiness.text
    assert readiness.json()["read_side"]["status"] == "unreachable"
    assert elapsed < 2.0
    refused, elapsed = _timed(lambda: _chat(server))
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "ledger_unavailable", refused.text
    assert elapsed < LEDGER_TIMEOUT_S + SLACK_S

    proxy.restore()
    logs = httpx.get(server.base_url + "/spend/logs", headers=HEADERS, timeout=10)
    assert logs.status_code == 200, logs.text  # the first query after the restart
    _wait_for(lambda: _readiness(server).status_code == 200, "readiness 200 after the outage")
    after = _chat(server)
    assert after.status_code == 200, after.text
    _wait_for(lambda: _in_spend_logs(server, after), "the call after the outage in the spend logs")
    assert _in_spend_logs(server, before)
    assert not _in_spend_logs(server, refused)  # its events were dropped, as its 503 said


@pytest.fixture
def proxied_reader(postgres_url) -> Iterator[tuple[EventStoreReader, TcpProxy, RequestRecord]]:
    """A reader of the ledger through a proxy, its pool full of connections for a cut to kill."""
    with TcpProxy.in_front_of(postgres_url) as proxy:
        location = StoreLocation.from_url(proxy.url_for(postgres_url))
        migrate(location)
        app = location.open()
        record = _completed_record()
        app.save(record)
        app.recorder.datastore.pool.wait(10)
        yield EventStoreReader(app), proxy, record
        app.close()


def test_a_ledger_read_in_an_outage_fails_within_about_a_second(proxied_reader):
    reader, proxy, _ = proxied_reader
    proxy.cut()
    started = time.monotonic()
    with pytest.raises(OperationalError):
        reader.head()
    assert time.monotonic() - started < 2.0


def test_the_first_ledger_reads_after_a_restart_do_not_fail_on_dead_connections(proxied_reader):
    reader, proxy, record = proxied_reader
    proxy.cut()
    proxy.restore()
    assert reader.get(record.id).outcome == "completed"
    reader.app.recorder.datastore.pool.wait(10)
    proxy.cut()
    proxy.restore()
    assert reader.head() == 2


def _chat(server: LiveServer) -> httpx.Response:
    return httpx.post(server.base_url + "/v1/chat/completions", headers=HEADERS, timeout=30,
                      json={"model": "m", "messages": [{"role": "user", "content": "hi"}]})


def _readiness(server: LiveServer) -> httpx.Response:
    return httpx.get(server.base_url + "/health/readiness", timeout=30)


def _in_spend_logs(server: LiveServer, call: httpx.Response) -> bool:
    response = httpx.get(server.base_url + "/spend/logs", headers=HEADERS, timeout=10,
                         params={"request_id": call.headers["x-request-id"]})
    assert response.status_code == 200, response.text
    return len(response.json()) == 1


def _spend_queries_at_once(server: LiveServer, count: int) -> None:
    with ThreadPoolExecutor(count) as pool:
        responses = list(pool.map(lambda _: httpx.get(server.base_url + "/spend/logs", headers=HEADERS, timeout=10),
                                  range(count)))
    assert all(response.status_code == 200 for response in responses)


def _timed(call: Callable[[], httpx.Response]) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = call()
    return response, time.monotonic() - started


def _wait_for(condition: Callable[[], bool], what: str, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


class _HangingProbe:
    field = "cache"
    label = "redis"

    async def __call__(self) -> bool:
        await asyncio.sleep(3600)
        return True


def test_readiness_answers_within_a_second_when_a_check_hangs(sqlite_url):
    container = build(parse_config({"general_settings": {"database_url": sqlite_url}}, {}), {}, migrate=True)
    container.probes.append(_HangingProbe())
    try:
        response, elapsed = _timed(lambda: TestClient(create_app(container)).get("/health/readiness"))
    finally:
        container.close()
    assert response.status_code == 503 and response.json()["cache"] == "unreachable"
    assert response.json()["db"] == "connected" and elapsed < 1.0
