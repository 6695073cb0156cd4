"""`GET /metrics`: the real proxy on loopback, called with the official `openai` SDK; the counters
move by exactly what was done, with one worker or summed over two."""
from __future__ import annotations

import threading
import uuid
from decimal import Decimal
from pathlib import Path

import httpx
import openai
import pytest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from moneta.domain.request_record import RequestRecord
from moneta.domain.usage import Usage
from moneta.infrastructure.config_loader import ConfigError, parse_config
from moneta.infrastructure.event_store import StoreLocation, migrate
from moneta.infrastructure.group_commit import GroupCommitLedger
from tests import services
from tests.live_server import LiveServer

MASTER_KEY = "sk-metrics-test"
ROUTE = "/v1/chat/completions"
PROMPT_PRICE, COMPLETION_PRICE = 0.000001, 0.000002


def _config(**general: object) -> dict:
    return {
        "model_list": [
            {"model_name": "priced", "litellm_params": {
                "model": "mock/priced", "input_cost_per_token": PROMPT_PRICE,
                "output_cost_per_token": COMPLETION_PRICE}},
            *({"model_name": "throttled", "litellm_params": {  # a 429 cools a deployment of a group of 2 down
                "model": f"mock/throttled-{n}", "mock_failure_rate": 1.0, "mock_failure_status": 429,
                "input_cost_per_token": PROMPT_PRICE, "output_cost_per_token": COMPLETION_PRICE}} for n in (1, 2)),
        ],
        "general_settings": {"master_key": MASTER_KEY, **general},
    }


def scrape(server: LiveServer, key: str | None = None) -> dict[tuple[str, tuple], float]:
    """Every sample of /metrics, by (name, sorted labels)."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    response = httpx.get(server.base_url + "/metrics", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    return _samples(response.text)


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def total(samples: dict[tuple[str, tuple], float], name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(value for (sample, sample_labels), value in samples.items()
               if sample == name and wanted <= set(sample_labels))


def client(server: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(api_key=MASTER_KEY, base_url=server.base_url + "/v1", max_retries=0)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(request, tmp_path_factory):
    """One server per ledger backend for the module: the projections' lag is read from either."""
    workdir = tmp_path_factory.mktemp(request.param)
    url = f"sqlite:///{workdir / 'ledger.db'}" if request.param == "sqlite" else services.create_database()
    try:
        with LiveServer(_config(), workdir, env={"DATABASE_URL": url}) as live:
            yield live
    finally:
        if request.param == "postgres":
            services.drop_database(url)


def test_counters_move_by_exactly_what_the_calls_did(server):
    before = scrape(server)
    sdk = client(server)
    answers = [sdk.chat.completions.create(model="priced", messages=[{"role": "user", "content": f"call {i}"}])
               for i in range(5)]
    streamed = list(sdk.chat.completions.create(model="priced", messages=[{"role": "user", "content": "stream"}],
                                                stream=True, stream_options={"include_usage": True}))
    after = scrape(server)

    def delta(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    prompt = sum(a.usage.prompt_tokens for a in answers) + streamed[-1].usage.prompt_tokens
    completion = sum(a.usage.completion_tokens for a in answers) + streamed[-1].usage.completion_tokens
    assert delta("moneta_requests_total", route=ROUTE, model_group="priced", status="200") == 6
    assert delta("moneta_request_duration_seconds_count", route=ROUTE, model_group="priced") == 6
    assert delta("moneta_gateway_overhead_seconds_count", route=ROUTE, model_group="priced") == 6
    assert 0 < delta("moneta_gateway_overhead_seconds_sum", route=ROUTE, model_group="priced") \
        <= delta("moneta_request_duration_seconds_sum", route=ROUTE, model_group="priced")
    assert delta("moneta_tokens_total", model_group="priced", kind="prompt") == prompt
    assert delta("moneta_tokens_total", model_group="priced", kind="completion") == completion
    assert delta("moneta_spend_usd_total", model_group="priced") == pytest.approx(
        prompt * PROMPT_PRICE + completion * COMPLETION_PRICE, rel=1e-9)
    assert delta("moneta_ledger_commit_events_sum") >= 12  # Admitted + Completed per call
    assert delta("moneta_ledger_commit_duration_seconds_count") >= 1
    deployments = {dict(labels)["deployment"] for (name, labels) in after
                   if name == "moneta_requests_total" and dict(labels)["model_group"] == "priced"}
    assert len(deployments) == 1 and "" not in deployments


def test_a_denial_shows_up_by_reason_and_a_failing_upstream_by_deployment_with_its_cooldown(server):
    before = scrape(server)
    sdk = client(server)
    with pytest.raises(openai.NotFoundError):
        sdk.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.RateLimitError):
        sdk.chat.completions.create(model="throttled", messages=[{"role": "user", "content": "hi"}])
    after = scrape(server)

    def delta(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    assert delta("moneta_denials_total", error_type="invalid_request_error", code="model_not_found") == 1
    assert delta("moneta_requests_total", route=ROUTE, model_group="", status="404") == 1  # the name is not a label
    failed = {dict(labels)["deployment"] for (name, labels), value in after.items()  # each tried once, failing over
              if name == "moneta_upstream_failures_total" and dict(labels)["error_type"] == "rate_limit_error"
              and value - before.get((name, labels), 0) == 1}
    assert len(failed) == 2
    for deployment in failed:
        assert delta("moneta_deployment_cooldowns_total", deployment=deployment) == 1
    assert delta("moneta_requests_total", route=ROUTE, model_group="throttled", status="429") == 1
    assert {dict(labels)["deployment"] for (name, labels) in after  # labelled with the last one tried
            if name == "moneta_requests_total" and dict(labels)["model_group"] == "throttled"} < failed


def test_routes_are_labelled_by_template_and_the_projections_lag_is_shown(server):
    assert httpx.get(server.base_url + "/no/such/path/123").status_code == 404
    samples = scrape(server)
    routes = {dict(labels).get("route") for (name, labels) in samples if name == "moneta_requests_total"}
    assert "/no/such/path/123" not in routes and "(unmatched)" in routes
    assert ("moneta_projection_lag_events", (("projection", "spend"),)) in samples
    assert ("moneta_projection_lag_seconds", (("projection", "spend"),)) in samples


def test_the_endpoint_asks_for_the_master_key_when_configured(tmp_path):
    config = _config(require_auth_for_metrics_endpoint=True)
    with LiveServer(config, tmp_path, env={"DATABASE_URL": f"sqlite:///{tmp_path / 'ledger.db'}"}) as server:
        refused = httpx.get(server.base_url + "/metrics")
        assert refused.status_code == 401
        assert refused.json()["error"]["type"] == "authentication_error"
        assert httpx.get(server.base_url + "/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert "moneta_requests_total" in str(scrape(server, key=MASTER_KEY))


def test_two_workers_sum_into_one_total(tmp_path):
    with LiveServer(_config(), tmp_path, env={"DATABASE_URL": f"sqlite:///{tmp_path / 'ledger.db'}"},
                    workers=2) as server:
        directory = _metrics_directory(server)
        calls = 0
        while calls < 200 and len(_workers_that_counted(directory)) < 2:  # until both workers took calls
            calls += _calls_in_parallel(server, 8)
        served = _workers_that_counted(directory)
        assert len(served) == 2 and sum(served.values()) == calls
        for _ in range(6):  # whichever worker answers the scrape
            assert total(scrape(server), "moneta_requests_total", route=ROUTE, status="200") == calls
    assert not Path(directory).exists()  # removed when `moneta serve` ended


def _calls_in_parallel(server: LiveServer, count: int) -> int:
    def call() -> None:  # a connection of its own, so that either worker may accept it
        response = httpx.post(server.base_url + ROUTE, headers={"Authorization": f"Bearer {MASTER_KEY}"},
                              json={"model": "priced", "messages": [{"role": "user", "content": "hi"}]}, timeout=10)
        assert response.status_code == 200

    threads = [threading.Thread(target=call) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return count


def _metrics_directory(server: LiveServer) -> str:
    """PROMETHEUS_MULTIPROC_DIR, as `moneta serve` handed it to a worker."""
    for proc in Path("/proc").iterdir():
        try:
            if not proc.name.isdigit() or _parent(proc) != server.process.pid:
                continue
            environ = dict(line.split("=", 1) for line in (proc / "environ").read_text().split("\0") if "=" in line)
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if "PROMETHEUS_MULTIPROC_DIR" in environ:
            return environ["PROMETHEUS_MULTIPROC_DIR"]
    raise AssertionError("no worker of `moneta serve` has PROMETHEUS_MULTIPROC_DIR")


def _parent(proc: Path) -> int:
    stat = (proc / "stat").read_text()
    return int(stat[stat.rindex(")") + 2:].split()[1])


def _workers_that_counted(directory: str) -> dict[str, float]:
    """Each worker's own count of answered chat calls, from its own file."""
    counted = {}
    for path in Path(directory).glob("counter_*.db"):
        if path.stat().st_size < 4:  # a worker is creating it this instant: not readable yet
            continue
        metrics = MultiProcessCollector.merge([str(path)])
        calls = sum(s.value for m in metrics for s in m.samples
                    if s.name == "moneta_requests_total" and s.labels.get("route") == ROUTE)
        if calls:
            counted[path.stem] = calls
    return counted


# -- the pieces, without a server ------------------------------------------------------------------

@pytest.mark.parametrize("value, expected", [(True, True), ("false", False), ("True", True)])
def test_the_setting_is_a_strict_boolean(value, expected):
    config = parse_config({"general_settings": {"require_auth_for_metrics_endpoint": value}}, {})
    assert config.require_auth_for_metrics is expected
    assert not any("require_auth_for_metrics_endpoint" in notice for notice in config.notices)
    with pytest.raises(ConfigError, match="require_auth_for_metrics_endpoint must be true or false"):
        parse_config({"general_settings": {"require_auth_for_metrics_endpoint": "yes"}}, {})


async def test_an_observer_that_raises_does_not_stop_the_ledger(sqlite_url):
    class Broken:
        def committed(self, records, seconds):
            raise RuntimeError("boom")

    location = StoreLocation.from_url(sqlite_url)
    migrate(location)
    ledger = GroupCommitLedger(location.open(), observer=Broken())
    try:
        await ledger.record(_completed_record())
        await ledger.record(_completed_record())
        assert ledger.events_written == 4 and ledger.is_healthy()
    finally:
        ledger.close()
        ledger.app.close()


def _completed_record() -> RequestRecord:
    record = RequestRecord.admit(uuid.uuid4(), call_type="chat", key_hash="k", end_user="", model_group="m",
                                 stream=False)
    record.complete(deployment_id="d", provider="mock", provider_model="m", usage=Usage(3, 4),
                    cost=Decimal("0.000011"), price_source="test", latency_ms=1.0)
    return record
