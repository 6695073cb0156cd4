"""The audit hash chain: the read side seals every event, and `moneta audit verify` names the first
event altered, removed or inserted behind its back, on SQLite and on Postgres."""
from __future__ import annotations

import hashlib
import json
import sqlite3
import struct
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import psycopg
import pytest

from moneta.api.cli import main
from moneta.domain.audit_chain import GENESIS, event_digest, event_preimage, expand, runs, seal_hash, verify_chain
from moneta.infrastructure.ledger_scan import LedgerScan
from moneta.projections import quarantine, seals
from moneta.projections.status import read_status
from tests.ledger_world import World
from tests.live_server import LiveServer

MASTER = "sk-master-audit-0001"
ADMIN = {"Authorization": f"Bearer {MASTER}"}


class Chain:
    """A ledger, its sealing runner, and direct SQL on the events table (what an intruder does)."""

    def __init__(self, world: World, page_size: int = 4) -> None:
        self.world = world
        self.sealer = world.new_runner(world.store, name=seals.NAME, views=(seals,), page_size=page_size,
                                       skips_poison=False)
        self.sealer.create_tables()
        self.postgres = world.location.kind == "postgres"
        self.position = "notification_id" if self.postgres else "rowid"
        self.table = world.app.recorder.events_table_name

    def calls(self, count: int) -> None:
        for _ in range(count):
            self.world.completed(Decimal("0.001"))

    def seal(self) -> None:
        self.sealer.catch_up()

    def sql(self, statement: str, params: tuple = ()) -> list[tuple]:
        if self.postgres:
            with psycopg.connect(self.world.location.postgres_dsn, autocommit=True) as conn:
                cursor = conn.execute(statement.replace("?", "%s"), params)
                return cursor.fetchall() if cursor.description else []
        conn = sqlite3.connect(self.world.location.sqlite_path)
        try:
            rows = conn.execute(statement, params).fetchall()
            conn.commit()
            return rows
        finally:
            conn.close()

    def row(self, position: int) -> tuple:
        (row,) = self.sql(f"SELECT originator_id, originator_version, topic, state FROM {self.table}"
                          f" WHERE {self.position} = ?", (position,))
        return row

    def verify(self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str]:
        monkeypatch.setenv("DATABASE_URL", self.world.location.postgres_dsn or
                           f"sqlite:///{self.world.location.sqlite_path}")
        with pytest.raises(SystemExit) as exit_info:
            main(["audit", "verify", *args])
        return exit_info.value.code, capsys.readouterr().out


@pytest.fixture
def chain(world: World) -> Iterator[Chain]:
    yield Chain(world)


def test_the_construction_is_the_documented_one():
    originator, state = uuid.UUID(int=7), b'{"cost": "0.1"}'
    topic = "moneta.domain.request_record:RequestRecord.Completed"
    preimage = (struct.pack(">Q", 12) + originator.bytes + struct.pack(">Q", 3) + struct.pack(">I", len(topic))
                + topic.encode() + struct.pack(">I", len(state)) + state)
    assert event_preimage(12, originator.bytes, 3, topic.encode(), state) == preimage
    assert event_digest(12, originator, 3, topic, state) == hashlib.sha256(preimage).digest()
    # the lengths keep fields apart: moving a byte from the topic to the state changes the digest
    assert event_digest(12, originator, 3, "ab", b"c") != event_digest(12, originator, 3, "a", b"bc")
    assert runs([7, 8, 9, 12, 14, 15]) == "7-9,12,14-15" and expand("7-9,12,14-15") == [7, 8, 9, 12, 14, 15]


def test_an_untouched_ledger_verifies_and_later_events_are_not_sealed_yet(chain, monkeypatch, capsys):
    chain.calls(5)  # 10 events: seals of 4, 4 and 2
    chain.seal()
    code, out = chain.verify(monkeypatch, capsys)
    assert code == 0, out
    assert "the audit chain holds: 10 events in 3 seals" in out
    with chain.world.store.reading() as cur:
        head = seals.head(cur)
    assert (head.seq, head.last_position, head.total) == (3, 10, 10)
    assert f"head seal 3: last position 10, 10 events, hash {head.hash}" in out
    # the head's hash is what the documented construction gives, from the genesis
    previous = GENESIS
    for seal in seals.read_all(chain.world.store, head.seq):
        assert seal.previous == previous.hex()
        previous = seal_hash(seal.seq, previous, seal.sealed_at, seal.positions, seal.digests)
        assert previous.hex() == seal.hash
    chain.calls(1)
    code, out = chain.verify(monkeypatch, capsys, "--json")
    report = json.loads(out)
    assert code == 0 and report["holds"] and report["unsealed"] == 2 and report["head"]["hash"] == head.hash


def test_an_altered_event_is_named_by_its_position(chain, monkeypatch, capsys):
    chain.calls(5)
    chain.seal()
    originator, version, topic, state = chain.row(6)
    changed = bytes(state).replace(b"0.001", b"0.000")
    assert changed != bytes(state)
    chain.sql(f"UPDATE {chain.table} SET state = ? WHERE {chain.position} = ?", (changed, 6))
    code, out = chain.verify(monkeypatch, capsys)
    assert code == 1
    assert "the audit chain does NOT hold: 1 problem(s)" in out
    assert "altered: event 6 (stream" in out and "RequestRecord.Completed" in out and "sealed in seal 2" in out


def test_a_removed_event_is_named_by_its_position(chain, monkeypatch, capsys):
    chain.calls(5)
    chain.seal()
    chain.sql(f"DELETE FROM {chain.table} WHERE {chain.position} = ?", (3,))
    code, out = chain.verify(monkeypatch, capsys, "--json")
    report = json.loads(out)
    assert code == 1 and not report["holds"]
    assert report["problems"] == [{"kind": "removed", "position": 3, "seq": 1,
                                   "detail": "event 3, sealed in seal 1, is no longer in the ledger"}]


def test_an_event_inserted_where_the_chain_saw_none_is_named(chain, monkeypatch, capsys):
    chain.calls(3)
    # A gap the chain saw (on Postgres, a rolled-back insert leaves one in the sequence)
    kept = chain.row(4)
    chain.sql(f"DELETE FROM {chain.table} WHERE {chain.position} = ?", (4,))
    chain.calls(2)
    chain.seal()
    assert chain.verify(monkeypatch, capsys)[0] == 0  # the chain records what it saw: the gap
    originator, version, topic, state = kept
    chain.sql(f"INSERT INTO {chain.table} (originator_id, originator_version, topic, state, {chain.position})"
              " VALUES (?, ?, ?, ?, ?)", (originator, version, topic, state, 4))
    code, out = chain.verify(monkeypatch, capsys)
    assert code == 1
    assert "inserted: event 4 (stream" in out and "is not in the chain: it was inserted after seal 1 was made" in out


def test_an_edited_seal_and_a_rewritten_chain_are_caught(chain, monkeypatch, capsys):
    chain.calls(5)
    chain.seal()
    with chain.world.store.reading() as cur:
        head = seals.head(cur)
    chain.sql("UPDATE audit_seals SET positions = ? WHERE seq = ?", ("5-7,9", 2))
    code, out = chain.verify(monkeypatch, capsys)
    assert code == 1 and "seal_altered: seal 2 was altered" in out
    # One who rewrites the events and every seal after them leaves a chain that holds by itself,
    # but not the head hash copied elsewhere before
    chain.sql("DELETE FROM audit_seals")
    chain.sql("UPDATE projection_tracking SET position = 0 WHERE name = ?", (seals.NAME,))
    chain.sql(f"DELETE FROM {chain.table} WHERE {chain.position} = ?", (3,))
    chain.seal()
    assert chain.verify(monkeypatch, capsys)[0] == 0
    code, out = chain.verify(monkeypatch, capsys, "--expect", head.hash)
    assert code == 1 and f"head_unknown: the chain holds no seal with hash {head.hash}" in out


def test_a_failing_seal_page_is_retried_never_skipped_and_shows_as_lag(chain, monkeypatch, capsys):
    chain.calls(2)
    real = seals.apply_page
    failures = []

    def failing_once(cur, page):
        if not failures:
            failures.append(page.notifications[0].id)
            raise ValueError("a bug in the seal view")
        real(cur, page)

    monkeypatch.setattr(seals, "apply_page", failing_once)
    with pytest.raises(ValueError):
        chain.seal()
    statuses = {status.name: status for status in read_status(chain.world.app, chain.world.store)}
    assert statuses[seals.NAME].position == 0 and statuses[seals.NAME].lag_events == 4
    with chain.world.store.reading() as cur:
        assert quarantine.count(cur, seals.NAME) == 0
    chain.seal()
    assert chain.sealer.position() == 4
    assert chain.verify(monkeypatch, capsys)[0] == 0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    workdir = tmp_path_factory.mktemp("audit-head")
    config = {"model_list": [{"model_name": "m1", "litellm_params": {"model": "mock/mock-gpt"}}],
              "general_settings": {"master_key": MASTER}}
    with LiveServer(config, workdir, env={"DATABASE_URL": f"sqlite:///{workdir / 'ledger.db'}"}) as live:
        yield live


def _head(server: LiveServer, after: int = -1) -> dict:
    """The head seal once it covers more than `after` events and the whole ledger."""
    for _ in range(100):
        body = httpx.get(server.base_url + "/audit/head", headers=ADMIN, timeout=10).json()
        if body["count"] > after and body["unsealed"] == 0:
            return body
        time.sleep(0.05)
    raise AssertionError(f"the chain did not catch up: {body}")


def test_get_audit_head_follows_the_ledger(server):
    chat = {"model": "m1", "messages": [{"role": "user", "content": "hi"}]}
    assert httpx.post(server.base_url + "/v1/chat/completions", headers=ADMIN, json=chat, timeout=10).status_code == 200
    before = _head(server)
    assert before["seq"] >= 1 and before["count"] == before["last_position"] == before["ledger_position"]
    assert len(before["hash"]) == 64 and before["sealed_at"]
    assert httpx.post(server.base_url + "/v1/chat/completions", headers=ADMIN, json=chat, timeout=10).status_code == 200
    after = _head(server, before["count"])
    assert after["seq"] > before["seq"] and after["count"] == before["count"] + 2 and after["hash"] != before["hash"]
    readiness = httpx.get(server.base_url + "/health/readiness", timeout=10).json()
    assert readiness["audit_chain"]["status"] == "ok" and readiness["audit_chain"]["lag_events"] == 0


def test_get_audit_head_is_for_admins_only(server):
    key = httpx.post(server.base_url + "/key/generate", headers=ADMIN, json={}, timeout=10).json()["key"]
    response = httpx.get(server.base_url + "/audit/head", headers={"Authorization": f"Bearer {key}"}, timeout=10)
    assert response.status_code == 403 and response.json()["error"]["code"] == "not_allowed"


def test_verify_reads_the_ledger_of_the_config(server, tmp_path, monkeypatch, capsys):
    _head(server)
    config = tmp_path / "config.yaml"
    config.write_text(f"general_settings:\n  database_url: sqlite:///{Path(server.workdir) / 'ledger.db'}\n")
    monkeypatch.delenv("DATABASE_URL", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        main(["audit", "verify", "--config", str(config)])
    assert exit_info.value.code == 0
    assert "the audit chain holds" in capsys.readouterr().out


def test_pages_of_any_size_check_the_same(chain):
    """Scan pages and seal pages that do not line up with the seals still pair every event with its seal."""
    chain.calls(6)  # 12 events, seals of 4
    chain.seal()
    chain.sql(f"DELETE FROM {chain.table} WHERE {chain.position} = ?", (7,))
    scan = LedgerScan(chain.world.app, chain.world.location, page_size=3, fetchers=2)
    with chain.world.store.reading() as cur:
        head = seals.head(cur)
    report = verify_chain(head, seals.read_all(chain.world.store, head.seq, page_size=1), scan.preimages,
                          scan.count_after)
    assert [(problem.kind, problem.position, problem.seq) for problem in report.problems] == [("removed", 7, 2)]
    assert (report.seals, report.events, report.unsealed) == (3, 11, 0)
