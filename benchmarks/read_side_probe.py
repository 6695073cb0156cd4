"""Watches the gateway's read side during a run: its CPU against the gateway's, and its lag.

Processes are found by walking /proc from the `moneta serve` pid. The read side is the
descendant whose command line contains `projections run`. Every other descendant but
multiprocessing's resource tracker (uvicorn's, with several workers) is a gateway worker,
counted with the serve process.

Lag comes from sampling, every ~100 ms, the ledger head (the highest notification id) and the
projection position (the lowest `projection_tracking.position`) in one statement.
"""
from __future__ import annotations

import bisect
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- processes -------------------------------------------------------------------------------

def _stat_fields(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command name (field 3, the state, comes first)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and of its reaped children."""
    return sum(int(v) for v in _stat_fields(pid)[11:15]) / CLK_TCK


def tree_cpu_seconds(pid: int) -> float:
    """CPU of a process and of all its descendants, live or reaped."""
    return sum(cpu_seconds(p) for p in (pid, *descendants(pid)))


def cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                tree.setdefault(int(_stat_fields(int(entry.name))[1]), []).append(int(entry.name))
            except (FileNotFoundError, ProcessLookupError):
                pass  # exited while we walked
    return tree


def descendants(pid: int) -> list[int]:
    tree, found, todo = _children(), [], [pid]
    while todo:
        children = tree.get(todo.pop(), [])
        found += children
        todo += children
    return found


def _start_time(pid: int) -> int:
    return int(_stat_fields(pid)[19])


@dataclass(frozen=True)
class GatewayProcesses:
    serve: int
    workers: tuple[int, ...]
    read_side: int | None

    @classmethod
    def find(cls, serve_pid: int) -> GatewayProcesses:
        commands = {pid: cmdline(pid) for pid in descendants(serve_pid)}
        trackers = {pid for pid, command in commands.items() if "multiprocessing.resource_tracker" in command}
        read_side = _read_side(commands)
        excluded = trackers | ({read_side, *descendants(read_side)} if read_side else set())
        return cls(serve_pid, tuple(sorted(set(commands) - excluded)), read_side)

    def describe(self) -> dict[str, Any]:
        command = cmdline(self.read_side) if self.read_side else ""
        return {"serve": self.serve, "workers": list(self.workers), "read_side": self.read_side,
                "read_side_cmdline": command}

    def cpu(self) -> tuple[float, float | None]:
        """(gateway CPU seconds: serve + workers, read side CPU seconds or None)."""
        gateway = sum(cpu_seconds(pid) for pid in (self.serve, *self.workers))
        return gateway, cpu_seconds(self.read_side) if self.read_side else None


def _read_side(commands: dict[int, str]) -> int | None:
    candidates = [pid for pid, command in commands.items() if "projections run" in command]
    return min(candidates, key=_start_time) if candidates else None


# -- lag -------------------------------------------------------------------------------------

@dataclass
class Sample:
    t: float  # time.monotonic()
    head: int
    position: int


@dataclass
class LagReport:
    samples: int
    max_lag_events: int
    max_lag_s: float
    caught_up_after_s: float | None  # after the load stopped; None: not within the timeout


class LagSampler:
    """Samples (head, position) in a thread until stopped; `read` runs on that thread only."""

    def __init__(self, read: Callable[[], tuple[int, int]], interval_s: float = 0.1) -> None:
        self.read = read
        self.interval_s = interval_s
        self.samples: list[Sample] = []
        self.error: Exception | None = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lag-sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                t = time.monotonic()
                head, position = self.read()
                self.samples.append(Sample(t, head, position))
                self._stopping.wait(max(0.0, self.interval_s - (time.monotonic() - t)))
        except Exception as error:  # reported by stop()
            self.error = error

    def wait_caught_up(self, since: float, timeout_s: float) -> float | None:
        """Seconds from `since` to the first sample taken after it with the read side caught up."""
        deadline = time.monotonic() + timeout_s
        seen = 0
        while time.monotonic() < deadline:
            for sample in self.samples[seen:]:
                if sample.t >= since and sample.position >= sample.head:
                    return sample.t - since
            seen = len(self.samples)
            time.sleep(self.interval_s / 2)
        return None

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(10)
        if self.error is not None:
            raise RuntimeError(f"sampling the read side's lag failed: {self.error!r}") from self.error

    def report(self, caught_up_after_s: float | None) -> LagReport:
        return LagReport(samples=len(self.samples),
                         max_lag_events=max((s.head - s.position for s in self.samples), default=0),
                         max_lag_s=max(lag_seconds(self.samples), default=0.0),
                         caught_up_after_s=caught_up_after_s)


def lag_seconds(samples: list[Sample]) -> list[float]:
    """Per sample: 0 when caught up, else now - the time the head first reached the projected
    position (the view shows the ledger as it was then). Resolution: one sample interval."""
    times, heads = [s.t for s in samples], [s.head for s in samples]  # heads never decrease
    lags = []
    for s in samples:
        if s.position >= s.head:
            lags.append(0.0)
        else:
            lags.append(s.t - times[bisect.bisect_left(heads, s.position)])
    return lags
