"""A `kill -9` under load loses no request that was acknowledged.

32 concurrent clients drive the real proxy (a subprocess, mock provider, plain and streamed
chat); each notes the `x-request-id` of every request it saw acknowledged: a plain 200 whose
whole body arrived, or a stream whose `data: [DONE]` was read. After ~1.5 s the server's
process group is SIGKILLed (no shutdown hook runs). Every acknowledged id must then be in the
ledger, Completed, with usage and a cost > 0; the server restarts on the same ledger, serves
again, and the old records are unchanged.

The canary test runs the same scenario against a gateway patched (through `sitecustomize`,
in the server process only) to answer *before* its ledger commit: the same check must then
find acknowledged requests missing. It proves the crash test can fail.
"""
from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import aiohttp

from tests.live_server import LiveServer

MASTER_KEY = "sk-crash-test"
CLIENTS = 32
LOAD_SECONDS = 1.5
CONFIG = {
    "model_list": [{
        "model_name": "crash-test",
        "litellm_params": {
            "model": "mock/crash-test",
            "mock_latency_ms": 5,
            "input_cost_per_token": 0.000001,
            "output_cost_per_token": 0.000002,
        },
    }],
    "general_settings": {"master_key": MASTER_KEY},
}
HEADERS = {"Authorization": f"Bearer {MASTER_KEY}"}

# Loaded by the server's interpreter when its directory is on PYTHONPATH: the gateway then
# answers as soon as a record is queued, and the writer commits 300 ms later.
ACK_BEFORE_COMMIT = '''
import asyncio, time
from moneta.infrastructure.group_commit import GroupCommitLedger

_record, _write = GroupCommitLedger.record, GroupCommitLedger._write

def record(self, rec):
    _record(self, rec).add_done_callback(lambda f: f.cancelled() or f.exception())
    early = asyncio.get_running_loop().create_future()
    early.set_result(None)
    return early

def _slow_write(self, batch):
    time.sleep(0.3)
    return _write(self, batch)

GroupCommitLedger.record, GroupCommitLedger._write = record, _slow_write
'''


@dataclass
class Load:
    plain: set[str] = field(default_factory=set)
    streamed: set[str] = field(default_factory=set)
    failures: int = 0  # requests cut off by the kill (or refused after it)
    unexpected: list[str] = field(default_factory=list)

    @property
    def acknowledged(self) -> set[str]:
        return self.plain | self.streamed


async def _client(session: aiohttp.ClientSession, url: str, number: int, stop: asyncio.Event, load: Load) -> None:
    turn = number
    while not stop.is_set():
        turn += 1
        stream = turn % 2 == 0
        body = {"model": "crash-test", "stream": stream,
                "messages": [{"role": "user", "content": f"client {number} request {turn}"}]}
        try:
            async with session.post(url, json=body, headers=HEADERS) as response:
                if response.status != 200:
                    load.unexpected.append(f"HTTP {response.status}: {(await response.read())[:300]!r}")
                    continue
                request_id = response.headers["x-request-id"]
                if not stream:
                    answer = json.loads(await response.read())
                    assert answer["usage"]["total_tokens"] > 0
                    load.plain.add(request_id)
                    continue
                async for line in response.content:
                    if line.strip() == b"data: [DONE]":
                        load.streamed.add(request_id)  # acknowledged only now
                        break
        except (aiohttp.ClientError, asyncio.TimeoutError, json.JSONDecodeError, ConnectionError):
            load.failures += 1
            if stop.is_set():
                return
            await asyncio.sleep(0.01)


async def _drive_then_kill(server: LiveServer) -> Load:
    load = Load()
    stop = asyncio.Event()
    url = server.base_url + "/v1/chat/completions"
    connector = aiohttp.TCPConnector(limit=CLIENTS * 2)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=10)) as session:
        clients = [asyncio.create_task(_client(session, url, n, stop, load)) for n in range(CLIENTS)]
        await asyncio.sleep(LOAD_SECONDS)
        server.kill()  # SIGKILL to the whole process group, mid-flight
        stop.set()
        await asyncio.wait_for(asyncio.gather(*clients), timeout=15)
    return load


def _ledger_view(ledger_url: str, request_ids: set[str]) -> tuple[dict[str, list[tuple[str, dict]]], list[str]]:
    """Each id's events (topic, state) as the ledger holds them, and what is wrong with them."""
    from eventsourcing.application import AggregateNotFoundError

    from moneta.infrastructure.event_store import StoreLocation

    app = StoreLocation.from_url(ledger_url).open()
    view: dict[str, list[tuple[str, dict]]] = {}
    problems: list[str] = []
    try:
        for request_id in sorted(request_ids):
            originator = uuid.UUID(request_id)
            try:
                record = app.repository.get(originator)
            except AggregateNotFoundError:
                problems.append(f"{request_id}: not in the ledger")
                continue
            events = list(app.events.get(originator))
            view[request_id] = [(type(e).__qualname__, _state(e)) for e in events]
            completed = [e for e in events if type(e).__qualname__ == "RequestRecord.Completed"]
            if record.outcome != "completed" or len(completed) != 1:
                problems.append(f"{request_id}: outcome {record.outcome!r}, events {[t for t, _ in view[request_id]]}")
                continue
            usage, cost = completed[0].usage, completed[0].cost
            if not (usage.get("prompt_tokens", 0) > 0 and usage.get("completion_tokens", 0) > 0):
                problems.append(f"{request_id}: Completed without usage: {usage}")
            if not (isinstance(cost, Decimal) and cost > 0 and record.cost == cost):
                problems.append(f"{request_id}: Completed with cost {cost!r}")
    finally:
        app.close()
    return view, problems


def _state(event: object) -> dict:
    return {k: v for k, v in vars(event).items()}


def _serve_once(server: LiveServer) -> str:
    import httpx

    response = httpx.post(server.base_url + "/v1/chat/completions", headers=HEADERS, timeout=10,
                          json={"model": "crash-test", "messages": [{"role": "user", "content": "after the crash"}]})
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["total_tokens"] > 0
    return response.headers["x-request-id"]


def _run_crash(ledger_url: str, workdir: Path, env: dict[str, str] | None = None) -> tuple[LiveServer, Load]:
    server = LiveServer(CONFIG, workdir, env={"DATABASE_URL": ledger_url, **(env or {})}).start()
    try:
        load = asyncio.run(_drive_then_kill(server))
    finally:
        server.kill()
    assert server.process is not None and server.process.returncode == -9, "the server was not SIGKILLed"
    return server, load


def test_kill_9_under_load_loses_no_acknowledged_request(ledger_url: str, tmp_path: Path) -> None:
    started = time.monotonic()
    server, load = _run_crash(ledger_url, tmp_path)

    assert not load.unexpected, load.unexpected[:5]
    assert len(load.plain) >= 50 and len(load.streamed) >= 20, (
        f"too little load to mean anything: {len(load.plain)} plain, {len(load.streamed)} streamed\n{server.log()}")
    assert load.failures > 0, "no request was in flight at the kill: the test did not kill under load"

    view, problems = _ledger_view(ledger_url, load.acknowledged)
    assert not problems, (f"{len(problems)} of {len(load.acknowledged)} acknowledged requests are not durably "
                          f"Completed in the ledger after kill -9:\n" + "\n".join(problems[:20]))

    # The gateway comes back on the same ledger, serves, and the old history is untouched.
    with LiveServer(CONFIG, tmp_path, env={"DATABASE_URL": ledger_url}) as restarted:
        new_id = _serve_once(restarted)
    assert new_id not in view
    after, problems = _ledger_view(ledger_url, load.acknowledged | {new_id})
    assert not problems, problems[:20]
    assert {k: v for k, v in after.items() if k != new_id} == view
    assert time.monotonic() - started < 30


def test_the_crash_check_catches_an_answer_given_before_the_commit(sqlite_url: str, tmp_path: Path) -> None:
    """The canary: with the gateway answering before its commit, acknowledged requests go missing."""
    patch_dir = tmp_path / "ack_before_commit"
    patch_dir.mkdir()
    (patch_dir / "sitecustomize.py").write_text(ACK_BEFORE_COMMIT)
    _, load = _run_crash(sqlite_url, tmp_path, env={"PYTHONPATH": str(patch_dir)})

    assert len(load.acknowledged) >= 50, load
    _, problems = _ledger_view(sqlite_url, load.acknowledged)
    assert problems, "the crash check found nothing missing from a gateway that answers before committing"
    assert all("not in the ledger" in p or "outcome" in p for p in problems), problems[:5]
