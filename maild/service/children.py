"""What the daemon's child processes (worker, sender) do alike.

They ignore SIGTERM and SIGINT: systemd's stop signals every process of the
service at once (``KillMode=control-group``), and the daemon decides when its
children stop: after the intake has drained and committed what it answered
``250``, and after the step the worker owes that mail.

They end with the daemon: each step they look whether it still runs
(`parent_alive`). A child whose daemon was killed outright finishes the step
in hand first; its claims keep that safe (`maild.service.worker`: a row the
next start took back is skipped by the old claimant).
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

log = logging.getLogger(__name__)

READY = ("ready",)  # a child's first message: set up, the daemon may go on


def child_setup() -> None:
    """Call first in a child process."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


def parent_alive(pid: int) -> bool:
    """Whether process `pid` (the daemon) still runs."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def wait_ready(conn: Connection, process: Any, name: str, seconds: float) -> None:
    """Wait until the child says `READY` on `conn`, at most `seconds`. A child
    that dies starting, or is slow, is logged; `/healthz` reports a dead one."""
    try:
        if not conn.poll(seconds):
            log.warning("%s process still starting after %.0f s", name, seconds)
        elif conn.recv() != READY:
            log.error("%s process: unexpected first message", name)
    except (EOFError, OSError):
        process.join(1)
        log.error("%s process exited while starting (status %s)", name, process.exitcode)


def healthy(process: Any, busy: Any, stuck_after: float) -> bool:
    """The child runs and is not stuck: `busy` (a shared double) holds the
    monotonic time its step began, 0 between steps."""
    began = busy.value
    stuck = began > 0 and time.monotonic() - began > stuck_after
    return bool(process.is_alive()) and not stuck


def read_reports(conn: Connection, handle: Callable[[Any], None] | None) -> None:
    """A reader thread's loop: each report from the child to `handle`, until
    the child's end of `conn` closes. A `READY` after a slow start is skipped."""
    while True:
        try:
            report = conn.recv()
        except (EOFError, OSError):
            return
        if report != READY and handle is not None:
            handle(report)
