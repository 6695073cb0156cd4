"""The proxy app served by uvicorn in a background thread, with extra routers included.

For routes that `api.app.create_app` does not include yet; the test reads the ledger
through `server.container`.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any
from uuid import UUID

import uvicorn
from fastapi import APIRouter

from moneta.api.app import create_app
from moneta.bootstrap import build
from moneta.infrastructure.config_loader import parse_config
from tests.live_server import free_port


class InProcessGateway:
    def __init__(self, config: dict[str, Any], workdir: Path, routers: list[APIRouter]) -> None:
        settings = config.setdefault("general_settings", {})
        settings.setdefault("database_url", f"sqlite:///{workdir / 'ledger.db'}")
        self.container = build(parse_config(config, {}), {}, migrate=True)
        app = create_app(self.container)
        for router in routers:
            app.include_router(router)
        self.port = free_port()
        self._server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def events(self, request_id: str) -> list[Any]:
        """The request's ledger events, oldest first."""
        return list(self.container.event_store.events.get(UUID(request_id)))

    def record(self, request_id: str) -> Any:
        return self.container.event_store.repository.get(UUID(request_id))

    def __enter__(self) -> "InProcessGateway":
        self._thread.start()
        deadline = time.monotonic() + 15
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the in-process gateway did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.should_exit = True
        self._thread.join(15)
