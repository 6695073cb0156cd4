"""`moneta serve` as real processes: it leaves nothing behind, however it ends; it keeps its
read side running; it drains requests in flight on SIGTERM.

Each test starts `moneta serve` in a session of its own, collects every descendant from /proc,
acts on the server, and checks the processes it collected.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TypeVar

import httpx
import pytest

from moneta.api.supervisor import Backoff
from tests.live_server import LiveServer

T = TypeVar("T")
MASTER_KEY = "sk-lifecycle-test"
HEADERS = {"Authorization": f"Bearer {MASTER_KEY}"}
READ_SIDE = "projections run"
WORKER = "multiprocessing.spawn"


def _config(latency_ms: int = 0, chunks: int = 4, grace_period_s: float | None = None) -> dict:
    general = {"master_key": MASTER_KEY}
    if grace_period_s is not None:
        general["graceful_shutdown_timeout_s"] = grace_period_s
    return {"model_list": [{"model_name": "slow", "litellm_params": {
        "model": "mock/slow", "mock_latency_ms": latency_ms, "mock_stream_chunks": chunks,
        "input_cost_per_token": 0.000001, "output_cost_per_token": 0.000002}}],
        "general_settings": general}


# -- processes, from /proc ---------------------------------------------------------------------

@dataclass(frozen=True)
class Proc:
    pid: int
    started: int  # clock ticks after boot: tells a reused pid apart
    command: str


def _stat(pid: int) -> tuple[int, str, int] | None:
    """(parent pid, state, start time) of a process, or None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) "
    return int(fields[1]), fields[0], int(fields[19])


def _command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (FileNotFoundError, ProcessLookupError):
        return ""


def descendants(root: int) -> list[Proc]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _stat(int(entry))) is not None:
            children.setdefault(stat[0], []).append(int(entry))
    found, todo = [], list(children.get(root, []))
    while todo:
        pid = todo.pop()
        stat = _stat(pid)
        if stat is not None:
            found.append(Proc(pid, stat[2], _command(pid)))
            todo.extend(children.get(pid, []))
    return found


def alive(proc: Proc) -> bool:
    stat = _stat(proc.pid)
    return stat is not None and stat[2] == proc.started and stat[1] not in "ZX"  # a zombie has ended


def running(procs: list[Proc], marker: str) -> list[Proc]:
    return [p for p in procs if marker in p.command and alive(p)]


def wait_for(condition: Callable[[], T], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.05)
    return result


def process_tree(server: LiveServer) -> list[Proc]:
    """Every descendant of the server, once its read side and worker processes are up."""
    assert server.process is not None
    workers = server.workers if server.workers > 1 else 0  # one worker runs in `moneta serve` itself

    def tree() -> list[Proc]:
        found = descendants(server.process.pid)
        return found if len(running(found, READ_SIDE)) == 1 and len(running(found, WORKER)) == workers else []

    return wait_for(tree, 10, "the read side and the workers up")


def assert_all_end(procs: list[Proc], within: float) -> None:
    wait_for(lambda: not [p for p in procs if alive(p)], within,
             f"every process ends; left: {[p.command for p in procs if alive(p)]}")


# -- requests ----------------------------------------------------------------------------------

def chat(server: LiveServer, text: str) -> str:
    response = httpx.post(server.base_url + "/v1/chat/completions", headers=HEADERS, timeout=10,
                          json={"model": "slow", "messages": [{"role": "user", "content": text}]})
    assert response.status_code == 200, response.text
    return response.headers["x-request-id"]


def in_spend_logs(server: LiveServer, request_id: str) -> bool:
    response = httpx.get(server.base_url + "/spend/logs", headers=HEADERS, params={"request_id": request_id})
    return response.status_code == 200 and len(response.json()) == 1


class Stream(threading.Thread):
    """A streamed chat in a thread of its own: `first_chunk` is set when a chunk has arrived."""

    def __init__(self, server: LiveServer, words: int = 40) -> None:
        super().__init__(daemon=True)
        self.url = server.base_url + "/v1/chat/completions"
        self.prompt = " ".join(["word"] * words)  # the mock answers with as many words, and more
        self.first_chunk = threading.Event()
        self.lines: list[str] = []
        self.request_id = ""
        self.error: Exception | None = None

    def run(self) -> None:
        body = {"model": "slow", "stream": True, "messages": [{"role": "user", "content": self.prompt}]}
        try:
            with httpx.stream("POST", self.url, json=body, headers=HEADERS, timeout=30) as response:
                self.request_id = response.headers["x-request-id"]
                for line in response.iter_lines():
                    self.lines.append(line)
                    self.first_chunk.set()
        except httpx.HTTPError as exc:
            self.error = exc
        finally:
            self.first_chunk.set()

    @property
    def done(self) -> bool:
        return "data: [DONE]" in self.lines


def completed_in_ledger(ledger_url: str, request_id: str) -> bool:
    from moneta.infrastructure.event_store import StoreLocation

    app = StoreLocation.from_url(ledger_url).open()
    try:
        return app.repository.get(uuid.UUID(request_id)).outcome == "completed"
    finally:
        app.close()


# -- the tests ---------------------------------------------------------------------------------

@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_ends_serve_with_status_0_and_every_child(sig: signal.Signals, sqlite_url: str,
                                                                 tmp_path: Path) -> None:
    with LiveServer(_config(), tmp_path, env={"DATABASE_URL": sqlite_url}) as server:
        tree = process_tree(server)
        os.kill(server.process.pid, sig)
        assert server.process.wait(10) == 0, server.log()
        assert_all_end(tree, within=2)


@pytest.mark.parametrize("workers", [1, 2])
def test_kill_9_of_serve_alone_ends_every_child_within_2_s(workers: int, ledger_url: str, tmp_path: Path) -> None:
    # On Postgres the read side takes longest (up to 1 s to leave its LISTEN wait).
    with LiveServer(_config(), tmp_path, env={"DATABASE_URL": ledger_url}, workers=workers) as server:
        tree = process_tree(server)
        server.process.kill()  # the parent only, not its group
        server.process.wait(5)
        assert_all_end(tree, within=2)


def test_two_workers_share_one_read_side_and_stop_on_sigterm(sqlite_url: str, tmp_path: Path) -> None:
    with LiveServer(_config(), tmp_path, env={"DATABASE_URL": sqlite_url}, workers=2) as server:
        tree = process_tree(server)
        assert len(running(tree, READ_SIDE)) == 1 and len(running(tree, WORKER)) == 2
        request_id = chat(server, "two workers")
        wait_for(lambda: in_spend_logs(server, request_id), 10, "the request in the spend logs")
        server.process.terminate()
        assert server.process.wait(20) == 0, server.log()
        assert_all_end(tree, within=2)


def test_a_killed_read_side_is_restarted_and_catches_up(sqlite_url: str, tmp_path: Path) -> None:
    with LiveServer(_config(), tmp_path, env={"DATABASE_URL": sqlite_url}) as server:
        before = chat(server, "before the read side dies")
        [read_side] = running(process_tree(server), READ_SIDE)
        os.kill(read_side.pid, signal.SIGKILL)
        during = chat(server, "while the read side is down")
        [restarted] = wait_for(lambda: [p for p in running(descendants(server.process.pid), READ_SIDE)
                                        if p.pid != read_side.pid], 10, "a new read side")
        after = chat(server, "after the restart")
        for request_id in (before, during, after):
            wait_for(lambda: in_spend_logs(server, request_id), 10, f"{request_id} in the spend logs")
    assert f"read side (pid {read_side.pid}) ended (killed by SIGKILL)" in server.log()
    assert f"read side started (pid {restarted.pid})" in server.log()


def test_sigterm_lets_a_stream_in_flight_finish_and_commits_it(sqlite_url: str, tmp_path: Path) -> None:
    config = _config(latency_ms=1000, chunks=10)  # the first chunk after 1 s, then one every 0.1 s: 1 s in all
    with LiveServer(config, tmp_path, env={"DATABASE_URL": sqlite_url}, args=["--grace-period", "10"]) as server:
        tree = process_tree(server)
        stream = Stream(server)
        stream.start()
        assert stream.first_chunk.wait(10) and stream.error is None
        server.process.terminate()
        stream.join(10)
        assert stream.error is None and stream.done, stream.lines
        assert server.process.wait(10) == 0, server.log()
        assert_all_end(tree, within=2)
    assert completed_in_ledger(sqlite_url, stream.request_id)


def test_the_grace_period_bounds_the_drain(sqlite_url: str, tmp_path: Path) -> None:
    config = _config(latency_ms=1000, chunks=40, grace_period_s=0.5)  # 4 s of chunks after the first
    with LiveServer(config, tmp_path, env={"DATABASE_URL": sqlite_url}) as server:
        stream = Stream(server)
        stream.start()
        assert stream.first_chunk.wait(10) and stream.error is None
        stopped = time.monotonic()
        server.process.terminate()
        assert server.process.wait(10) == 0, server.log()
        assert time.monotonic() - stopped < 3
        stream.join(10)
    assert not stream.done


def test_the_read_side_runs_alone_until_sigterm(sqlite_url: str, tmp_path: Path) -> None:
    env = {**os.environ, "DATABASE_URL": sqlite_url}
    subprocess.run([sys.executable, "-m", "moneta.api.cli", "migrate"], env=env, check=True, capture_output=True)
    log_path = tmp_path / "read-side.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "moneta.api.cli", "projections", "run"], env=env,
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: "read side running" in log_path.read_text(), 10, "the read side running")
        process.terminate()
        assert process.wait(10) == 0, log_path.read_text()
    finally:
        process.kill()
        process.wait()


def test_restart_delays_double_up_to_30_s_and_start_again_after_a_healthy_run() -> None:
    backoff = Backoff()
    assert [backoff.delay(ran_for=1) for _ in range(8)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert backoff.delay(ran_for=120) == 0.5
    assert backoff.delay(ran_for=1) == 1
