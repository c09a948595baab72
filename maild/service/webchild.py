"""`maild serve` keeps ``maild web`` running beside it, as a child process.

Started by command, not imported (the web layer stands beside the service
layer): ``python -m maild [--config FILE] web``, with the same environment,
so ``MAILD_*`` overrides apply to both. If the child dies it is started
again after a pause that doubles up to a minute; a web process that cannot
start (a busy port) is logged and retried, and never takes intake down.
SIGTERM to the daemon stops the child first (SIGTERM, then SIGKILL).

The child runs at a lower CPU priority (`WEB_NICE`) than the daemon: when
the cores are busy, the SMTP client waiting for its ``250`` comes before an
agent's page (bench/web.py: intake's p99 with 20 agents on the console went
from 1.16-1.68x of intake alone to 0.83-1.17x at nice 5, the pages' p95
staying under half their targets). A console run as its own unit gets its
priority from the unit (``Nice=``).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading

from maild.config.settings import Settings

log = logging.getLogger(__name__)

MIN_PAUSE = 1.0
MAX_PAUSE = 60.0
WEB_NICE = 5  # added to the daemon's own niceness


class WebChild:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.proc: subprocess.Popen[bytes] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="web-supervisor", daemon=True)
        self.starts = 0

    def command(self) -> list[str]:
        argv = [sys.executable, "-m", "maild"]
        if not self.settings.source.startswith("<"):
            argv += ["--config", self.settings.source]
        return [*argv, "web"]

    def start(self) -> None:
        self._thread.start()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _run(self) -> None:
        pause = MIN_PAUSE
        while not self._stop.is_set():
            try:
                self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL,
                                             env=dict(os.environ))  # fmt: skip
            except OSError as exc:
                log.error("cannot start the web console: %s", exc)
                self._stop.wait(MAX_PAUSE)
                continue
            self.starts += 1
            _lower_priority(self.proc.pid)
            log.info("web console started (pid %d) on %s", self.proc.pid,
                     self.settings.web.listen)  # fmt: skip
            code = self.proc.wait()
            if self._stop.is_set():
                return
            log.error("web console exited with status %s; starting it again in %.0fs", code,
                      pause)  # fmt: skip
            self._stop.wait(pause)
            pause = min(pause * 2, MAX_PAUSE)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if self._thread.ident is not None:
            self._thread.join(timeout)


def _lower_priority(pid: int) -> None:
    """`WEB_NICE` steps below the daemon (just after the start: its imports
    take a moment longer than an exec, nothing more)."""
    try:
        ours = os.getpriority(os.PRIO_PROCESS, 0)
        os.setpriority(os.PRIO_PROCESS, pid, min(19, ours + WEB_NICE))
    except OSError as exc:  # the child may already be gone: its supervisor sees to that
        log.warning("web console (pid %d): cannot lower its CPU priority: %s", pid, exc)
