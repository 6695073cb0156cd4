"""Budgets that hold for the whole deployment: two servers sharing Redis and PostgreSQL, several
workers without Redis, and what happens when the counters cannot be reached."""
from __future__ import annotations

import asyncio
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from tests.tcp_proxy import TcpProxy
from tests.test_budgets import ADMIN, CALL_COST, CHAT, admin, config, spent
from tests.live_server import LiveServer


def storm_over(base_urls: list[str], key: str, calls: int, body: dict[str, Any] = CHAT) -> Counter[int]:
    """`calls` at once, spread over the servers (a fresh connection each, so over their workers too)."""
    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_keepalive_connections=0)) as client:
            return await asyncio.gather(*(client.post(
                base_urls[n % len(base_urls)] + "/v1/chat/completions", json=body,
                headers={"Authorization": f"Bearer {key}"}) for n in range(calls)))
    return Counter(answer.status_code for answer in asyncio.run(run()))


def test_two_servers_sharing_redis_and_postgres_share_every_budget(postgres_url: str, redis_url: str,
                                                                   tmp_path: Path) -> None:
    shared = {**config(), "router_settings": {"redis_url": redis_url}}
    env = {"DATABASE_URL": postgres_url}
    with LiveServer(shared, tmp_path, env=env) as one, LiveServer(shared, tmp_path, env=env) as two:
        servers = [one.base_url, two.base_url]
        key = admin(one.base_url, "/key/generate", {"max_budget": str(CALL_COST * 50)})
        statuses = storm_over(servers, key["key"], 200)
        assert statuses[200] == 50 and statuses[429] == 150
        assert spent(one.base_url, api_key=key["token"]) == CALL_COST * 50

        admin(one.base_url, "/team/new", {"team_id": "shared-team", "max_budget": str(CALL_COST * 20)})
        team_key = admin(two.base_url, "/key/generate", {"team_id": "shared-team"})
        assert storm_over(servers, team_key["key"], 80)[200] == 20

        admin(one.base_url, "/customer/new", {"user_id": "shared-buyer", "max_budget": str(CALL_COST * 10)})
        other = admin(one.base_url, "/key/generate", {})
        assert storm_over(servers, other["key"], 40, {**CHAT, "user": "shared-buyer"})[200] == 10
        ready = httpx.get(two.base_url + "/health/readiness").json()
    assert ready["budgets"] == {"store": "redis", "when_unverifiable": "refuse"}


def test_workers_without_redis_share_every_budget_through_the_database(postgres_url: str, tmp_path: Path) -> None:
    with LiveServer(config(), tmp_path, env={"DATABASE_URL": postgres_url}, workers=2) as live:
        key = admin(live.base_url, "/key/generate", {"max_budget": str(CALL_COST * 50)})
        statuses = storm_over([live.base_url], key["key"], 200)
        assert statuses[200] == 50
        assert spent(live.base_url, api_key=key["token"]) == CALL_COST * 50
        assert httpx.get(live.base_url + "/health/readiness").json()["budgets"]["store"] == "database"


def test_budgets_fail_closed_when_redis_is_gone_unless_told_to_fail_open(redis_url: str, tmp_path: Path) -> None:
    host_port = redis_url.split("//", 1)[1].split("/", 1)
    upstream_host, upstream_port = host_port[0].split(":")
    with TcpProxy(upstream_host, int(upstream_port)) as proxy:
        through = f"redis://127.0.0.1:{proxy.port}/{host_port[1]}"
        for fail_open, expected in ((False, 503), (True, 200)):
            settings = {**config(), "router_settings": {"redis_url": through},
                        "general_settings": {**config()["general_settings"], "budget_fail_open": fail_open}}
            workdir = tmp_path / str(fail_open)
            workdir.mkdir()
            with LiveServer(settings, workdir) as live:
                key = admin(live.base_url, "/key/generate", {"max_budget": "1"})
                headers = {"Authorization": f"Bearer {key['key']}"}
                assert httpx.post(live.base_url + "/v1/chat/completions", json=CHAT, headers=headers).status_code == 200
                proxy.cut()
                answer = httpx.post(live.base_url + "/v1/chat/completions", json=CHAT, headers=headers, timeout=30)
                assert answer.status_code == expected, answer.text
                if expected == 503:
                    assert answer.json()["error"]["code"] == "budget_unverifiable"
                unbudgeted = httpx.post(live.base_url + "/v1/chat/completions", json=CHAT,
                                        headers=ADMIN, timeout=30)
                assert unbudgeted.status_code == 200  # only budgeted calls depend on the counters
                proxy.restore()


def test_a_stream_cut_off_by_its_client_settles_at_what_it_consumed(tmp_path: Path) -> None:
    slow = {"model_name": "m1", "litellm_params": {"model": "mock/mock-gpt", "mock_latency_ms": 400,
                                                   "mock_stream_chunks": 8}}
    with LiveServer({**config(), "model_list": [slow]}, tmp_path) as live:
        key = admin(live.base_url, "/key/generate", {"max_budget": "1"})
        with httpx.stream("POST", live.base_url + "/v1/chat/completions", json={**CHAT, "stream": True},
                          headers={"Authorization": f"Bearer {key['key']}"}, timeout=30) as stream:
            for line in stream.iter_lines():
                if line.startswith("data:"):
                    break  # the first chunk, then hang up
        charged = spent(live.base_url, api_key=key["token"])
        info = httpx.get(live.base_url + "/key/info", params={"key": key["key"]}, headers=ADMIN).json()["info"]
    assert Decimal(0) < charged < CALL_COST  # some of the answer, not all of it
    assert Decimal(info["budget"]["spend_exact"]) == charged and info["budget"]["reserved_exact"] == "0"
