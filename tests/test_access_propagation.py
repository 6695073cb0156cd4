"""A change made through one server reaches every worker of every server sharing the database:
a new key works there at once, and a block or delete is enforced within one second."""
from __future__ import annotations

import time
from pathlib import Path

import httpx

from tests.live_server import LiveServer
from tests.test_access_management import ADMIN, config

CHAT = {"model": "m1", "messages": [{"role": "user", "content": "hi"}]}
WITHIN_S = 1.0


def status(base_url: str, key: str) -> int:
    return httpx.post(base_url + "/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {key}"},
                      timeout=30).status_code


def refused_everywhere_after(base_url: str, key: str, expected: int) -> float:
    """Seconds until ten calls in a row (fresh connections, so both workers answer) are refused."""
    started = time.monotonic()
    streak = 0
    while streak < 10:
        streak = streak + 1 if status(base_url, key) == expected else 0
        assert time.monotonic() - started < 10, "the change never reached every worker"
    return time.monotonic() - started


def test_a_block_and_a_delete_reach_every_worker_of_another_server_within_a_second(postgres_url: str,
                                                                                   tmp_path: Path) -> None:
    env = {"DATABASE_URL": postgres_url}
    with LiveServer(config(), tmp_path, env=env) as one, LiveServer(config(), tmp_path, env=env, workers=2) as two:
        made = httpx.post(one.base_url + "/key/generate", headers=ADMIN, json={}, timeout=30).json()
        key = made["key"]
        assert [status(two.base_url, key) for _ in range(4)] == [200] * 4  # at once, on both workers

        assert httpx.post(one.base_url + "/key/block", headers=ADMIN, json={"key": key}).status_code == 200
        blocked_after = refused_everywhere_after(two.base_url, key, 401)
        httpx.post(one.base_url + "/key/unblock", headers=ADMIN, json={"key": key})
        assert refused_everywhere_after(two.base_url, key, 200) < WITHIN_S + 2

        assert httpx.post(one.base_url + "/key/delete", headers=ADMIN, json={"keys": [key]}).status_code == 200
        deleted_after = refused_everywhere_after(two.base_url, key, 401)
    # The ten calls of the streak take time of their own: the first refusal came sooner.
    assert blocked_after < WITHIN_S and deleted_after < WITHIN_S, (blocked_after, deleted_after)
