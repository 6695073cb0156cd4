"""askii: the rounding rule, the rate in force at a moment, rate changes through the route, the CLI
and the library, and every settled call recording its askii and the rate it used."""
from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

import moneta
from moneta import bootstrap
from moneta.application.askii import AskiiExchange
from moneta.domain.askii import AskiiRates, InvalidAskiiValue, RateBook, RateChange, to_askii, valid_rate
from moneta.domain.request_record import RequestRecord
from moneta.domain.usage import Usage
from moneta.infrastructure.event_store import StoreLocation
from moneta.projections import spend_log
from tests import services
from tests.ledger_world import World
from tests.library_ledger import ledger_events, library_over
from tests.live_server import LiveServer

MASTER = "sk-master-askii-0001"
ADMIN = {"Authorization": f"Bearer {MASTER}"}
CONFIG_RATE = Decimal(800)
# "hi" to the mock, max_tokens 8: 8 prompt and 8 completion tokens at $1 and $2 per million.
CALL_COST = Decimal("0.000024")
CHAT = {"model": "m1", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


# -- the rounding rule -----------------------------------------------------------------------------

@pytest.mark.parametrize("usd, askii", [
    ("0.0000000005", "0.000000"),  # exactly half a micro-askii: to the even neighbour, 0
    ("0.0000000015", "0.000002"),  # half: up to the even 2
    ("0.0000000025", "0.000002"),  # half: down to the even 2
    ("0.0000000035", "0.000004"),
    ("0.00000000050001", "0.000001"),  # above half: up
    ("0.00000000049999", "0.000000"),  # below half: down
    ("-0.0000000025", "-0.000002"),
])
def test_askii_is_rounded_half_even_to_six_places(usd: str, askii: str) -> None:
    assert str(to_askii(Decimal(usd), Decimal(1000))) == askii


def test_askii_always_has_six_places_and_is_exact_for_big_and_tiny_amounts() -> None:
    assert str(to_askii(Decimal(1), Decimal(1000))) == "1000.000000"
    assert str(to_askii(CALL_COST, Decimal(1200))) == "0.028800"
    big = Decimal("123456789012345678901234567890.123456789")  # beyond the default 28-digit context
    assert str(to_askii(big, Decimal("1000.5"))) == "123518517406851851740685185174068.518517"
    half = Decimal("123456789012345678901234567890.0000000025")  # a half micro-askii, 43 digits in
    assert str(to_askii(half, Decimal(1000))) == "123456789012345678901234567890000.000002"
    assert str(to_askii(Decimal("1E-30"), Decimal(1000))) == "0.000000"
    assert to_askii(Decimal("0.1"), Decimal("1234.567890123456789")) == Decimal("123.456789")
    with pytest.raises(InvalidAskiiValue):
        to_askii(Decimal("1E+200"), Decimal(1000))  # no amount of askii that large


@pytest.mark.parametrize("value", [0, -1, "0", "-5", "NaN", "Infinity", "abc", "", True, None, [1], "1e16",
                                   "0.0000000000000000001"])
def test_a_rate_must_be_a_finite_number_above_zero(value: Any) -> None:
    with pytest.raises(InvalidAskiiValue) as refused:
        valid_rate(value)
    assert refused.value.param == "askii_per_usd"


def test_a_rate_is_read_exactly_from_a_number_or_its_text() -> None:
    assert valid_rate("1200") == Decimal(1200) and valid_rate(1200) == Decimal(1200)
    assert valid_rate(" 0.1 ") == Decimal("0.1") and valid_rate(0.1) == Decimal("0.1")  # a float by its text
    assert valid_rate(Decimal("1234.567890123456789")) == Decimal("1234.567890123456789")


# -- the rate in force at a moment -----------------------------------------------------------------

def test_the_rate_at_a_moment_changes_at_each_effective_from_inclusive() -> None:
    later = T0 + timedelta(days=1)
    book = RateBook(Decimal(1000), [RateChange(Decimal(1500), later, "cli"), RateChange(Decimal(1200), T0, "cli")])
    assert book.rate_at(T0 - timedelta(microseconds=1)) == Decimal(1000)
    assert book.rate_at(T0) == Decimal(1200)
    assert book.rate_at(later - timedelta(microseconds=1)) == Decimal(1200)
    assert book.rate_at(later) == Decimal(1500) and book.rate_at(later + timedelta(days=365)) == Decimal(1500)
    assert book.rate_at(T0.replace(tzinfo=None)) == Decimal(1200)  # naive is UTC
    assert book.rate_at(T0.astimezone(timezone_plus(2))) == Decimal(1200)  # the same moment elsewhere
    assert book.period_at(T0 + timedelta(hours=1)) == (Decimal(1200), T0, later)
    assert book.period_at(T0 - timedelta(hours=1)) == (Decimal(1000), None, T0)
    assert book.convert(Decimal("0.5"), later) == Decimal("750.000000")


def timezone_plus(hours: int) -> Any:
    from datetime import timezone

    return timezone(timedelta(hours=hours))


def test_of_two_changes_from_the_same_moment_the_later_recorded_wins() -> None:
    rates = AskiiRates.open()
    rates.set_rate("1100", T0, "master_key", now=T0)
    rates.set_rate("1300", T0, "cli", now=T0)
    assert RateBook(Decimal(1000), rates.changes).rate_at(T0) == Decimal(1300)


def test_a_change_may_not_take_effect_in_the_past() -> None:
    rates = AskiiRates.open()
    with pytest.raises(InvalidAskiiValue) as refused:
        rates.set_rate("1200", T0 - timedelta(seconds=6), "cli", now=T0)
    assert refused.value.param == "effective_from"
    change = rates.set_rate("1200", T0 - timedelta(seconds=4), "cli", now=T0)  # clock skew is tolerated
    assert change.rate == Decimal(1200) and change.actor == "cli"
    assert rates.set_rate(1250, None, "cli", now=T0).effective_from == T0  # default: now


def test_the_exchange_remembers_the_rate_until_the_next_change_takes_effect() -> None:
    exchange = AskiiExchange(Decimal(1000))
    exchange.book = RateBook(Decimal(1000), [RateChange(Decimal(2000), T0, "cli")])
    assert exchange.settle(Decimal(1), T0 - timedelta(microseconds=1)) == (Decimal("1000.000000"), Decimal(1000))
    assert exchange.settle(Decimal(1), T0) == (Decimal("2000.000000"), Decimal(2000))  # the remembered period ended
    assert exchange.rate_at(T0 - timedelta(days=1)) == Decimal(1000)
    exchange.book = RateBook(Decimal(1000), [RateChange(Decimal(3000), T0 - timedelta(days=2), "cli")])
    assert exchange.rate_at(T0 - timedelta(days=1)) == Decimal(3000)  # a new book is read, not the old period


# -- the ledger: rate changes recorded, read back by another process, askii in the spend log --------

def test_a_change_recorded_by_one_exchange_is_read_by_another(tmp_path: Path) -> None:
    location = StoreLocation.from_url(f"sqlite:///{tmp_path / 'ledger.db'}")
    with bootstrap.askii_exchange(_config(location), writing=True) as writer:
        change = writer.set_rate("1234.5", datetime.now(UTC) + timedelta(hours=1), "cli")
        with bootstrap.askii_exchange(_config(location), writing=False) as reader:
            assert reader.book.changes == (change,) and reader.book.default == Decimal(1000)
            assert reader.rate_at(change.effective_from) == Decimal("1234.5")
            assert reader.rate_at(change.effective_from - timedelta(seconds=1)) == Decimal(1000)


async def test_the_library_exchange_rereads_the_rates_beside_a_settling_call(tmp_path: Path) -> None:
    location = StoreLocation.from_url(f"sqlite:///{tmp_path / 'ledger.db'}")
    with bootstrap.askii_exchange(_config(location), writing=True) as writer, \
            bootstrap.askii_exchange(_config(location), writing=False) as library:
        library.lazy_refresh_s = 0.0
        writer.set_rate("4321", datetime.now(UTC), "cli")
        assert library.settle(Decimal(1), datetime.now(UTC))[1] == Decimal(1000)  # not waiting for the read
        deadline = time.monotonic() + 5
        while library.settle(Decimal(1), datetime.now(UTC))[1] != Decimal(4321):
            assert time.monotonic() < deadline, "the rates were not read again"
            await asyncio.sleep(0.01)


def _config(location: StoreLocation) -> Any:
    from moneta.infrastructure.config_loader import parse_config

    return parse_config({"general_settings": {"database_url": f"sqlite:///{location.sqlite_path}"}}, {})


def test_the_spend_log_shows_each_calls_askii_exactly(world: World) -> None:
    before_askii = world.completed(Decimal("0.5"))  # settled before askii existed: no askii
    record = world.admit()
    record.complete(deployment_id="d", provider="openai", provider_model="gpt-4o-mini", usage=Usage(10, 5),
                    cost=Decimal("0.000024"), price_source="genai-prices", latency_ms=1.0,
                    askii=Decimal("0.028800"), askii_rate=Decimal(1200))
    world.ledger.record_blocking(record, timeout=10)
    world.runner.catch_up()
    rows = {row["request_id"]: row for row in world.queries.spend_logs(page_size=10).rows}
    assert rows[str(record.id)]["askii"] == "0.028800"
    assert rows[str(before_askii.id)]["askii"] is None


def test_an_older_spend_log_gains_the_askii_column(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    old = spend_log.DDL[0].replace(",\n        askii {money}", "").format(money="TEXT", timestamp="TEXT", json="TEXT")
    assert "askii" not in old
    with sqlite3.connect(path) as conn:
        conn.execute(old)
    world = World(f"sqlite:///{path}")
    try:
        with world.store.reading() as cur:
            assert "askii" in cur.columns("spend_logs")
    finally:
        world.close()


# -- the proxy: the route, the settled calls, the CLI -----------------------------------------------

def _server_config() -> dict[str, Any]:
    return {"model_list": [{"model_name": "m1", "litellm_params": {"model": "mock/mock-gpt"}}],
            "general_settings": {"master_key": MASTER},
            "moneta_settings": {"askii_per_usd": int(CONFIG_RATE)}}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """Two workers on a Postgres ledger: a change made through one reaches the other."""
    url = services.create_database()
    try:
        with LiveServer(_server_config(), tmp_path_factory.mktemp("askii"), env={"DATABASE_URL": url},
                        workers=2) as live:
            live.ledger_url = url  # type: ignore[attr-defined]
            yield live
    finally:
        services.drop_database(url)


@pytest.fixture(scope="module")
def ledger(server: LiveServer) -> Iterator[Any]:
    app = StoreLocation.from_url(server.ledger_url).open()  # type: ignore[attr-defined]
    yield app
    app.close()


@pytest.fixture
def api(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        yield client


def settled(ledger: Any, request_id: str) -> tuple[RequestRecord.Admitted, RequestRecord.Completed]:
    events = list(ledger.events.get(uuid.UUID(request_id)))
    admitted, completed = events[0], events[-1]
    assert isinstance(admitted, RequestRecord.Admitted) and isinstance(completed, RequestRecord.Completed)
    return admitted, completed


def spend_log_askii(api: httpx.Client, request_id: str) -> str | None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        rows = api.get("/spend/logs", headers=ADMIN, params={"request_id": request_id}).json()
        if rows:
            return rows[0]["askii"]
        time.sleep(0.05)
    raise AssertionError(f"{request_id} never reached the spend log")


def set_rate(api: httpx.Client, body: dict[str, Any], headers: dict[str, str] = ADMIN) -> httpx.Response:
    return api.post("/moneta/askii/rate", headers=headers, json=body)


def sdk_call(client: openai.OpenAI, **extra: Any) -> str:
    raw = client.chat.completions.with_raw_response.create(**CHAT, **extra)
    reply = raw.parse()
    if extra.get("stream"):
        for _ in reply:
            pass
    return raw.headers["x-request-id"]


def until_settled_at(rate: Decimal, call: Any, ledger: Any) -> str:
    """Calls until one settles at `rate` (the worker that did not take the change reads it within
    about a second); returns its request id."""
    deadline = time.monotonic() + 10
    while True:
        request_id = call()
        if settled(ledger, request_id)[1].askii_rate == rate:
            return request_id
        assert time.monotonic() < deadline, f"no call settled at {rate}"


def test_a_rate_change_through_the_route_settles_the_next_calls_and_leaves_earlier_ones(
        server: LiveServer, api: httpx.Client, ledger: Any) -> None:
    client = openai.OpenAI(base_url=server.base_url + "/v1", api_key=MASTER, max_retries=0)
    before = sdk_call(client)
    _, was = settled(ledger, before)
    assert was.askii == to_askii(CALL_COST, was.askii_rate) and was.cost == CALL_COST

    new_rate = was.askii_rate + 400
    answer = set_rate(api, {"askii_per_usd": str(new_rate)})
    assert answer.status_code == 200, answer.text
    shown = answer.json()
    assert shown["askii_per_usd"] == str(new_rate) and shown["actor"] == "master_key"
    assert datetime.fromisoformat(shown["effective_from"]) <= datetime.now(UTC)
    assert api.get("/moneta/askii/rate", headers=ADMIN).json()["askii_per_usd"] == str(new_rate)

    after = until_settled_at(new_rate, lambda: sdk_call(client), ledger)
    _, now = settled(ledger, after)
    assert now.askii == to_askii(CALL_COST, new_rate) and now.askii_rate == new_rate
    streamed = until_settled_at(new_rate, lambda: sdk_call(client, stream=True,
                                                           stream_options={"include_usage": True}), ledger)
    _, stream_end = settled(ledger, streamed)
    assert stream_end.askii == to_askii(stream_end.cost, new_rate) and stream_end.cost > 0

    assert spend_log_askii(api, after) == str(to_askii(CALL_COST, new_rate))
    # The call settled before the change keeps the askii it was settled with, in the ledger and the log.
    assert settled(ledger, before)[1].askii == was.askii
    assert spend_log_askii(api, before) == str(was.askii)


def test_every_worker_settles_at_a_new_rate_within_moments(server: LiveServer, api: httpx.Client,
                                                           ledger: Any) -> None:
    rate = Decimal("1717.5")
    assert set_rate(api, {"askii_per_usd": float(rate)}).status_code == 200  # a JSON number
    instances, streak, deadline = set(), 0, time.monotonic() + 10
    while streak < 10 or len(instances) < 2:
        with httpx.Client(base_url=server.base_url, timeout=30) as fresh:  # a new connection: either worker
            request_id = fresh.post("/v1/chat/completions", headers=ADMIN, json=CHAT).headers["x-request-id"]
        admitted, completed = settled(ledger, request_id)
        streak = streak + 1 if completed.askii_rate == rate else 0
        if completed.askii_rate == rate:
            instances.add(admitted.instance)
        assert time.monotonic() < deadline, "the new rate did not reach every worker"
    assert completed.askii == to_askii(CALL_COST, rate)


def test_the_rates_show_the_default_and_the_history(api: httpx.Client) -> None:
    start = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0)
    answer = set_rate(api, {"askii_per_usd": 999, "effective_from": start.isoformat().replace("+00:00", "Z")})
    assert answer.status_code == 200, answer.text
    assert datetime.fromisoformat(answer.json()["effective_from"]) == start
    key = api.post("/key/generate", headers=ADMIN, json={}).json()["key"]
    rates = api.get("/moneta/askii/rate", headers={"Authorization": f"Bearer {key}"})  # any known caller
    assert rates.status_code == 200
    shown = rates.json()
    assert shown["default"] == str(CONFIG_RATE) and shown["askii_per_usd"] != "999"  # not in force yet
    future = [entry for entry in shown["history"] if entry["askii_per_usd"] == "999"]
    assert future and datetime.fromisoformat(future[-1]["effective_from"]) == start
    assert set(future[-1]) == {"askii_per_usd", "effective_from", "actor", "recorded_at"}


@pytest.mark.parametrize("body, param", [
    ({"askii_per_usd": -5}, "askii_per_usd"),
    ({"askii_per_usd": 0}, "askii_per_usd"),
    ({"askii_per_usd": "0.000"}, "askii_per_usd"),
    ({"askii_per_usd": "NaN"}, "askii_per_usd"),
    ({"askii_per_usd": "abc"}, "askii_per_usd"),
    ({"askii_per_usd": True}, "askii_per_usd"),
    ({}, "askii_per_usd"),
    ({"askii_per_usd": 1200, "effective_from": "2020-01-01T00:00:00Z"}, "effective_from"),
    ({"askii_per_usd": 1200, "effective_from": "tomorrow"}, "effective_from"),
    ({"askii_per_usd": 1200, "effective_from": 1767225600}, "effective_from"),
    ({"askii_per_usd": 1200, "rate": 1300}, "rate"),
])
def test_a_bad_change_is_refused_naming_the_field_and_records_nothing(api: httpx.Client, body: dict[str, Any],
                                                                      param: str) -> None:
    history = api.get("/moneta/askii/rate", headers=ADMIN).json()["history"]
    answer = set_rate(api, body)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert api.get("/moneta/askii/rate", headers=ADMIN).json()["history"] == history


def test_only_a_proxy_admin_may_change_the_rate(api: httpx.Client) -> None:
    made = api.post("/user/new", headers=ADMIN, json={"user_id": f"root-{uuid.uuid4().hex[:6]}",
                                                        "user_role": "proxy_admin"}).json()
    admin_user = {"Authorization": f"Bearer {made['key']}"}
    start = (datetime.now(UTC) + timedelta(days=40)).isoformat()
    answer = set_rate(api, {"askii_per_usd": "1111", "effective_from": start}, admin_user)
    assert answer.status_code == 200 and answer.json()["actor"] == f"user:{made['user_id']}"

    key = api.post("/key/generate", headers=ADMIN, json={}).json()["key"]
    viewer = api.post("/user/new", headers=ADMIN, json={"user_id": f"view-{uuid.uuid4().hex[:6]}",
                                                         "user_role": "proxy_admin_viewer"}).json()["key"]
    for caller, status in ((key, 403), (viewer, 403), ("sk-not-a-key", 401)):
        refused = set_rate(api, {"askii_per_usd": "5"}, {"Authorization": f"Bearer {caller}"})
        assert refused.status_code == status, refused.text
        assert set(refused.json()["error"]) == {"message", "type", "param", "code"}
    assert api.get("/moneta/askii/rate", headers={"Authorization": "Bearer sk-not-a-key"}).status_code == 401
    assert api.get("/moneta/askii/rate").status_code == 401


def moneta_cli(server: LiveServer, *args: str) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "DATABASE_URL": server.ledger_url}  # type: ignore[attr-defined]
    return subprocess.run([sys.executable, "-m", "moneta.api.cli", "askii", *args, "--config",
                           str(server.config_path)], capture_output=True, text=True, timeout=60, env=env)


def test_the_cli_records_a_change_that_the_server_shows(server: LiveServer, api: httpx.Client) -> None:
    start = (datetime.now(UTC) + timedelta(days=50)).replace(microsecond=0)
    result = moneta_cli(server, "set-rate", "2024.5", "--effective-from", start.isoformat())
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"askii rate 2024.5 per USD from {start.isoformat()} (recorded by cli)"
    history = api.get("/moneta/askii/rate", headers=ADMIN).json()["history"]
    assert {"askii_per_usd": "2024.5", "effective_from": start.isoformat(), "actor": "cli"}.items() \
        <= history[-1].items()

    converted = moneta_cli(server, "convert", "2", "--at", (start + timedelta(seconds=1)).isoformat())
    assert converted.returncode == 0 and converted.stdout.strip() == "4049.000000"
    listed = moneta_cli(server, "rates")
    assert listed.returncode == 0 and f"default: {CONFIG_RATE} askii per USD" in listed.stdout
    assert any(line.startswith(start.isoformat()) and "2024.5" in line and "cli" in line
               for line in listed.stdout.splitlines())

    for args, message in ((("set-rate", "abc"), "'askii_per_usd' must be a number"),
                          (("set-rate", "1200", "--effective-from", "2020-01-01T00:00:00Z"), "in the past")):
        refused = moneta_cli(server, *args)
        assert refused.returncode == 1 and message in refused.stderr and not refused.stdout
    assert api.get("/moneta/askii/rate", headers=ADMIN).json()["history"] == history


# -- the library ---------------------------------------------------------------------------------------

@pytest.fixture
def no_ledger(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATABASE_URL", "MONETA_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(bootstrap, "_library", None)


def test_without_a_ledger_the_library_converts_at_its_module_rate(no_ledger: None, monkeypatch: pytest.MonkeyPatch,
                                                                  tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    assert moneta.convert_to_askii("1.5") == Decimal("1500.000000")  # the default, 1000
    monkeypatch.setattr(moneta, "askii_per_usd", "1200")
    assert moneta.convert_to_askii(Decimal("0.000024")) == Decimal("0.028800")
    assert moneta.convert_to_askii(2) == Decimal("2400.000000")
    # A float is read by its text: 2.5e-09 USD is 2.5 micro-askii at 1000, exactly half, rounded to
    # the even 2; the float's binary value lies a little above 2.5e-09.
    monkeypatch.setattr(moneta, "askii_per_usd", 1000)
    assert moneta.convert_to_askii(2.5e-09) == Decimal("0.000002")
    assert moneta.convert_to_askii(Decimal(2.5e-09)) == Decimal("0.000003")
    for bad in (True, "abc", "NaN", None):
        with pytest.raises(ValueError):
            moneta.convert_to_askii(bad)
    monkeypatch.setattr(moneta, "askii_per_usd", 0)
    with pytest.raises(ValueError, match="moneta.askii_per_usd"):
        moneta.convert_to_askii(1)
    assert list(tmp_path.iterdir()) == []  # no ledger was created to convert


def test_with_its_ledger_the_library_uses_the_recorded_rates_and_records_askii(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MONETA_CONFIG", raising=False)
    container = library_over(tmp_path, monkeypatch)
    monkeypatch.setattr(moneta, "askii_per_usd", 1500)
    start = datetime.now(UTC) + timedelta(hours=1)
    container.askii.set_rate("2000", start, "test")
    assert moneta.convert_to_askii("1", at=start) == Decimal("2000.000000")
    assert moneta.convert_to_askii("1", at=start - timedelta(microseconds=1)) == Decimal("1500.000000")
    assert moneta.convert_to_askii("1", at=start.isoformat()) == Decimal("2000.000000")

    reply = moneta.completion(model="mock/demo", messages=[{"role": "user", "content": "hi"}], max_tokens=8)
    completed = [event for event in ledger_events(container) if isinstance(event, RequestRecord.Completed)
                 and str(event.originator_id) == reply._hidden_params["request_id"]]
    assert len(completed) == 1
    assert completed[0].askii_rate == Decimal(1500) and completed[0].askii == to_askii(completed[0].cost, Decimal(1500))
