"""The sender in a process of its own.

Inside ``maild serve`` every thread shares one interpreter lock: the sender's
work (claiming, composing envelopes, writing and fsyncing files, recording
outcomes) competed with the SMTP intake and the worker for it. In a child
process it runs beside them. It behaves as the daemon's other loops do
(`wake`, `start`, `stop`, `healthy`), claims rows exactly as the in-thread
sender does (`maild.service.sender.Sender`), and reports what it sent to the parent
for the metrics. It ends when told to, or when its parent is gone.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from maild.clock import SystemClock
from maild.config.settings import Settings
from maild.log import setup_logging
from maild.service.children import (
    READY,
    child_setup,
    healthy,
    parent_alive,
    read_reports,
    wait_ready,
)
from maild.service.sender import Sender, transport_from_settings
from maild.store.db import make_engine, session_factory

log = logging.getLogger(__name__)

STUCK_AFTER_SECONDS = 300.0
START_SECONDS = 60.0  # for the child to import and set up before the daemon is ready


def _child_main(
    settings: Settings,
    interval: float,
    settle: float,
    wake: Any,
    stopping: Any,
    instance: Any,
    busy: Any,
    conn: Connection,
    parent_pid: int,
) -> None:
    child_setup()  # SIGTERM is the daemon's to act on
    setup_logging(settings.log.level, settings.log.format)
    engine = make_engine(settings.database.url)
    sender = Sender(
        session_factory(engine), settings, SystemClock(), transport_from_settings(settings)
    )
    conn.send(READY)
    first = True
    try:
        while not stopping.is_set() and parent_alive(parent_pid):
            if not first and wake.wait(interval) and settle:
                stopping.wait(settle)
            first = False
            wake.clear()
            while not stopping.is_set():
                sender.instance_id = instance.value or None
                busy.value = time.monotonic()
                try:
                    stats = sender.run_batch()
                except Exception:
                    log.exception("sender: batch failed; trying again in %.0fs", interval)
                    break
                finally:
                    busy.value = 0.0
                if stats.total:
                    conn.send((stats.sent, stats.retried, stats.dead))
                else:
                    break
    finally:
        sender.transport.close()
        engine.dispose()
        conn.close()


class SenderProcess:
    """Runs the sender in a child process; the interface of `maild.service.daemon.Loop`."""

    def __init__(
        self,
        settings: Settings,
        interval: float,
        settle: float,
        on_stats: Callable[[int, int, int], None] | None = None,
    ) -> None:
        ctx = multiprocessing.get_context("forkserver")
        self.name = "sender"
        self.wake = ctx.Event()
        self._stopping = ctx.Event()
        self._instance = ctx.Value("q", 0)
        self._busy = ctx.Value("d", 0.0)
        self._stats, child_conn = ctx.Pipe(duplex=False)
        self._on_stats = on_stats
        self._process = ctx.Process(
            target=_child_main,
            args=(
                settings,
                interval,
                settle,
                self.wake,
                self._stopping,
                self._instance,
                self._busy,
                child_conn,
                os.getpid(),
            ),  # fmt: skip
            name="maild-sender",
            daemon=True,
        )
        self._child_conn = child_conn
        self._reader = threading.Thread(target=read_reports, args=(self._stats, self._stats_of),
                                        name="sender-stats", daemon=True)  # fmt: skip

    def set_instance(self, instance_id: int) -> None:
        self._instance.value = instance_id

    def start(self) -> None:
        """Start the process and wait until it has set up (imports, engine,
        transport: most of a second of CPU), so the daemon reports ready
        only when its sender is, and that work does not compete with the
        first mail. A child that dies starting is reported by `healthy`."""
        self._process.start()
        self._child_conn.close()
        wait_ready(self._stats, self._process, "sender", START_SECONDS)
        self._reader.start()

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop after the batch in hand; True if the process ended within `timeout`."""
        if self._process.pid is None:  # never started
            return True
        self._stopping.set()
        self.wake.set()
        self._process.join(timeout)
        self._reader.join(1.0)
        return not self._process.is_alive()

    def healthy(self, stuck_after: float = STUCK_AFTER_SECONDS) -> bool:
        return healthy(self._process, self._busy, stuck_after)

    def _stats_of(self, report: tuple[int, int, int]) -> None:
        if self._on_stats is not None:
            self._on_stats(*report)
