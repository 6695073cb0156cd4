"""The gateway benchmark: wrk against a fixed-answer upstream, direct and through `moneta serve`.

    /work/venv/bin/python benchmarks/run.py [--duration 10] [--ledger postgres|sqlite]

It starts `benchmarks/upstream.py` (its own process), a fresh ledger (a new Postgres database
`moneta_bench_<random>`, dropped at the end, or a SQLite file), and `moneta serve --workers 1`
on it; runs wrk at 1 connection (1 thread) and 32 connections (2 threads), the upstream
direct then the gateway, each after a warm-up; times single-aggregate `save()` commits on the
same ledger; then checks that every 2xx wrk counted through the gateway is a Completed event
in the ledger. Prints a table and writes a JSON summary to `benchmarks/results/`.
"""
from __future__ import annotations

import argparse
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
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
PYTHON = sys.executable
ADMIN_URL = os.environ.get("MONETA_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
MASTER_KEY = "sk-bench-master"
UPSTREAM_KEY = "sk-bench-upstream"
REQUEST_BODY = {"model": "bench", "messages": [{"role": "user", "content": "Say hello in five words."}]}
CLK_TCK = os.sysconf("SC_CLK_TCK")

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
    gateway_cpu_ms_per_request: float | None = None
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


def stop_group(process: subprocess.Popen | None, sig: int = signal.SIGTERM, wait: float = 20) -> None:
    if process is None or process.poll() is not None:
        return
    try:
        os.killpg(process.pid, sig)
        process.wait(wait)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
    except ProcessLookupError:
        pass


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


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its reaped children (uvicorn runs in the serve process)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(v) for v in fields[11:15]) / CLK_TCK


def wait_ready(url: str, process: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"moneta serve exited with {process.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url + "/health/readiness", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"moneta serve was not ready within {timeout}s:\n{log.read_text()}")


def post_once(url: str) -> dict[str, Any]:
    request = urllib.request.Request(url, data=json.dumps(REQUEST_BODY).encode(), method="POST",
                                     headers={"Content-Type": "application/json",
                                              "Authorization": f"Bearer {MASTER_KEY}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


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
        else:
            self.name = str(workdir / "ledger.db")
            self.url = f"sqlite:///{self.name}"

    def count_completed(self) -> int:
        # The Postgres tables are named after the application (moneta_events); eventsourcing's
        # SQLite recorder always names its table stored_events.
        table = "moneta_events" if self.kind == "postgres" else "stored_events"
        sql = f"SELECT count(*) FROM {table} WHERE topic LIKE '%Completed'"
        if self.kind == "postgres":
            import psycopg

            with psycopg.connect(self.url, autocommit=True) as conn:
                return conn.execute(sql).fetchone()[0]  # type: ignore[index]
        import sqlite3

        with sqlite3.connect(self.name, timeout=30) as conn:
            return conn.execute(sql).fetchone()[0]

    def drop(self) -> None:
        if self.kind == "postgres":
            import psycopg

            with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


def commit_latency(url: str, commits: int) -> dict[str, float]:
    """One `app.save()` of one RequestRecord (Admitted + Completed), one at a time: one commit each."""
    sys.path.insert(0, str(ROOT))
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
    durability: dict[str, Any] = field(default_factory=dict)
    targets: dict[str, Any] = field(default_factory=dict)


PINNINGS = {
    # name: (upstream CPUs, gateway CPUs, wrk CPUs); None = no pinning
    "none": (None, None, None),
    "split": ({1}, {0}, {1}),
    "upstream": ({1}, None, None),
}


def write_config(path: Path, upstream_port: int) -> None:
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


def measure(args: argparse.Namespace, summary: Summary, workdir: Path, ledger: Ledger) -> None:
    up_cpus, gw_cpus, wrk_cpus = PINNINGS[args.pin]
    script = workdir / "post.lua"
    script.write_text(WRK_SCRIPT % {"body": json.dumps(json.dumps(REQUEST_BODY)), "key": MASTER_KEY})
    upstream = gateway = None
    try:
        upstream, upstream_port = start_upstream(up_cpus)
        config = workdir / "config.yaml"
        write_config(config, upstream_port)
        port = free_port()
        log = workdir / "gateway.log"
        env = {**os.environ, "DATABASE_URL": ledger.url}
        env.pop("MONETA_CONFIG", None)
        moneta = shutil.which("moneta", path=str(Path(PYTHON).parent)) or "moneta"
        gateway = subprocess.Popen(
            [moneta, "serve", "--config", str(config), "--workers", "1", "--port", str(port),
             "--log-level", "warning"],
            cwd=workdir, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=(lambda: os.sched_setaffinity(0, gw_cpus)) if gw_cpus else None,
        )
        base = f"http://127.0.0.1:{port}"
        wait_ready(base, gateway, log)
        urls = {"direct": f"http://127.0.0.1:{upstream_port}/v1/chat/completions",
                "gateway": base + "/v1/chat/completions"}
        answer = post_once(urls["gateway"])
        assert answer["object"] == "chat.completion" and answer["usage"]["total_tokens"] == 20, answer
        summary.durability["smoke_requests"] = 1

        for connections in args.connections:
            for target in ("direct", "gateway"):
                for warm in (True, False):
                    before = ledger.count_completed() if target == "gateway" else 0
                    cpu_before = cpu_seconds(gateway.pid)
                    seconds = args.warmup if warm else args.duration
                    result = run_wrk(urls[target], script, connections, seconds, target, wrk_cpus)
                    if target == "gateway":
                        result.gateway_cpu_ms_per_request = (
                            (cpu_seconds(gateway.pid) - cpu_before) * 1000 / max(1, result.requests))
                        time.sleep(1.0)  # requests in flight when wrk stopped land (or not) now
                        result.ledger_completed_delta = ledger.count_completed() - before
                    (summary.warmups if warm else summary.runs).append(result)
                    if not warm:
                        print(f"  {target:8} c={connections:<3} {result.rps:9,.0f} req/s  "
                              f"p50 {result.p50_ms:7.3f} ms  p99 {result.p99_ms:7.3f} ms", file=sys.stderr)
                    if gateway.poll() is not None:
                        raise RuntimeError(f"moneta serve died:\n{log.read_text()}")

        in_ledger_before_commits = ledger.count_completed()
        summary.commit = commit_latency(ledger.url, args.commits)
        summary.durability["ledger_completed_total"] = ledger.count_completed()
        summary.durability["ledger_completed_before_commit_test"] = in_ledger_before_commits
        errors = [line for line in log.read_text().splitlines() if "ERROR" in line or "Traceback" in line]
        summary.durability["gateway_log_errors"] = errors[:20]
    finally:
        stop_group(gateway)
        stop_group(upstream)


def analyse(summary: Summary) -> None:
    by = {(r.target, r.connections): r for r in summary.runs}
    for connections in sorted({r.connections for r in summary.runs}):
        direct, gateway = by[("direct", connections)], by[("gateway", connections)]
        summary.ratios[f"c{connections}_rps_gateway_over_direct"] = gateway.rps / direct.rps
        summary.ratios[f"c{connections}_p50_gateway_over_direct"] = gateway.p50_ms / direct.p50_ms
        summary.ratios[f"c{connections}_p99_gateway_over_direct"] = gateway.p99_ms / direct.p99_ms
        summary.ratios[f"c{connections}_p50_added_ms"] = gateway.p50_ms - direct.p50_ms
    # Durability: every 2xx wrk counted through the gateway must be a Completed event. The ledger
    # may hold a few more: requests in flight when wrk stopped (at most one per connection).
    gateway_runs = [r for r in summary.warmups + summary.runs if r.target == "gateway"]
    per_run = []
    for r in gateway_runs:
        delta = r.ledger_completed_delta or 0
        per_run.append({"connections": r.connections, "wrk_2xx": r.ok, "wrk_non_2xx": r.non_2xx,
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
    c32, c1 = by.get(("gateway", 32)), summary.ratios.get("c1_p50_added_ms")
    summary.targets = {
        "c32_rps>=1500": None if c32 is None else c32.rps >= 1500,
        "c1_p50_added_ms<=2": None if c1 is None else c1 <= 2.0,
        # the gateway's own work = its CPU per request when commits are shared (32 connections)
        "c1_p50_added_ms<=gateway_work+1_commit": None if c1 is None or c32 is None else
        c1 <= (c32.gateway_cpu_ms_per_request or 0) + summary.commit.get("p50_ms", 0),
        "durable": summary.durability["passed"],
    }


def report(summary: Summary) -> str:
    by = {(r.target, r.connections): r for r in summary.runs}
    lines = [f"Moneta Gateway benchmark: ledger={summary.ledger}, {summary.duration_s:g}s per run "
             f"(+{summary.warmup_s:g}s warm-up), pinning={summary.pinning}, {summary.machine['cpus']} CPUs",
             "",
             f"{'target':<9}{'conns':>6}{'req/s':>11}{'p50 ms':>9}{'p99 ms':>9}{'rps ratio':>11}"
             f"{'p50 ratio':>11}{'p50 added':>11}{'gw CPU/req':>12}"]
    for (target, connections), r in sorted(by.items(), key=lambda kv: (kv[0][1], kv[0][0] != "direct")):
        ratio = added = p50r = cpu = ""
        if target == "gateway":
            ratio = f"{summary.ratios[f'c{connections}_rps_gateway_over_direct']:.3f}"
            p50r = f"{summary.ratios[f'c{connections}_p50_gateway_over_direct']:.1f}x"
            added = f"{summary.ratios[f'c{connections}_p50_added_ms']:+.3f}"
            cpu = f"{r.gateway_cpu_ms_per_request:.3f} ms"
        lines.append(f"{target:<9}{connections:>6}{r.rps:>11,.0f}{r.p50_ms:>9.3f}{r.p99_ms:>9.3f}"
                     f"{ratio:>11}{p50r:>11}{added:>11}{cpu:>12}")
    c = summary.commit
    lines += ["", f"event store, one save() of one RequestRecord (Admitted+Completed), {c['commits']} commits: "
              f"p50 {c['p50_ms']:.3f} ms, p99 {c['p99_ms']:.3f} ms ({c['saves_per_s']:,.0f} saves/s)"]
    d = summary.durability
    lines += ["", f"durability: wrk counted {d['wrk_2xx_total']:,} 2xx through the gateway (warm-ups included), "
              f"{d['non_2xx_total']} non-2xx, {d['socket_errors_total']} socket errors; ledger holds "
              f"{d['ledger_completed_from_gateway']:,} Completed -> {'PASS' if d['passed'] else 'FAIL'}"]
    for run in d["runs"]:
        lines.append(f"  c={run['connections']:<3} wrk 2xx {run['wrk_2xx']:>7,}  ledger {run['ledger_completed']:>7,}"
                     f"  extra {run['extra_in_ledger']:>+3}  {'ok' if run['ok'] else 'MISSING'}")
    if d.get("gateway_log_errors"):
        lines.append("  gateway log errors: " + "; ".join(d["gateway_log_errors"][:5]))
    lines += ["", "targets: " + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in summary.targets.items())]
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
                        help="CPU pinning of upstream/gateway/wrk (default none)")
    parser.add_argument("--keep", action="store_true", help="keep the database and work directory")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (apt-get install wrk)")

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
    text = report(summary)
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{time.strftime('%Y%m%d-%H%M%S')}-{args.ledger}.json"
    payload = asdict(summary)
    payload["runs"] = [{**asdict(r), "ok": r.ok} for r in summary.runs]
    out.write_text(json.dumps(payload, indent=2, default=str))
    print(f"\nJSON summary: {out.relative_to(ROOT)}")
    return 0 if summary.durability["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
