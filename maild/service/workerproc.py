"""The worker in a process of its own.

Inside ``maild serve`` every thread shares one interpreter lock. The worker
(decide, apply, render and compose acknowledgements: a few milliseconds of
Python per message) held it for most of each second under load, and every
SMTP session waiting for its ``250`` waited for the lock as well: the intake's
p99 was several times its p50. In a child process the worker runs beside the
intake, on another core.

`WorkerProcess` has the interface of `maild.service.loop.Loop` (`wake`,
`start`, `stop`, `healthy`). The child builds its own engine, renderer,
applier, agent directory and parse processes from the same settings, processes
what a crash interrupted before it reports ready, and then runs the same
`Loop` over `Worker.run_batch` as the in-thread worker does, with the wake-up,
stop and "work owed at the stop" flags shared with the parent. It tells the
parent what it processed (for the metrics), takes a reloaded configuration
from it (SIGHUP: templates, triage rules, agents, log settings), gives way
while the parent has SMTP sessions in DATA, and ends when told to, or when its
parent is gone (`maild.service.children`).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from maild.clock import SystemClock
from maild.config.settings import Settings
from maild.desk import agents
from maild.desk.apply import Applier
from maild.log import setup_logging
from maild.mail.render import Renderer
from maild.pipeline.triage import reload_rules
from maild.service.children import (
    READY,
    child_setup,
    healthy,
    parent_alive,
    read_reports,
    wait_ready,
)
from maild.service.loop import Loop
from maild.service.parsepool import ParsePool
from maild.service.worker import Processed, Worker
from maild.store.db import checkpoint_late, is_sqlite, make_engine, session_factory

log = logging.getLogger(__name__)

START_SECONDS = 60.0  # for the child to import, set up and finish interrupted work

# What the parent hears of each processed message: (source, outcome, seconds
# from receipt to processing or None); outcome is "deferred" or "failed" when
# the message is not done.
Report = tuple[str, str, float | None]


@dataclass(frozen=True)
class _Shared:
    wake: Any  # set by the intake's commits: work is waiting
    stopping: Any
    owed: Any  # the wake-up was not taken up when the stop came
    instance: Any  # this instance's id (maild.service.cluster), 0 until registered
    busy: Any  # time.monotonic() when the step in hand began, 0.0 when idle
    in_data: Any  # SMTP sessions of the parent between DATA and their reply
    outbox: Any  # the sender's wake-up: mail was queued


def reports(results: list[Processed], now: Any) -> list[Report]:
    out: list[Report] = []
    for p in results:
        if p.outcome is not None:
            seconds = None if p.received_at is None else (now - p.received_at).total_seconds()
            out.append((p.source, str(p.outcome), seconds))
        else:
            out.append((p.source, "deferred" if p.reason == "deferred" else "failed", None))
    return out


def _child_main(
    settings: Settings,
    interval: float,
    shared: _Shared,
    out: Connection,
    control: Connection,
    parent_pid: int,
) -> None:
    child_setup()  # SIGTERM is the daemon's to act on
    setup_logging(settings.log.level, settings.log.format)
    engine = make_engine(settings.database.url)
    if is_sqlite(engine):
        checkpoint_late(engine)  # the parent's checkpoint thread copies the WAL back
    sessions = session_factory(engine)
    clock = SystemClock()
    renderer = Renderer.from_settings(settings)
    applier = Applier(settings, renderer)
    agents.install(sessions, applier)
    parser = ParsePool.from_settings(settings)
    worker = Worker(sessions, settings, clock, applier, on_outbox=shared.outbox, parser=parser)
    worker.intake_busy = lambda: shared.in_data.value > 0
    worker.instance_id = shared.instance.value or None
    parser.start()
    worker.finish_interrupted()
    out.send(READY)

    def reload(fresh: Settings) -> None:
        """As the daemon's SIGHUP: everything prepared first, then applied."""
        old = worker.settings
        try:
            templates = renderer.prepare(fresh.templates.directory)
            rules = reload_rules(fresh)
            agents.install(sessions, applier, fresh.agents)
        except Exception:  # the daemon checked the same; keep the old one
            log.exception("worker process: the reloaded configuration failed; keeping the old")
            return
        renderer.use(templates)
        worker.rules = rules
        parser.set_rules(rules)
        worker.settings = applier.settings = fresh
        if (fresh.log.level, fresh.log.format) != (old.log.level, old.log.format):
            setup_logging(fresh.log.level, fresh.log.format)

    def step() -> bool:
        if not parent_alive(parent_pid):
            log.warning("worker process: the daemon is gone; stopping")
            shared.stopping.set()
            return False
        while control.poll():
            reload(control.recv())
        worker.instance_id = shared.instance.value or None
        shared.busy.value = time.monotonic()
        try:
            results = worker.run_batch()
        finally:
            shared.busy.value = 0.0
        if results:
            out.send(reports(results, clock.now()))
        return any(p.reason != "deferred" for p in results)

    loop = Loop("worker", step, interval, wake=shared.wake, stopping=shared.stopping,
                owed=shared.owed)  # fmt: skip
    try:
        loop.run()
    finally:
        parser.close()
        engine.dispose()
        out.close()


class WorkerProcess:
    """Runs the worker in a child process; the interface of `maild.service.loop.Loop`."""

    def __init__(
        self,
        settings: Settings,
        interval: float,
        outbox_wake: Any,
        on_reports: Callable[[list[Report]], None] | None = None,
    ) -> None:
        ctx = multiprocessing.get_context("forkserver")
        self.name = "worker"
        self.wake = ctx.Event()
        self._shared = _Shared(
            wake=self.wake, stopping=ctx.Event(), owed=ctx.Value("b", 0, lock=False),
            instance=ctx.Value("q", 0), busy=ctx.Value("d", 0.0),
            in_data=ctx.Value("i", 0, lock=False), outbox=outbox_wake,
        )  # fmt: skip
        self.in_data = self._shared.in_data  # the intake keeps it current
        self._reports, child_out = ctx.Pipe(duplex=False)
        child_control, self._control = ctx.Pipe(duplex=False)
        self._process = ctx.Process(
            target=_child_main,
            args=(settings, interval, self._shared, child_out, child_control, os.getpid()),
            name="maild-worker",
            daemon=False,  # it has children of its own (the parse processes)
        )
        self._child_ends = (child_out, child_control)
        self._reader = threading.Thread(target=read_reports, args=(self._reports, on_reports),
                                        name="worker-reports", daemon=True)  # fmt: skip

    def set_instance(self, instance_id: int) -> None:
        self._shared.instance.value = instance_id

    def start(self) -> None:
        """Start the process and wait until it has set up and processed what a
        crash interrupted, so the daemon takes new mail only then."""
        self._process.start()
        log.info("worker process started (pid %s)", self._process.pid)
        for end in self._child_ends:
            end.close()
        wait_ready(self._reports, self._process, "worker", START_SECONDS)
        self._reader.start()

    def reload(self, settings: Settings) -> None:
        """Hand the reloaded configuration to the child; it applies it before its next step."""
        try:
            self._control.send(settings)
        except OSError as exc:
            log.error("worker process: cannot hand over the reloaded configuration: %s", exc)
        self.wake.set()

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop after the step in hand, and one more if work was signalled that
        no step has taken up; True if the process ended within `timeout`."""
        if self._process.pid is None:  # never started
            return True
        self._shared.owed.value = self.wake.is_set()
        self._shared.stopping.set()
        self.wake.set()
        self._process.join(timeout)
        ended = not self._process.is_alive()
        if not ended:  # its transaction is rolled back; the next start takes the rows up
            log.warning("worker process did not stop within %.1f s; killed", timeout)
            self._process.kill()
            self._process.join(1.0)
        self._reader.join(1.0)
        return ended

    def healthy(self, stuck_after: float) -> bool:
        return healthy(self._process, self._shared.busy, stuck_after)
