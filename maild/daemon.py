"""``maild serve``: wire the parts together and run until told to stop.

Threads: the intake writer (group commit), the worker, the sender, one per
IMAP mailbox (`maild.imap`); the asyncio loop runs the SMTP/LMTP listener;
APScheduler runs the periodic, idempotent sweeps. SIGTERM/SIGINT stop
accepting, commit what was received, finish the batch in hand and exit 0;
SIGHUP reloads the templates, the triage rules and the agent directory.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable

from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from maild import agents
from maild.apply import Applier
from maild.clock import Clock, SystemClock
from maild.config import Settings
from maild.db import ensure_schema, is_sqlite, make_engine, session_factory
from maild.imap import ImapIntake
from maild.intake import GroupCommitter
from maild.parsepool import ParsePool
from maild.render import Renderer
from maild.sender import Sender, transport_from_settings
from maild.smtp import IntakeHandler, start_server
from maild.sweeps import SWEEPS, Sweep
from maild.worker import Worker

log = logging.getLogger(__name__)


class Loop:
    """A thread that runs `step` whenever woken (or every `interval` seconds)."""

    def __init__(
        self, name: str, step: Callable[[], bool], interval: float, settle: float = 0.0
    ) -> None:
        self.name = name
        self.step = step
        self.interval = interval
        # After a wake-up, wait this long so that work arriving in a burst is
        # handled in one batch (fewer transactions) rather than piecemeal.
        self.settle = settle
        self.wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        self.wake.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stopping.is_set():
            if self.wake.wait(self.interval) and self.settle:
                self._stopping.wait(self.settle)
            self.wake.clear()
            while not self._stopping.is_set():
                try:
                    more = self.step()
                except Exception:
                    log.exception(
                        "%s: step failed; trying again in %.0fs", self.name, self.interval
                    )
                    break
                if not more:
                    break


class Daemon:
    def __init__(self, settings: Settings, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        self.engine: Engine = make_engine(settings.database.url)
        ensure_schema(self.engine)
        self.sessions: sessionmaker[Session] = session_factory(self.engine)
        self.renderer = Renderer.from_settings(settings)
        self.applier = Applier(settings, self.renderer)
        agents.install(self.sessions, self.applier)  # the agent directory, synced with the config
        self.sender = Sender(self.sessions, settings, self.clock, transport_from_settings(settings))
        self.sender_loop = Loop(
            "sender", self._send_step, settings.worker.poll_seconds, settle=0.05
        )
        self.parser = ParsePool.from_settings(settings)
        self.worker = Worker(
            self.sessions,
            settings,
            self.clock,
            self.applier,
            on_outbox=self.sender_loop.wake,
            parser=self.parser,
        )
        self.worker_loop = Loop("worker", self._work_step, settings.worker.poll_seconds)
        self.committer = GroupCommitter(
            self.sessions, self.clock, on_commit=self.worker_loop.wake.set
        )
        self.handler = IntakeHandler(settings, self.committer, lmtp=settings.smtp.lmtp)
        self.imap = ImapIntake(
            settings, self.sessions, self.clock, on_commit=self.worker_loop.wake.set
        )
        self.scheduler = BackgroundScheduler(timezone="UTC")
        self.server: asyncio.Server | None = None
        self._stop = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.ready = threading.Event()

    def _work_step(self) -> bool:
        return bool(self.worker.run_batch())

    def _send_step(self) -> bool:
        return self.sender.run_batch().total > 0

    def _recover_stuck(self) -> None:
        self.worker.recover()

    def _sweep(self, name: str, sweep: Sweep) -> None:
        try:
            if sweep(self.sessions, self.applier, self.clock):
                self.sender_loop.wake.set()
        except Exception:
            log.exception("sweep %s failed; trying again at the next interval", name)

    @property
    def port(self) -> int | None:
        """The port the listener is bound to (useful with ``smtp.listen = "HOST:0"``)."""
        if self.server is None or not self.server.sockets:
            return None
        return int(self.server.sockets[0].getsockname()[1])

    async def run(self, *, install_signals: bool = True) -> int:
        single = is_sqlite(self.engine)
        self.worker.recover(all_rows=single)
        if single:
            self.sender.recover()
        self.committer.start()
        await asyncio.to_thread(self.parser.start)  # warm, before any work is claimed
        self.worker_loop.start()
        self.sender_loop.start()
        self.imap.start()
        if self.imap.pollers:
            log.info("IMAP intake from %s", ", ".join(p.name for p in self.imap.pollers))
        # Rows whose claim outlived the lease (a dead instance) go back to pending.
        self.scheduler.add_job(
            self._recover_stuck,
            "interval",
            seconds=max(1.0, min(60.0, self.settings.worker.lease_seconds / 4)),
            id="recover_stuck",
            max_instances=1,
            coalesce=True,
        )
        for name, sweep in SWEEPS:
            self.scheduler.add_job(self._sweep, "interval", args=(name, sweep),
                                   seconds=self.settings.sla.sweep_seconds, id=f"sweep_{name}",
                                   max_instances=1, coalesce=True)  # fmt: skip
        self.scheduler.start()
        self._loop = asyncio.get_running_loop()
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._loop.add_signal_handler(sig, self._stop.set)
            self._loop.add_signal_handler(signal.SIGHUP, self.reload)
        if self.settings.smtp.enabled:
            self.server = await start_server(self.settings, self.handler)
            where = ", ".join(str(s.getsockname()[:2]) for s in self.server.sockets)
            log.info("maild ready: %s on %s, database %s, outgoing %s",
                     "LMTP" if self.settings.smtp.lmtp else "SMTP", where,
                     self.engine.url.render_as_string(hide_password=True),
                     self.settings.outgoing.transport)  # fmt: skip
        else:
            log.info("maild ready (SMTP intake disabled)")
        self.ready.set()
        await self._stop.wait()
        await self.shutdown()
        return 0

    def reload(self) -> None:
        try:
            self.renderer.reload()
            log.info("SIGHUP: templates reloaded")
        except Exception as exc:
            log.error("SIGHUP: reload failed, keeping the old templates: %s", exc)
        try:
            self.worker.reload_rules()
            log.info("SIGHUP: triage rules reloaded")
        except Exception as exc:
            log.error("SIGHUP: reload failed, keeping the old triage rules: %s", exc)
        try:
            directory = agents.reload(self.sessions, self.applier)
            log.info("SIGHUP: agent directory reloaded (%d active)", len(directory.active))
        except Exception as exc:
            log.error("SIGHUP: reload failed, keeping the old agent directory: %s", exc)

    def request_stop(self) -> None:
        """Ask a daemon running in another thread to stop (thread-safe)."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)

    async def shutdown(self) -> None:
        log.info("stopping: no new mail accepted; finishing what is in hand")
        self.handler.accepting = False
        if self.server is not None:
            self.server.close()
        await asyncio.to_thread(self.imap.stop)
        # Commit everything already received, then stop the threads after
        # their current batch.
        await asyncio.to_thread(self.committer.stop)
        self.scheduler.shutdown(wait=False)
        await asyncio.to_thread(self.worker_loop.stop)
        await asyncio.to_thread(self.sender_loop.stop)
        self.parser.close()
        self.engine.dispose()
        log.info("stopped")
