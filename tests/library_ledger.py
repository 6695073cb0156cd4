"""The library's container over a ledger of the test's own, and what that ledger holds."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from moneta import bootstrap
from moneta.infrastructure.config_loader import parse_config


def library_over(tmp_path: Path, monkeypatch: Any) -> bootstrap.Container:
    """`moneta.completion`, `moneta.Router`, ... record in `tmp_path/ledger.db` for this test."""
    monkeypatch.delenv("REDIS_URL", raising=False)
    config = parse_config({"general_settings": {"database_url": f"sqlite:///{tmp_path / 'ledger.db'}"}}, {})
    container = bootstrap.build(config, {}, migrate=True)
    monkeypatch.setattr(bootstrap, "_library", container)
    return container


def ledger_events(container: bootstrap.Container) -> list[Any]:
    app = container.event_store
    notifications = app.recorder.select_notifications(start=1, limit=100_000)
    return [app.mapper.to_domain_event(n) for n in notifications]
