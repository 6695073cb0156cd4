"""The real proxy as a subprocess on loopback (`moneta serve`), for end-to-end tests."""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import yaml


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LiveServer:
    """`with LiveServer(config, tmp_path) as server:` then `server.base_url`, `server.kill()`."""

    def __init__(self, config: dict[str, Any], workdir: Path, env: dict[str, str] | None = None,
                 workers: int = 1, args: list[str] | None = None) -> None:
        self.config_path = workdir / f"config-{free_port()}.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.workdir = workdir
        self.env = env or {}
        self.workers = workers
        self.args = args or []
        self.port = 0
        self.process: subprocess.Popen | None = None
        self.log_path = workdir / "server.log"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "LiveServer":
        self.port = free_port()
        env = {**os.environ, **self.env}
        env.pop("MONETA_CONFIG", None)
        command = [sys.executable, "-m", "moneta.api.cli", "serve", "--config", str(self.config_path),
                   "--port", str(self.port), "--workers", str(self.workers), "--log-level", "warning", *self.args]
        self.process = subprocess.Popen(command, cwd=self.workdir, env=env, stdout=open(self.log_path, "ab"),
                                        stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self._wait_ready()
        except BaseException:  # `with` calls no __exit__ when __enter__ fails: no server left behind
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"moneta serve exited with {self.process.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.base_url + "/health/liveliness", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"moneta serve did not start in {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL the whole process group: no shutdown hooks run."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        """SIGTERM to `moneta serve` alone, which stops its children; then SIGKILL whatever is left
        of its process group, so that no test leaves a process behind."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def __enter__(self) -> "LiveServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
