"""`moneta projections run`: the projection runner in a process of its own beside the workers.

The runner lives outside the workers so its page work never competes with requests for a
worker's GIL; the tracking-row lock keeps it exactly-once even if several run.
"""
from __future__ import annotations

import logging
import os
import signal
import threading

from moneta.application.config import GatewayConfig
from moneta.bootstrap import build_read_side

log = logging.getLogger("moneta.projections")


def run_until_stopped(config: GatewayConfig) -> None:
    """Keeps the views up to date until SIGTERM or SIGINT."""
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    read_side = build_read_side(config)
    read_side.runner.start()
    log.info("read side running (pid %d)", os.getpid())
    try:
        stopping.wait()
    finally:
        read_side.close()
