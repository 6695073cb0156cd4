"""LiteLLM's proxy for the benchmark: a venv of its own, created on demand, and its command line.

The venv lives in `benchmarks/.litellm-venv` (git-ignored) and holds `litellm[proxy]` at
the pinned version, installed with that venv's own pip from PyPI; it is reused while the
installed version matches. The proxy runs with one worker and no database.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

VERSION = "1.80.0"
VENV = Path(__file__).resolve().parent / ".litellm-venv"
PYTHON = VENV / "bin" / "python"


def installed_version() -> str | None:
    if not PYTHON.exists():
        return None
    probe = subprocess.run([str(PYTHON), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
                           capture_output=True, text=True)
    return probe.stdout.strip() if probe.returncode == 0 else None


def ensure_installed() -> Path:
    """Creates or updates the venv when needed; returns the `litellm` command."""
    if installed_version() != VERSION:
        print(f"installing litellm[proxy]=={VERSION} into {VENV} (once; a few minutes)", file=sys.stderr)
        if not PYTHON.exists():
            subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(PYTHON), "-m", "pip", "install", "-q", f"litellm[proxy]=={VERSION}"], check=True)
    return VENV / "bin" / "litellm"


def write_log_config(path: Path) -> Path:
    """A uvicorn logging config without the access log: the other targets have none either."""
    path.write_text(json.dumps({"version": 1, "disable_existing_loggers": False,
                                "loggers": {"uvicorn.access": {"level": "WARNING"}}}))
    return path


def command(litellm: Path, config: Path, port: int, log_config: Path) -> list[str]:
    return [str(litellm), "--config", str(config), "--host", "127.0.0.1", "--port", str(port),
            "--num_workers", "1", "--log_config", str(log_config)]


def environment(base: dict[str, str]) -> dict[str, str]:
    """No database (DATABASE_URL removed) and the bundled model price map (no download at start)."""
    env = {k: v for k, v in base.items() if k not in ("DATABASE_URL", "VIRTUAL_ENV", "PYTHONPATH")}
    return {**env, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
