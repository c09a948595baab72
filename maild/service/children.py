"""What the daemon's child processes (worker, sender) do alike.

They ignore SIGTERM and SIGINT: systemd's stop signals every process of the
service at once (``KillMode=control-group``), and the daemon decides when, and
in which order, its children stop (the worker finishes what was answered
``250`` before the sender goes).

They end with the daemon: each step they look whether it still runs
(`parent_alive`). A child whose daemon was killed outright finishes the step
in hand first; its claims keep that safe (`maild.service.worker`: a row the
next start took back is skipped by the old claimant).
"""

from __future__ import annotations

import os
import signal


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
