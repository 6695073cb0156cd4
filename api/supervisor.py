"""What `moneta serve` runs: the HTTP workers, one read side beside them, and how they all end.

- One worker runs uvicorn in this process; N workers run under uvicorn's `Multiprocess`.
- The read side is a child process (`moneta projections run`), restarted with backoff when it dies.
- SIGTERM or SIGINT: the read side is stopped at once, the workers stop accepting connections
  and let requests in flight finish for up to the grace period; then the app's lifespan closes
  the ledger (flushing the group commit) and `moneta serve` exits with status 0.
- Children die with `moneta serve` whatever ends it (see `lifeline`), `kill -9` included.
- Every connection is held to the configured `ConnectionLimits` (see `http_protocol`).
"""
from __future__ import annotations

import contextlib
import functools
import logging
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import uvicorn
from fastapi import FastAPI
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess

from moneta.api.http_protocol import LimitedHttpToolsProtocol
from moneta.api.lifeline import die_with_parent
from moneta.api.websocket_protocol import DenialAwareWebSocketProtocol
from moneta.application.config import ConnectionLimits

log = logging.getLogger("moneta.serve")


def serve(*, host: str, port: int, workers: int, log_level: str, access_log: bool, grace_period_s: float,
          limits: ConnectionLimits, read_side: list[str]) -> None:
    """Runs until SIGTERM or SIGINT, then drains; returns once every child has ended. The caller
    has put this process's pid in the environment, under `lifeline.PARENT_PID`."""
    app = "moneta.api.supervisor:worker_app" if workers > 1 else "moneta.api.server:app_from_environment"
    # The protocol, with its limits bound, reaches N workers pickled inside the config. WebSockets
    # (the Realtime API) go to uvicorn's sans-I/O protocol over the `websockets` library; the HTTP
    # protocol's deadline ends with the upgrade request, so its timer cannot cut a WebSocket.
    protocol = functools.partial(LimitedHttpToolsProtocol, limits=limits)
    config = uvicorn.Config(app, factory=True, host=host, port=port, workers=workers, loop="uvloop",
                            http=protocol, ws=DenialAwareWebSocketProtocol,
                            timeout_keep_alive=limits.keep_alive_timeout_s,
                            access_log=access_log, log_level=log_level,
                            timeout_graceful_shutdown=grace_period_s)  # type: ignore[arg-type]
    projections = Supervised("read side", read_side)
    if workers > 1:
        _serve_in_workers(config, projections)
    else:
        _serve_here(config, projections)


def _serve_here(config: uvicorn.Config, projections: "Supervised") -> None:
    server = _Server(config, on_stop=projections.stop_soon)
    with projections.running():
        server.run()


def _serve_in_workers(config: uvicorn.Config, projections: "Supervised") -> None:
    # Multiprocess starts and restarts the workers from this thread, the main one: their
    # parent-death signal holds until `moneta serve` itself ends.
    supervisor = _Multiprocess(config, sockets=[config.bind_socket()], on_stop=projections.stop_soon)
    with projections.running():
        supervisor.run()
    if any(worker.exitcode == STARTUP_FAILURE for worker in supervisor.processes):
        sys.exit(STARTUP_FAILURE)


def worker_app() -> FastAPI:
    """The app factory of each worker process (`--workers` > 1): the worker dies with `moneta serve`."""
    from moneta.api.server import app_from_environment
    from moneta.bootstrap import environment

    die_with_parent(environment())
    return app_from_environment()


class _Server(uvicorn.Server):
    """uvicorn in this process; once a stop signal has arrived, the read side is stopped too.

    uvicorn installs its signal handlers only while it serves, and afterwards re-raises the signal
    it caught: the handlers installed here catch a signal that comes before serving starts, and
    the re-raise, so that `moneta serve` outlives uvicorn to stop its children and exits with 0."""

    def __init__(self, config: uvicorn.Config, on_stop: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_stop = on_stop
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self.handle_exit)

    async def on_tick(self, counter: int) -> bool:
        # On the event loop, every 0.1 s: `on_stop` takes locks, which a signal handler must not.
        should_exit = await super().on_tick(counter)
        if should_exit:
            self._on_stop()
        return should_exit


class _Multiprocess(Multiprocess):
    """uvicorn's supervisor of N workers; a stop signal also stops the read side."""

    def __init__(self, config: uvicorn.Config, sockets: list, on_stop: Callable[[], None]) -> None:
        super().__init__(config, sockets)
        self._on_stop = on_stop

    def handle_int(self) -> None:
        self._on_stop()
        super().handle_int()

    def handle_term(self) -> None:
        self._on_stop()
        super().handle_term()


@dataclass
class Backoff:
    """Delays between restarts: `first`, doubling up to `longest`; back to `first` once the process
    has run `healthy_after` seconds."""

    first: float = 0.5
    longest: float = 30.0
    healthy_after: float = 60.0
    _next: float = field(init=False)

    def __post_init__(self) -> None:
        self._next = self.first

    def delay(self, ran_for: float) -> float:
        """How long to wait before restarting a process that ran for `ran_for` seconds."""
        if ran_for >= self.healthy_after:
            self._next = self.first
        delay = self._next
        self._next = min(delay * 2, self.longest)
        return delay


class Supervised:
    """A child process kept running by a thread of its own: restarted with backoff when it ends
    unasked, terminated on request. The thread starts every instance of the child, so it outlives
    them (the kernel's parent-death signal follows the thread that started a child)."""

    def __init__(self, name: str, command: list[str], backoff: Backoff | None = None) -> None:
        self.name = name
        self.command = command
        self.backoff = backoff or Backoff()
        self._stopping = threading.Event()
        self._lock = threading.Lock()  # orders a start against a stop
        self._process: subprocess.Popen | None = None
        self._thread = threading.Thread(target=self._supervise, name=f"moneta-supervise-{name}", daemon=True)

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        self._thread.start()
        try:
            yield
        finally:
            self.stop()

    def stop_soon(self) -> None:
        """Asks the child to stop (SIGTERM) and not to come back; returns at once."""
        with self._lock:
            self._stopping.set()
            if self._process is not None:
                self._process.terminate()

    def stop(self, timeout: float = 10.0) -> None:
        """Stops the child, SIGKILLing it if it has not ended within `timeout` seconds."""
        self.stop_soon()
        self._thread.join(timeout)
        if self._thread.is_alive() and self._process is not None:
            log.warning("%s (pid %d) did not stop within %.0f s: killing it", self.name, self._process.pid, timeout)
            self._process.kill()
            self._thread.join()

    def _supervise(self) -> None:
        while (process := self._start()) is not None:
            started = time.monotonic()
            status = process.wait()
            if self._stopping.is_set():
                return
            ran_for = time.monotonic() - started
            delay = self.backoff.delay(ran_for)
            log.error("%s (pid %d) ended (%s) after %.1f s; restarting it in %.1f s",
                      self.name, process.pid, _describe(status), ran_for, delay)
            if self._stopping.wait(delay):
                return

    def _start(self) -> subprocess.Popen | None:
        with self._lock:
            if self._stopping.is_set():
                return None
            self._process = subprocess.Popen(self.command)
            log.info("%s started (pid %d)", self.name, self._process.pid)
            return self._process


def _describe(status: int) -> str:
    if status >= 0:
        return f"exit status {status}"
    with contextlib.suppress(ValueError):  # real-time signals have no name
        return f"killed by {signal.Signals(-status).name}"
    return f"killed by signal {-status}"


def read_side_command(config_path: str | None) -> list[str]:
    command = [sys.executable, "-m", "moneta.api.cli", "projections", "run"]
    return [*command, "--config", config_path] if config_path else command
