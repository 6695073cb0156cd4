"""A Redis that answers after 2 s stalls nobody: routing reads a copy of the cooldowns that a
thread refreshes, and rate counting waits for Redis off the event loop (then falls back to
this process's own counts)."""
from __future__ import annotations

import threading
import time

import httpx

from tests.live_server import LiveServer
from tests.services import REDIS_URL
from tests.tcp_proxy import TcpProxy

HELLO = {"messages": [{"role": "user", "content": "hello"}]}


def config(redis_url: str) -> dict:
    return {"model_list": [
                {"model_name": "free", "litellm_params": {"model": "mock/free"}},
                {"model_name": "metered", "litellm_params": {"model": "mock/metered", "rpm": 1000}}],
            "router_settings": {"redis_url": redis_url}}


def chat(client: httpx.Client, model: str) -> float:
    started = time.monotonic()
    response = client.post("/v1/chat/completions", json={"model": model, **HELLO})
    assert response.status_code == 200, response.text
    return time.monotonic() - started


def test_a_redis_answering_after_2_s_stalls_no_other_request(redis_url, tmp_path):
    with TcpProxy.in_front_of(REDIS_URL) as proxy, LiveServer(config(proxy.url_for(redis_url)), tmp_path) as server:
        with httpx.Client(base_url=server.base_url, timeout=30) as client:
            chat(client, "metered")  # Redis answers in time
            proxy.reply_delay_s = 2.0
            metered: list[float] = []
            waiting = [threading.Thread(target=lambda: metered.append(chat(httpx.Client(base_url=server.base_url,
                                                                                        timeout=30), "metered")))
                       for _ in range(4)]
            for thread in waiting:
                thread.start()
            free = [chat(client, "free") for _ in range(40)]  # while the metered calls wait for Redis
            for thread in waiting:
                thread.join()
    # A blocked event loop would hold a call for Redis's 0.5 s socket timeout at least.
    assert max(free) < 0.3, free
    assert len(metered) == 4 and max(metered) < 2.0, metered  # counted in this process once Redis timed out
    assert min(metered) >= 0.4  # they did wait for Redis: the test saw the slow case
