"""A child of `moneta serve` dies with it, however `moneta serve` ends: a signal, `kill -9`, a crash.

`moneta serve` puts its pid in MONETA_PARENT_PID before it starts any child. A child that finds
it there asks the kernel (Linux `prctl(PR_SET_PDEATHSIG)`) for a SIGTERM when its parent ends, so
it shuts down as on `kill`. The kernel sends it when the *thread* that started the child ends:
the parent starts each child from a thread that lives at least as long as the child.
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys
from typing import Mapping

PARENT_PID = "MONETA_PARENT_PID"
_PR_SET_PDEATHSIG = 1


def die_with_parent(environ: Mapping[str, str]) -> None:
    """Called early in a child: it gets SIGTERM when its parent ends, at once if it has already."""
    expected = environ.get(PARENT_PID)
    if not expected:
        return  # not started by `moneta serve`
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != int(expected):  # the parent ended before the kernel knew to tell us
        os.kill(os.getpid(), signal.SIGTERM)
