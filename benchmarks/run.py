"""The gateway benchmark: wrk against a fixed-answer upstream, side by side in one run.

    .venv/bin/python benchmarks/run.py [--duration 10] [--ledger postgres|sqlite] [--litellm]

It starts `benchmarks/upstream.py`, a fresh ledger (a new Postgres database
`moneta_bench_<random>`, dropped at the end, or a SQLite file), `moneta serve --workers 1` on
it, the Python floor (`benchmarks/floor.py`) and, with `--litellm`, LiteLLM's proxy (its own
venv, see `litellm_proxy.py`), each its own process. wrk runs at 1 connection (1 thread) and
32 connections (2 threads) against each target in turn (upstream direct, floor, gateway,
LiteLLM), each after a warm-up; during the gateway's run at the most connections it samples
the read side's CPU and lag (`read_side_probe.py`). It then times single-aggregate `save()`
commits on the same ledger and checks that every 2xx wrk counted through the gateway is a
Completed event in the ledger. Prints a table and the targets, and writes a JSON summary to
`benchmarks/results/`.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import litellm_proxy  # siblings of this script (run as `python benchmarks/run.py`)
from read_side_probe import GatewayProcesses, LagSampler, cpu_seconds, tree_cpu_seconds

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
PYTHON = sys.executable
ADMIN_URL = os.environ.get("MONETA_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
MASTER_KEY = "sk-bench-master"
UPSTREAM_KEY = "sk-bench-upstream"
REQUEST_BODY = {"model": "bench", "messages": [{"role": "user", "content": "Say hello in five words."}]}
UPSTREAM_ANSWER = "Hello from the benchmark upstream."

# wrk: the POST body, and a done() hook that prints exact figures (microseconds, counts).
WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = %(body)s
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %(key)s"

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%%d,"duration_us":%%d,"bytes":%%d,"status":%%d,"connect":%%d,"read":%%d,' ..
    '"write":%%d,"timeout":%%d,"p50_us":%%d,"p90_us":%%d,"p99_us":%%d,"mean_us":%%.1f,"max_us":%%d}\\n',
    summary.requests, summary.duration, summary.bytes, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean, latency.max))
end
"""


# -- wrk -------------------------------------------------------------------------------------

@dataclass
class WrkResult:
    target: str
    connections: int
    threads: int
    duration_s: float
    requests: int  # responses wrk completed (any status)
    non_2xx: int
    socket_errors: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    cpu_ms_per_request: float | None = None  # CPU of the target's own processes / requests
    ledger_completed_delta: int | None = None

    @property
    def ok(self) -> int:
        return self.requests - self.non_2xx


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


def parse_wrk(output: str, target: str, connections: int, threads: int) -> WrkResult:
    """wrk's standard report (`--latency`), made exact by the done() hook's JSON line."""
    percentiles = {int(p): _ms(v) for p, v in re.findall(r"^\s+(50|90|99)%\s+(\S+)\s*$", output, re.M)}
    summary = re.search(r"^\s*(\d+) requests in ([\d.]+\w+),", output, re.M)
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.M)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if not (summary and rps and len(percentiles) == 3):
        raise RuntimeError(f"cannot parse wrk's output:\n{output}")
    socket = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    result = WrkResult(
        target=target, connections=connections, threads=threads, duration_s=_ms(summary.group(2)) / 1000,
        requests=int(summary.group(1)), non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(map(int, socket.groups())) if socket else 0, rps=float(rps.group(1)),
        p50_ms=percentiles[50], p90_ms=percentiles[90], p99_ms=percentiles[99], mean_ms=0.0, max_ms=0.0,
    )
    exact = re.search(r"^WRK_JSON (\{.*\})\s*$", output, re.M)
    if exact:
        data = json.loads(exact.group(1))
        result.requests, result.non_2xx = data["requests"], data["status"]
        result.socket_errors = data["connect"] + data["read"] + data["write"] + data["timeout"]
        result.duration_s = data["duration_us"] / 1e6
        result.rps = data["requests"] / result.duration_s
        result.p50_ms, result.p90_ms, result.p99_ms = (data[k] / 1000 for k in ("p50_us", "p90_us", "p99_us"))
        result.mean_ms, result.max_ms = data["mean_us"] / 1000, data["max_us"] / 1000
    return result


def run_wrk(url: str, script: Path, connections: int, duration: float, target: str,
            cpus: set[int] | None) -> WrkResult:
    threads = 1 if connections == 1 else 2
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration))}s", "--latency",
               "--timeout", "10s", "-s", str(script), url]
    preexec = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
    completed = subprocess.run(command, capture_output=True, text=True, check=True, preexec_fn=preexec)
    return parse_wrk(completed.stdout, target, connections, threads)


# -- processes -------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_group(process: subprocess.Popen, sig: int = signal.SIGTERM, wait: float = 20) -> None:
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, sig)
        process.wait(wait)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
    except ProcessLookupError:
        pass


def pin(cpus: set[int] | None) -> Callable[[], None] | None:
    return (lambda: os.sched_setaffinity(0, cpus)) if cpus else None


def start_upstream(cpus: set[int] | None) -> tuple[subprocess.Popen, int]:
    command = [PYTHON, str(ROOT / "benchmarks" / "upstream.py"), "--port", "0"]
    for cpu in sorted(cpus or ()):
        command += ["--cpu", str(cpu)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, start_new_session=True)
    line = process.stdout.readline()  # type: ignore[union-attr]
    if not line.startswith("READY "):
        stop_group(process)
        raise RuntimeError(f"the upstream did not start: {line!r}")
    return process, int(line.split()[1])


@dataclass
class Server:
    """A target started by the benchmark, in its own process group, logging to `log`."""

    name: str
    process: subprocess.Popen
    log: Path
    url: str  # its chat completions URL

    @classmethod
    def start(cls, name: str, command: list[str], port: int, workdir: Path, cpus: set[int] | None,
              running: contextlib.ExitStack, env: dict[str, str] | None = None) -> Server:
        """Starts `command`, to be stopped (its whole process group) when `running` closes."""
        log = workdir / f"{name}.log"
        with open(log, "wb") as out:
            process = subprocess.Popen(command, cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT,
                                       start_new_session=True, preexec_fn=pin(cpus))
        running.callback(stop_group, process)
        return cls(name, process, log, f"http://127.0.0.1:{port}/v1/chat/completions")

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def wait_until(self, probe: Callable[[], Any], timeout: float) -> Any:
        """Calls `probe` until it returns without an HTTP or answer error; returns its result."""
        deadline, last_error = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                return probe()
            except (urllib.error.URLError, OSError, ValueError, KeyError) as error:
                last_error = error
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} did not answer within {timeout:g}s ({last_error!r}):\n{self.log_tail()}")

    def wait_answering(self, timeout: float) -> None:
        """Ready once a chat completion comes back 200 with the upstream's answer."""
        self.wait_until(lambda: check_answer(post_once(self.url)), timeout)


def post_once(url: str) -> dict[str, Any]:
    request = urllib.request.Request(url, data=json.dumps(REQUEST_BODY).encode(), method="POST",
                                     headers={"Content-Type": "application/json",
                                              "Authorization": f"Bearer {MASTER_KEY}"})
    with urllib.request.urlopen(request, timeout=10) as response:  # a non-2xx raises HTTPError
        return json.loads(response.read())


def check_answer(answer: dict[str, Any]) -> None:
    if answer["choices"][0]["message"]["content"] != UPSTREAM_ANSWER or answer["usage"]["total_tokens"] != 20:
        raise ValueError(f"not the upstream's answer: {answer}")


def start_gateway(config: Path, ledger: Ledger, workdir: Path, cpus: set[int] | None,
                  running: contextlib.ExitStack) -> Server:
    port = free_port()
    env = {**os.environ, "DATABASE_URL": ledger.url}
    env.pop("MONETA_CONFIG", None)
    moneta = shutil.which("moneta", path=str(Path(PYTHON).parent)) or "moneta"
    command = [moneta, "serve", "--config", str(config), "--workers", "1", "--port", str(port),
               "--log-level", "warning"]
    gateway = Server.start("gateway", command, port, workdir, cpus, running, env)
    readiness = f"http://127.0.0.1:{port}/health/readiness"
    gateway.wait_until(lambda: urllib.request.urlopen(readiness, timeout=2).close(), timeout=60)
    gateway.wait_answering(timeout=10)  # one Completed event: counted as the smoke request
    return gateway


def start_floor(upstream_url: str, workdir: Path, cpus: set[int] | None, running: contextlib.ExitStack) -> Server:
    port = free_port()
    command = [PYTHON, str(ROOT / "benchmarks" / "floor.py"), "--port", str(port), "--upstream", upstream_url]
    floor = Server.start("floor", command, port, workdir, cpus, running)
    floor.wait_answering(timeout=60)
    return floor


def start_litellm(config: Path, workdir: Path, cpus: set[int] | None, running: contextlib.ExitStack) -> Server:
    executable = litellm_proxy.ensure_installed()
    port = free_port()
    log_config = litellm_proxy.write_log_config(workdir / "litellm-logging.json")
    litellm = Server.start("litellm", litellm_proxy.command(executable, config, port, log_config), port, workdir,
                           cpus, running, litellm_proxy.environment(dict(os.environ)))
    litellm.wait_answering(timeout=180)  # its imports take a while
    return litellm


# -- the ledger ------------------------------------------------------------------------------

class Ledger:
    """A fresh ledger for this run: a new Postgres database, or a SQLite file in `workdir`."""

    def __init__(self, kind: str, workdir: Path) -> None:
        self.kind = kind
        if kind == "postgres":
            import psycopg

            self.name = f"moneta_bench_{uuid.uuid4().hex[:12]}"
            with psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
                conn.execute(f'CREATE DATABASE "{self.name}"')
            self.url = ADMIN_URL.rsplit("/", 1)[0] + f"/{self.name}"
            # The Postgres tables are named after the application (APP_NAME in event_store.py).
            self.events_table, self.notification_id = "moneta_events", "notification_id"
        else:
            self.name = str(workdir / "ledger.db")
            self.url = f"sqlite:///{self.name}"
            # eventsourcing's SQLite recorder always names its table stored_events; ids are rowids.
            self.events_table, self.notification_id = "stored_events", "rowid"

    def connect(self) -> Any:
        """A connection on which each statement sees the latest commits."""
        if self.kind == "postgres":
            import psycopg

            return psycopg.connect(self.url, autocommit=True)
        import sqlite3

        return sqlite3.connect(self.name, timeout=30, check_same_thread=False)

    def count_completed(self) -> int:
        with contextlib.closing(self.connect()) as conn:
            return conn.execute(f"SELECT count(*) FROM {self.events_table} WHERE topic LIKE '%Completed'").fetchone()[0]

    @contextlib.contextmanager
    def head_and_position(self) -> Iterator[Callable[[], tuple[int, int]]]:
        """A reader of (the ledger head, the slowest projection's position), in one statement."""
        sql = (f"SELECT (SELECT max({self.notification_id}) FROM {self.events_table}), "
               "(SELECT min(position) FROM projection_tracking)")
        with contextlib.closing(self.connect()) as conn:
            yield lambda: tuple(value or 0 for value in conn.execute(sql).fetchone())  # type: ignore[return-value]

    def drop(self) -> None:
        if self.kind == "postgres":
            import psycopg

            with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


def commit_latency(url: str, commits: int) -> dict[str, float]:
    """One `app.save()` of one RequestRecord (Admitted + Completed), one at a time: one commit each."""
    from moneta.domain.request_record import RequestRecord
    from moneta.domain.usage import Usage
    from moneta.infrastructure.event_store import StoreLocation

    app = StoreLocation.from_url(url).open()
    timings = []
    try:
        for i in range(commits + 20):
            record = RequestRecord.admit(uuid.uuid4(), call_type="chat", key_hash="bench", end_user="",
                                         model_group="bench", stream=False, decision={"plan": ["bench"]})
            record.complete(deployment_id="bench", provider="openai", provider_model="gpt-4o-mini",
                            usage=Usage(prompt_tokens=12, completion_tokens=8), cost=Decimal("0.0000066"),
                            price_source="config", latency_ms=0.5, finish_reason="stop")
            started = time.perf_counter()
            app.save(record)
            if i >= 20:  # the first saves warm the connection pool and caches
                timings.append((time.perf_counter() - started) * 1000)
    finally:
        app.close()
    timings.sort()
    return {"commits": commits, "p50_ms": _percentile(timings, 50), "p99_ms": _percentile(timings, 99),
            "mean_ms": statistics.fmean(timings), "saves_per_s": 1000 / statistics.fmean(timings)}


def _percentile(sorted_values: list[float], p: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(p / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[index]


# -- the run ---------------------------------------------------------------------------------

@dataclass
class Goal:
    """One target of the issue: what was measured, against what, and whether it was met."""

    name: str
    value: float | None  # None: not measured in this run
    unit: str  # "x" ratio, "ms", "s", "%" (value is a fraction), "req/s", "" (pass/fail)
    target: str
    met: bool | None


@dataclass
class Summary:
    ledger: str
    duration_s: float
    warmup_s: float
    pinning: str
    machine: dict[str, Any]
    runs: list[WrkResult] = field(default_factory=list)
    warmups: list[WrkResult] = field(default_factory=list)
    commit: dict[str, float] = field(default_factory=dict)
    ratios: dict[str, float] = field(default_factory=dict)
    read_side: dict[str, Any] = field(default_factory=dict)
    durability: dict[str, Any] = field(default_factory=dict)
    goals: list[Goal] = field(default_factory=list)


PINNINGS = {
    # name: (upstream CPUs, CPUs of the floor, gateway and LiteLLM, wrk CPUs); None = no pinning
    "none": (None, None, None),
    "split": ({1}, {0}, {1}),
    "upstream": ({1}, None, None),
}
READ_SIDE_CATCH_UP_TIMEOUT_S = 30.0


def write_config(path: Path, upstream_port: int) -> None:
    """One model on the upstream, in LiteLLM's format: read by the gateway and by LiteLLM."""
    import yaml

    config = {
        "model_list": [{
            "model_name": "bench",
            "litellm_params": {
                "model": "openai/gpt-4o-mini",
                "api_base": f"http://127.0.0.1:{upstream_port}/v1",
                "api_key": UPSTREAM_KEY,
                "input_cost_per_token": 0.00000015,
                "output_cost_per_token": 0.0000006,
            },
        }],
        "general_settings": {"master_key": MASTER_KEY},
    }
    path.write_text(yaml.safe_dump(config))


@dataclass
class Target:
    url: str
    cpu: Callable[[], float]  # CPU seconds of the target's own processes


def start_targets(args: argparse.Namespace, workdir: Path, ledger: Ledger, running: contextlib.ExitStack
                  ) -> tuple[dict[str, Target], Server, GatewayProcesses]:
    """Starts the upstream and every target, stopped when `running` closes; in table order."""
    up_cpus, server_cpus, _ = PINNINGS[args.pin]
    upstream, upstream_port = start_upstream(up_cpus)
    running.callback(stop_group, upstream)
    direct_url = f"http://127.0.0.1:{upstream_port}/v1/chat/completions"
    config = workdir / "config.yaml"
    write_config(config, upstream_port)
    floor = start_floor(direct_url, workdir, server_cpus, running)
    gateway = start_gateway(config, ledger, workdir, server_cpus, running)
    processes = GatewayProcesses.find(gateway.process.pid)
    targets = {"direct": Target(direct_url, lambda: cpu_seconds(upstream.pid)),
               "floor": Target(floor.url, lambda: tree_cpu_seconds(floor.process.pid)),
               "gateway": Target(gateway.url, lambda: processes.cpu()[0])}
    if args.litellm:
        litellm = start_litellm(config, workdir, server_cpus, running)
        targets["litellm"] = Target(litellm.url, lambda: tree_cpu_seconds(litellm.process.pid))
    return targets, gateway, processes


def run_target(name: str, target: Target, script: Path, connections: int, seconds: float,
               wrk_cpus: set[int] | None) -> WrkResult:
    before = target.cpu()
    result = run_wrk(target.url, script, connections, seconds, name, wrk_cpus)
    result.cpu_ms_per_request = (target.cpu() - before) * 1000 / max(1, result.requests)
    return result


def count_in_ledger(run: Callable[[], WrkResult], ledger: Ledger) -> WrkResult:
    before = ledger.count_completed()
    result = run()
    time.sleep(1.0)  # requests in flight when wrk stopped land (or not) now
    result.ledger_completed_delta = ledger.count_completed() - before
    return result


def watch_read_side(run: Callable[[], WrkResult], ledger: Ledger, processes: GatewayProcesses,
                    report: dict[str, Any]) -> WrkResult:
    """Runs `run` while sampling the read side's lag, until it has caught up; CPU over the same span."""
    gateway_before, read_before = processes.cpu()
    with ledger.head_and_position() as read:
        sampler = LagSampler(read)
        sampler.start()
        try:
            result = run()
            caught_up = sampler.wait_caught_up(time.monotonic(), READ_SIDE_CATCH_UP_TIMEOUT_S)
        finally:
            sampler.stop()
    gateway_after, read_after = processes.cpu()
    report.update(asdict(sampler.report(caught_up)), connections=result.connections,
                  sample_interval_s=sampler.interval_s, gateway_cpu_s=gateway_after - gateway_before)
    if read_before is not None and read_after is not None:
        report.update(cpu_s=read_after - read_before,
                      cpu_over_gateway=(read_after - read_before) / max(1e-9, gateway_after - gateway_before))
    return result


def measure(args: argparse.Namespace, summary: Summary, workdir: Path, ledger: Ledger) -> None:
    wrk_cpus = PINNINGS[args.pin][2]
    script = workdir / "post.lua"
    script.write_text(WRK_SCRIPT % {"body": json.dumps(json.dumps(REQUEST_BODY)), "key": MASTER_KEY})
    with contextlib.ExitStack() as running:
        targets, gateway, processes = start_targets(args, workdir, ledger, running)
        summary.durability["smoke_requests"] = 1
        summary.read_side["processes"] = processes.describe()
        loaded = max(args.connections)
        for connections in args.connections:
            for name, target in targets.items():
                for warm in (True, False):
                    seconds = args.warmup if warm else args.duration
                    run = functools.partial(run_target, name, target, script, connections, seconds, wrk_cpus)
                    if name == "gateway":
                        if not warm and connections == loaded:
                            run = functools.partial(watch_read_side, run, ledger, processes, summary.read_side)
                        run = functools.partial(count_in_ledger, run, ledger)
                    result = run()
                    (summary.warmups if warm else summary.runs).append(result)
                    if not warm:
                        print(f"  {name:8} c={connections:<3} {result.rps:9,.0f} req/s  "
                              f"p50 {result.p50_ms:7.3f} ms  p99 {result.p99_ms:7.3f} ms", file=sys.stderr)
                    gateway.check_alive()

        in_ledger_before_commits = ledger.count_completed()
        summary.commit = commit_latency(ledger.url, args.commits)
        summary.durability["ledger_completed_total"] = ledger.count_completed()
        summary.durability["ledger_completed_before_commit_test"] = in_ledger_before_commits
        errors = [line for line in gateway.log.read_text().splitlines() if "ERROR" in line or "Traceback" in line]
        summary.durability["gateway_log_errors"] = errors[:20]


# -- analysis and report ---------------------------------------------------------------------

def analyse(summary: Summary) -> None:
    by = {(r.target, r.connections): r for r in summary.runs}
    for (name, connections), other in by.items():
        gateway = by.get(("gateway", connections))
        if name != "gateway" and gateway is not None:
            summary.ratios[f"c{connections}_rps_gateway_over_{name}"] = gateway.rps / other.rps
            summary.ratios[f"c{connections}_p50_gateway_minus_{name}_ms"] = gateway.p50_ms - other.p50_ms
            summary.ratios[f"c{connections}_p99_gateway_minus_{name}_ms"] = gateway.p99_ms - other.p99_ms
    check_durability(summary)
    summary.goals = goals(summary, by)


def check_durability(summary: Summary) -> None:
    """Every 2xx wrk counted through the gateway must be a Completed event. The ledger may hold a
    few more: requests in flight when wrk stopped (at most one per connection)."""
    tagged = [(r, warm) for warm, runs in ((True, summary.warmups), (False, summary.runs)) for r in runs
              if r.target == "gateway"]
    gateway_runs = [r for r, _ in tagged]
    per_run = []
    for r, warm in tagged:
        delta = r.ledger_completed_delta or 0
        per_run.append({"connections": r.connections, "warmup": warm, "wrk_2xx": r.ok, "wrk_non_2xx": r.non_2xx,
                        "ledger_completed": delta, "extra_in_ledger": delta - r.ok,
                        "ok": r.ok <= delta <= r.ok + r.connections})
    total_ok = sum(r.ok for r in gateway_runs) + summary.durability.get("smoke_requests", 0)
    total_ledger = summary.durability.get("ledger_completed_before_commit_test", 0)
    summary.durability.update({
        "runs": per_run, "wrk_2xx_total": total_ok, "ledger_completed_from_gateway": total_ledger,
        "non_2xx_total": sum(r.non_2xx for r in gateway_runs),
        "socket_errors_total": sum(r.socket_errors for r in gateway_runs),
        "passed": all(p["ok"] for p in per_run) and total_ledger >= total_ok
        and sum(r.non_2xx for r in gateway_runs) == 0,
    })


def _goal(name: str, value: float | None, unit: str, target: str, test: Callable[[float], bool]) -> Goal:
    return Goal(name, value, unit, target, None if value is None else test(value))


def goals(summary: Summary, by: dict[tuple[str, int], WrkResult]) -> list[Goal]:
    ratios, commit_p50 = summary.ratios, summary.commit.get("p50_ms", 0.0)
    c32, c1_added = by.get(("gateway", 32)), ratios.get("c1_p50_gateway_minus_direct_ms")
    c32_cpu = c32.cpu_ms_per_request if c32 else None
    read_side = summary.read_side
    return [
        _goal("gateway / floor req/s, 32 conns", ratios.get("c32_rps_gateway_over_floor"), "x", ">= 0.6",
              lambda v: v >= 0.6),
        _goal("gateway / LiteLLM req/s, 32 conns", ratios.get("c32_rps_gateway_over_litellm"), "x", ">= 15",
              lambda v: v >= 15),
        _goal("gateway p50 - floor p50, 1 conn", ratios.get("c1_p50_gateway_minus_floor_ms"), "ms",
              f"<= {commit_p50 + 0.5:.3f} ms (1 commit p50 + 0.5)", lambda v: v <= commit_p50 + 0.5),
        _goal(f"read side CPU / gateway CPU, {read_side.get('connections')} conns", read_side.get("cpu_over_gateway"),
              "%", "<= 15%", lambda v: v <= 0.15),
        _goal("read side max lag", read_side.get("max_lag_s"), "s", "< 1 s", lambda v: v < 1.0),
        _goal("gateway req/s, 32 conns", c32.rps if c32 else None, "req/s", ">= 1,500", lambda v: v >= 1500),
        _goal("gateway p50 - direct p50, 1 conn", c1_added, "ms", "<= 2 ms", lambda v: v <= 2.0),
        _goal("gateway p50 - direct p50, 1 conn", c1_added, "ms",
              "<= gateway CPU/req at 32 conns + commit p50" + ("" if c32_cpu is None else
                                                               f" = {c32_cpu + commit_p50:.3f} ms"),
              lambda v: c32_cpu is not None and v <= c32_cpu + commit_p50),
        _goal("durability (every 2xx in the ledger)", float(summary.durability["passed"]), "", "pass",
              lambda v: bool(v)),
    ]


def _format(value: float | None, unit: str) -> str:
    if value is None:
        return "not measured"
    return {"x": f"{value:.2f}", "ms": f"{value:+.3f} ms", "s": f"{value:.2f} s", "%": f"{value:.0%}",
            "req/s": f"{value:,.0f} req/s", "": "pass" if value else "FAIL"}[unit]


def table(summary: Summary) -> list[str]:
    lines = [f"{'target':<9}{'conns':>6}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'gw/this':>10}{'gw-this p50':>13}"
             f"{'CPU/req':>10}"]
    order = {name: i for i, name in enumerate(("direct", "floor", "gateway", "litellm"))}
    for r in sorted(summary.runs, key=lambda r: (r.connections, order[r.target])):
        ratio = summary.ratios.get(f"c{r.connections}_rps_gateway_over_{r.target}")
        added = summary.ratios.get(f"c{r.connections}_p50_gateway_minus_{r.target}_ms")
        lines.append(f"{r.target:<9}{r.connections:>6}{r.rps:>10,.0f}{r.p50_ms:>9.3f}{r.p99_ms:>9.3f}"
                     f"{'' if ratio is None else f'{ratio:.3f}':>10}{'' if added is None else f'{added:+.3f}':>13}"
                     f"{r.cpu_ms_per_request:>7.3f} ms")
    return lines + ["gw/this: the gateway's req/s over this row's; gw-this p50: the gateway's p50 minus this row's "
                    "(ms); CPU/req: CPU of the target's own processes per request (direct: the upstream's)"]


def read_side_lines(read_side: dict[str, Any]) -> list[str]:
    found = read_side["processes"]
    if "max_lag_s" not in read_side:
        return [f"read side: not measured (processes found: {found})"]
    cpu = ("CPU not measured: no read-side process found" if "cpu_s" not in read_side else
           f"CPU {read_side['cpu_s']:.2f} s = {read_side['cpu_over_gateway']:.0%} of the gateway's "
           f"{read_side['gateway_cpu_s']:.2f} s (not counting a Postgres server's CPU for its statements)")
    caught_up = read_side["caught_up_after_s"]
    return [
        f"read side: pid {found['read_side']}, gateway pids "
        f"{[found['serve'], *found['workers']]}, during the gateway's run at {read_side['connections']} connections:",
        f"  {cpu}",
        f"  lag: max {read_side['max_lag_events']:,} events, max {read_side['max_lag_s']:.2f} s "
        f"({read_side['samples']} samples every {read_side['sample_interval_s']:g} s); caught up "
        + (f"{caught_up:.2f} s after wrk stopped" if caught_up is not None else
           f"NOT within {READ_SIDE_CATCH_UP_TIMEOUT_S:g} s after wrk stopped"),
    ]


def report(summary: Summary) -> str:
    lines = [f"Moneta Gateway benchmark: ledger={summary.ledger}, {summary.duration_s:g}s per run "
             f"(+{summary.warmup_s:g}s warm-up), pinning={summary.pinning}, {summary.machine['cpus']} CPUs", ""]
    lines += table(summary)
    c = summary.commit
    lines += ["", f"event store, one save() of one RequestRecord (Admitted+Completed), {c['commits']} commits: "
              f"p50 {c['p50_ms']:.3f} ms, p99 {c['p99_ms']:.3f} ms ({c['saves_per_s']:,.0f} saves/s)", ""]
    lines += read_side_lines(summary.read_side)
    d = summary.durability
    lines += ["", f"durability: wrk counted {d['wrk_2xx_total']:,} 2xx through the gateway (warm-ups included), "
              f"{d['non_2xx_total']} non-2xx, {d['socket_errors_total']} socket errors; ledger holds "
              f"{d['ledger_completed_from_gateway']:,} Completed -> {'PASS' if d['passed'] else 'FAIL'}"]
    for run in d["runs"]:
        lines.append(f"  c={run['connections']:<3} {'warm-up' if run['warmup'] else 'measured':<9} "
                     f"wrk 2xx {run['wrk_2xx']:>7,}  ledger {run['ledger_completed']:>7,}"
                     f"  extra {run['extra_in_ledger']:>+3}  {'ok' if run['ok'] else 'MISSING'}")
    if d.get("gateway_log_errors"):
        lines.append("  gateway log errors: " + "; ".join(d["gateway_log_errors"][:5]))
    lines += ["", "targets:"]
    for goal in summary.goals:
        status = {True: "met", False: "NOT MET", None: "-"}[goal.met]
        lines.append(f"  {status:<8}{goal.name:<38}{_format(goal.value, goal.unit):>13}   target {goal.target}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measured run (default 10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up before each run")
    parser.add_argument("--ledger", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--connections", type=lambda s: [int(c) for c in s.split(",")], default=[1, 32],
                        help="comma-separated connection counts (default 1,32)")
    parser.add_argument("--commits", type=int, default=500, help="single commits timed on the event store")
    parser.add_argument("--pin", choices=sorted(PINNINGS), default="none",
                        help="CPU pinning of upstream/servers/wrk (default none)")
    parser.add_argument("--litellm", action="store_true",
                        help=f"also measure LiteLLM's proxy {litellm_proxy.VERSION} (installed on first use)")
    parser.add_argument("--keep", action="store_true", help="keep the database and work directory")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        sys.exit("run.py: wrk is not installed. On Debian/Ubuntu, as root: apt-get update && apt-get install -y wrk "
                 "(see benchmarks/README.md)")

    summary = Summary(ledger=args.ledger, duration_s=args.duration, warmup_s=args.warmup, pinning=args.pin,
                      machine={"cpus": os.cpu_count(), "python": platform.python_version(),
                               "kernel": platform.release()})
    workdir = Path(tempfile.mkdtemp(prefix="moneta-bench-"))
    ledger = Ledger(args.ledger, workdir)
    try:
        measure(args, summary, workdir, ledger)
    finally:
        if not args.keep:
            ledger.drop()
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"kept: {ledger.url} and {workdir}", file=sys.stderr)
    analyse(summary)
    print(report(summary))
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{time.strftime('%Y%m%d-%H%M%S')}-{args.ledger}.json"
    payload = asdict(summary)
    payload["runs"] = [{**asdict(r), "ok": r.ok} for r in summary.runs]
    out.write_text(json.dumps(payload, indent=2, default=str))
    print(f"\nJSON summary: {out.relative_to(ROOT)}")
    return 0 if summary.durability["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
