"""No request stays pending forever: the calls of a gateway process that died end as Abandoned."""
from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from moneta.application.abandonment import UNREGISTERED_AFTER_S, gone
from moneta.projections.in_flight import InFlight
from tests.live_server import LiveServer

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
MASTER_KEY = "sk-abandon-test"


def call(instance: str, admitted_s_ago: float) -> InFlight:
    return InFlight(uuid.uuid4(), instance, NOW - timedelta(seconds=admitted_s_ago))


def test_a_call_is_gone_once_its_process_is_silent_or_it_never_beat_for_long():
    beats = {"alive": NOW - timedelta(seconds=5), "dead": NOW - timedelta(seconds=31)}
    calls = {
        "alive": call("alive", 600), "dead": call("dead", 40), "old unregistered": call("", UNREGISTERED_AFTER_S + 1),
        "young unregistered": call("library:1", 120),
    }
    found = gone(calls.values(), beats, NOW, abandon_after_s=30)
    assert {name for name, c in calls.items() if c in found} == {"dead", "old unregistered"}


def config(abandon_after_s: float) -> dict:
    return {"model_list": [{"model_name": "slow", "litellm_params": {
                "model": "mock/slow", "mock_latency_ms": 20_000, "mock_stream_chunks": 4}}],
            "general_settings": {"master_key": MASTER_KEY, "abandon_after_s": abandon_after_s}}


def test_a_stream_cut_by_kill_9_ends_abandoned_and_shows_in_the_spend_logs(sqlite_url: str, tmp_path: Path):
    headers = {"authorization": f"Bearer {MASTER_KEY}"}
    env = {"DATABASE_URL": sqlite_url}
    with LiveServer(config(abandon_after_s=1.5), tmp_path, env=env) as first:
        def stream() -> None:  # its first chunk would take 20 s: the process dies first
            try:
                httpx.post(first.base_url + "/v1/chat/completions", headers=headers, timeout=30, json={
                    "model": "slow", "stream": True, "messages": [{"role": "user", "content": "hi"}]})
            except httpx.HTTPError:
                pass

        threading.Thread(target=stream, daemon=True).start()
        time.sleep(1.0)  # admitted and committed (the Admitted event is written once a call outlasts 5 ms)
        os.killpg(first.process.pid, signal.SIGKILL)
        first.process.wait(10)

    with LiveServer(config(abandon_after_s=1.5), tmp_path, env=env) as second:
        deadline = time.monotonic() + 20
        rows: list = []
        while time.monotonic() < deadline:
            rows = httpx.get(second.base_url + "/spend/logs", headers=headers, timeout=5).json()
            if any(row["status"] == "abandoned" for row in rows):
                break
            time.sleep(0.3)
    (row,) = rows  # the one call, no longer pending
    assert row["status"] == "abandoned" and row["spend"] == 0
    assert row["model_id"] and "ended before settling" in row["metadata"]["reason"]
