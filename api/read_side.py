"""`moneta projections run`: the projection runner in a process of its own beside the workers,
and the sweeper that closes the calls of gateway processes that are gone (on start, then a few
times per `general_settings.abandon_after_s`), and, when alerting is configured, the deliverer of
budget alerts to webhooks, and, when Lago is configured, the Lago sync and the deliverer of usage
to Lago.

The runner lives outside the workers so its page work never competes with requests for a
worker's GIL; the tracking-row lock keeps it exactly-once even if several run.
"""
from __future__ import annotations

import logging
import os
import signal
import threading

from moneta.application.config import GatewayConfig
from moneta.bootstrap import ReadSide, build_read_side

log = logging.getLogger("moneta.projections")
SWEEPS_PER_SILENCE = 3
CLOSE_WITHIN_S = 1.5


def run_until_stopped(config: GatewayConfig) -> None:
    """Keeps the views up to date until SIGTERM or SIGINT."""
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    read_side = build_read_side(config)
    read_side.runner.start()
    if read_side.sealer is not None:
        read_side.sealer.start()
    if read_side.alerts is not None:
        read_side.alerts.start()
    if read_side.lago is not None:
        read_side.lago.start()
    if read_side.lago_usage is not None:
        read_side.lago_usage.start()
    log.info("read side running (pid %d)", os.getpid())
    try:
        while not stopping.is_set():
            _sweep(read_side)
            stopping.wait(config.abandon_after_s / SWEEPS_PER_SILENCE)
    finally:
        _exit_after(CLOSE_WITHIN_S)
        read_side.close()


def _exit_after(seconds: float) -> None:
    """Ends the process if closing takes longer (a page or a delivery waiting on the network): each
    page commits with its position or not at all, and deliveries are idempotent, so nothing is lost,
    and `moneta serve` expects its children gone within two seconds of its end."""
    timer = threading.Timer(seconds, os._exit, args=(0,))
    timer.daemon = True
    timer.start()


def _sweep(read_side: ReadSide) -> None:
    try:
        closed = read_side.close_abandoned()
    except Exception:  # the next sweep tries again; the views and the ledger are the truth
        log.exception("closing abandoned calls failed")
        return
    if closed:
        log.warning("closed %d call(s) abandoned by gateway processes that are gone", closed)
