"""``maild serve``: wire the parts together and run until told to stop.

Threads: the intake writer (group commit), the worker, the sender, one per
IMAP mailbox (`maild.intake.imap`), the ``/metrics`` and ``/healthz`` listener; the
asyncio loop runs the SMTP/LMTP listener and the systemd watchdog;
APScheduler runs the periodic, idempotent sweeps (`Daemon.add_sweep`, each
under a singleton lock across instances) and this instance's heartbeat.

Signals: SIGTERM/SIGINT answer ``421`` to new connections and commands, let
messages already in DATA finish (up to ``smtp.drain_seconds``), commit what
was received, finish the batch in hand, hand back what this instance claimed
and exit 0, within 10 s. SIGHUP runs the reload hooks (templates and triage
rules; the agent directory registers its own with `Daemon.add_reload_hook`)
without touching open connections.

Under systemd (``Type=notify``) it reports READY, STATUS, RELOADING, STOPPING
and pings WATCHDOG while its threads are healthy (`maild.service.notify`); a socket
passed by ``maild.socket`` replaces ``smtp.listen``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import gc
import logging
import os
import resource
import signal
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from maild.clock import Clock, SystemClock
from maild.config.settings import Settings, load_settings
from maild.desk import agents
from maild.desk.apply import Applier
from maild.desk.privacy import retention_sweep
from maild.desk.sweeps import SWEEPS, Sweep
from maild.errors import ConfigError
from maild.intake.commit import GroupCommitter
from maild.intake.imap import ImapIntake
from maild.intake.smtp import IntakeHandler, Listener, start_server
from maild.log import setup_logging
from maild.mail.render import Renderer
from maild.pipeline.triage import reload_rules
from maild.service.cluster import Membership, run_singleton
from maild.service.loop import Loop
from maild.service.metrics import HttpServer, Metrics
from maild.service.notify import Notifier, inherited_sockets
from maild.service.parsepool import ParsePool
from maild.service.sender import Sender, transport_from_settings
from maild.service.senderproc import SenderProcess
from maild.service.webchild import WebChild
from maild.service.worker import Worker
from maild.service.workerproc import Report, WorkerProcess, reports
from maild.store.access import guard_secret, open_or_create
from maild.store.db import Checkpointer, is_sqlite, make_engine, session_factory

log = logging.getLogger(__name__)

# A step running longer than this means a stuck thread: healthz fails and the
# systemd watchdog is no longer fed, so systemd restarts the service.
STUCK_AFTER_SECONDS = 300.0
STOP_BUDGET_SECONDS = 9.0
SWITCH_INTERVAL = 0.0005  # seconds; see Daemon.run
RETENTION_FIRST_SECONDS = 60.0


def _where(sock: Any) -> str:
    name = sock.getsockname()
    return str(name[:2]) if isinstance(name, tuple) else f"unix:{name}"


def _differences(old: Settings, new: Settings) -> list[str]:
    """``section.key`` of every setting that differs (``agents`` as one)."""
    out = []
    for f in dataclasses.fields(Settings):
        if f.name in ("source", "given"):
            continue
        a, b = getattr(old, f.name), getattr(new, f.name)
        if a == b:
            continue
        if dataclasses.is_dataclass(a):
            out += [f"{f.name}.{g.name}" for g in dataclasses.fields(a)
                    if getattr(a, g.name) != getattr(b, g.name)]  # fmt: skip
        else:
            out.append(f.name)
    return out


def raise_nofile_limit() -> int:
    """Raise the soft limit on open files to the hard limit (idle SMTP clients)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            return hard
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-files limit from %d to %d: %s", soft, hard, exc)
    return soft


def reread(settings: Settings) -> Settings:
    """The configuration as SIGHUP sees it: the file (and environment) read again;
    settings made in code (tests) are kept as they are."""
    if settings.source.startswith("<"):
        return settings
    return load_settings(settings.source)


# What SIGHUP takes from the configuration read again; any other change is
# logged as needing a restart.
RELOADED_KEYS = (
    "smtp.tls_cert_file", "smtp.tls_key_file", "smtp.require_starttls", "smtp.auth_users_file",
    "smtp.auth_required", "agents", "templates.", "triage.", "log.",
)  # fmt: skip


class Daemon:
    def __init__(
        self,
        settings: Settings,
        clock: Clock | None = None,
        *,
        config: Callable[[Settings], Settings] = reread,
    ) -> None:
        self.settings = settings
        # Reads the configuration again on SIGHUP (the CLI adds its --log-level).
        self.config = config
        self.clock = clock or SystemClock()
        # Intake's commits take SQLite's write lock the moment the worker or
        # sender process lets it go.
        self.engine: Engine = open_or_create(settings.database.url, prompt=True)
        guard_secret(settings.helpdesk.secret_file, self.engine)
        self.sessions: sessionmaker[Session] = session_factory(self.engine)
        # SQLite: the WAL is copied back beside intake, not in its commits.
        self.checkpointer = Checkpointer(self.engine) if is_sqlite(self.engine) else None
        self.reader: Engine = (
            make_engine(settings.database.url, read_only=True, pool_size=1)
            if is_sqlite(self.engine) else self.engine
        )  # fmt: skip
        self.renderer = Renderer.from_settings(settings)
        self.applier = Applier(settings, self.renderer)
        # The signing secret now, not at the first message: created if missing,
        # and a secret other users may read stops maild here (exit 78).
        _ = self.applier.signer
        agents.install(self.sessions, self.applier)  # the agent directory, synced with the config
        self.sender = Sender(self.sessions, settings, self.clock, transport_from_settings(settings))
        # The sender runs in a process of its own (it would otherwise compete
        # for the interpreter lock with intake and worker), except with an
        # injected clock (tests), which a child process could not share.
        self.sender_loop: Loop | SenderProcess
        if settings.outgoing.sender_process and clock is None:
            self.sender_loop = SenderProcess(
                settings, settings.worker.poll_seconds, settle=0.05, on_stats=self._on_sent
            )
        else:
            self.sender_loop = Loop(
                "sender", self._send_step, settings.worker.poll_seconds, settle=0.05
            )
        # The worker runs in a process of its own too (the intake's SMTP
        # answers would otherwise wait for the worker's turn at the lock),
        # with the same exception; there it has its own parse processes.
        self.worker_loop: Loop | WorkerProcess
        in_process = not (settings.worker.process and isinstance(self.sender_loop, SenderProcess))
        self.parser = ParsePool.from_settings(settings) if in_process else ParsePool(0)
        # This instance's worker object: it processes in the thread, and in
        # either case hands back what a vanished run had claimed (recover).
        self.worker = Worker(
            self.sessions,
            settings,
            self.clock,
            self.applier,
            on_outbox=self.sender_loop.wake,
            parser=self.parser,
        )
        if in_process:
            self.worker_loop = Loop("worker", self._work_step, settings.worker.poll_seconds)
        else:
            self.worker_loop = WorkerProcess(settings, settings.worker.poll_seconds,
                                             self.sender_loop.wake, on_reports=self._observe)  # fmt: skip
        self.committer = GroupCommitter(
            self.sessions, self.clock, on_commit=self.worker_loop.wake.set
        )
        self.handler = IntakeHandler(settings, self.committer, lmtp=settings.smtp.lmtp,
                                     clock=self.clock)  # fmt: skip
        self.listener = Listener(settings, self.handler)  # TLS and AUTH users: reloadable
        self.imap = ImapIntake(
            settings, self.sessions, self.clock, on_commit=self.worker_loop.wake.set
        )
        self.scheduler = BackgroundScheduler(timezone="UTC")
        self.server: asyncio.Server | None = None
        self._stop = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.ready = threading.Event()
        self.metrics = Metrics(self.sessions, self.clock)
        for poller in self.imap.pollers:
            poller.on_polled = self.metrics.mailbox_polled
        self.handler.on_result = self._on_intake
        self.worker.intake_busy = self._intake_busy
        if isinstance(self.worker_loop, WorkerProcess):
            self.handler.shared_in_data = self.worker_loop.in_data
        self.notifier = Notifier()
        self.http: HttpServer | None = None
        self.web: WebChild | None = WebChild(settings) if settings.web.enabled else None
        self.membership = Membership(
            self.engine, self.sessions, self.clock,
            dead_after=settings.cluster.dead_after_seconds, on_new_id=self._set_instance,
        )  # fmt: skip
        self.reload_hooks: list[tuple[str, Callable[[], object]]] = []

    # --- extension points for other modules ---------------------------------------

    def add_reload_hook(self, name: str, hook: Callable[[], object]) -> None:
        """Run `hook` on SIGHUP (e.g. recompile rules, reread the agent directory).

        A hook that raises keeps its old state; the others still run.
        """
        self.reload_hooks.append((name, hook))

    def add_sweep(
        self,
        name: str,
        job: Callable[[], object],
        *,
        seconds: float,
        singleton: bool = True,
        first_in: float | None = None,
    ) -> None:
        """Run `job` every `seconds` (the first time after `first_in` seconds, if
        given); with `singleton`, on one instance at a time."""

        def run() -> None:
            try:
                if singleton:
                    run_singleton(self.engine, f"sweep:{name}", job)
                else:
                    job()
            except Exception:
                log.exception("sweep %s failed; next run in %.0fs", name, seconds)

        first = {} if first_in is None else {
            "next_run_time": datetime.now(UTC) + timedelta(seconds=first_in)}  # fmt: skip
        self.scheduler.add_job(run, "interval", seconds=seconds, id=name, name=name,
                               max_instances=1, coalesce=True, **first)  # fmt: skip

    # --- steps ---------------------------------------------------------------------

    def _intake_busy(self) -> bool:
        return self.handler.in_data > 0 or self.committer.queued() > 0

    def _set_instance(self, instance_id: int) -> None:
        self.worker.instance_id = instance_id
        if isinstance(self.worker_loop, WorkerProcess):
            self.worker_loop.set_instance(instance_id)
        self.sender.instance_id = instance_id
        if isinstance(self.sender_loop, SenderProcess):
            self.sender_loop.set_instance(instance_id)

    def _on_intake(self, source: str, result: str, seconds: float) -> None:
        self.metrics.inbound_received.labels(source, result).inc()
        self.metrics.smtp_reply_latency.observe(seconds)

    def _work_step(self) -> bool:
        results = self.worker.run_batch()
        self._observe(reports(results, self.clock.now()))
        return any(p.reason != "deferred" for p in results)

    def _observe(self, processed: list[Report]) -> None:
        for source, outcome, seconds in processed:
            if seconds is not None:
                self.metrics.processing_latency.observe(seconds)
            self.metrics.inbound_processed.labels(source, outcome).inc()

    def _send_step(self) -> bool:
        stats = self.sender.run_batch()
        self._on_sent(stats.sent, stats.retried, stats.dead)
        return stats.total > 0

    def _on_sent(self, sent: int, retried: int, dead: int) -> None:
        m = self.metrics.outbox
        m.labels("sent").inc(sent)
        m.labels("retried").inc(retried)
        m.labels("dead").inc(dead)

    def _retention(self) -> None:
        retention_sweep(self.sessions, self.settings.retention, self.clock)

    def _recover_stuck(self) -> None:
        self.worker.recover()

    def _sweep(self, name: str, sweep: Sweep) -> None:
        try:
            if sweep(self.sessions, self.applier, self.clock):
                self.sender_loop.wake.set()
        except Exception:
            log.exception("sweep %s failed; trying again at the next interval", name)

    def _reap(self) -> None:
        try:
            self.membership.reap()
        except Exception as exc:  # e.g. lock_timeout behind a busy worker: next round
            log.info("reaping dead instances postponed: %s", type(exc).__name__)

    @property
    def port(self) -> int | None:
        """The port the listener is bound to (useful with ``smtp.listen = "HOST:0"``)."""
        if self.server is None or not self.server.sockets:
            return None
        name = self.server.sockets[0].getsockname()
        return int(name[1]) if isinstance(name, tuple) else None

    async def run(self, *, install_signals: bool = True) -> int:
        nofile = raise_nofile_limit()
        # The intake writer, the parse-pool threads and the worker share the
        # GIL; handing it over every 0.5 ms instead of Python's 5 ms lets a
        # thread woken by a commit or a parse result run at once: +10-20 %
        # end to end in bench/run.py, and shorter waits for the 250.
        sys.setswitchinterval(SWITCH_INTERVAL)
        single = is_sqlite(self.engine)
        await asyncio.to_thread(self.parser.start)  # warm, before any work is claimed
        self.membership.register()
        self.membership.reap()  # an earlier run of ours, killed, holds rows
        self.worker.recover(all_rows=single)
        if single:
            self.sender.recover()
        if self.settings.worker.enabled and isinstance(self.worker_loop, Loop):
            await asyncio.to_thread(self.worker.finish_interrupted)
        if self.checkpointer is not None:
            self.checkpointer.start()
        self.committer.start()
        if self.settings.worker.enabled:
            # (a process: waits until it is set up and has finished what a
            # crash interrupted, before this instance takes new mail)
            await asyncio.to_thread(self.worker_loop.start)
        await asyncio.to_thread(self.sender_loop.start)  # a process: waits until it is set up
        self.imap.start()
        if self.imap.pollers:
            log.info("IMAP intake from %s", ", ".join(p.name for p in self.imap.pollers))
        beat = self.settings.cluster.heartbeat_seconds
        # Separate jobs: a slow reap must not delay our own heartbeat.
        self.scheduler.add_job(self.membership.heartbeat, "interval", seconds=beat,
                               id="heartbeat", max_instances=1, coalesce=True)  # fmt: skip
        self.scheduler.add_job(self._reap, "interval", seconds=beat, id="reap",
                               max_instances=1, coalesce=True)  # fmt: skip
        # Rows whose claim outlived the lease go back to pending (a last resort
        # beside the heartbeat). Each sweep runs on one instance at a time.
        self.add_sweep("recover_stuck", self._recover_stuck,
                       seconds=max(1.0, min(60.0, self.settings.worker.lease_seconds / 4)))  # fmt: skip
        for name, sweep in SWEEPS:
            self.add_sweep(f"sweep_{name}", functools.partial(self._sweep, name, sweep),
                           seconds=self.settings.sla.sweep_seconds)  # fmt: skip
        # Retention: daily, and a minute after start (a daemon restarted more
        # often than daily still applies it).
        self.add_sweep("retention", self._retention, first_in=RETENTION_FIRST_SECONDS,
                       seconds=self.settings.retention.sweep_hours * 3600)  # fmt: skip
        self.scheduler.start()
        self._loop = asyncio.get_running_loop()
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._loop.add_signal_handler(sig, self._stop.set)
            self._loop.add_signal_handler(signal.SIGHUP, self.reload)
        status = "SMTP intake disabled"
        try:
            if self.settings.http.enabled:
                key = "http.listen"
                host, port = self.settings.http.host_port
                self.http = HttpServer(host, port, self.metrics, self.health)
                self.http.start()
            if self.settings.smtp.enabled:
                key = "smtp.listen"
                inherited = inherited_sockets()
                self.server = await start_server(self.settings, self.handler,
                                                 listener=self.listener,
                                                 sock=inherited[0] if inherited else None)  # fmt: skip
        except OSError as exc:  # a port in use, an address not ours: one line naming the key
            if key == "http.listen":
                self.http = None  # it never started: nothing to stop
            await self.shutdown()
            listen = (
                self.settings.http.listen if key == "http.listen" else self.settings.smtp.listen
            )
            raise ConfigError(key, f"cannot listen on {listen}: "
                              f"{os.strerror(exc.errno) if exc.errno else exc}") from None  # fmt: skip
        if self.settings.smtp.enabled:
            where = ", ".join(_where(s) for s in self.server.sockets)
            status = f"{'LMTP' if self.settings.smtp.lmtp else 'SMTP'} on {where}"
            if inherited:
                status += " (socket from systemd)"
        if self.web is not None:
            self.web.start()
        self.metrics.smtp_connections.set_function(lambda: len(self.handler.open_sessions))
        log.info("maild ready: %s, database %s, outgoing %s, instance %s, open files %d%s",
                 status, self.engine.url.render_as_string(hide_password=True),
                 self.settings.outgoing.transport, self.membership.id, nofile,
                 f", metrics on http://{self.settings.http.host_port[0]}:{self.http.port}/metrics"
                 if self.http else "")  # fmt: skip
        # What start-up made lives as long as the daemon: out of the collector's
        # sight, a full collection scans only what came later (it took 90 ms
        # on a slow machine, and every SMTP session waited through it).
        gc.freeze()
        self.notifier.ready(f"accepting mail: {status}")
        self.ready.set()
        watchdog = asyncio.create_task(self._watchdog())
        await self._stop.wait()
        watchdog.cancel()
        await self.shutdown()
        return 0

    # --- health, watchdog, reload ------------------------------------------------

    def threads_healthy(self) -> dict[str, bool]:
        return {
            "intake_writer": self.committer.alive(),
            "worker": not self.settings.worker.enabled
            or self.worker_loop.healthy(STUCK_AFTER_SECONDS),
            "sender": self.sender_loop.healthy(STUCK_AFTER_SECONDS),
            "imap": all(p.alive for p in self.imap.pollers) or not self.ready.is_set(),
        }

    def health(self) -> dict[str, bool]:
        """What ``/healthz`` reports; every value must be True for a 200."""
        checks = self.threads_healthy()
        checks["smtp"] = not self.settings.smtp.enabled or (
            self.server is not None and self.server.is_serving()
        )
        try:
            # A reader's connection (SQLite: deferred, query_only): a liveness
            # probe never queues for the write lock another program holds.
            with self.reader.connect() as conn:
                conn.execute(text("SELECT 1"))
            checks["database"] = True
        except Exception:
            checks["database"] = False
        return checks

    async def _watchdog(self) -> None:
        """Feed systemd's watchdog while the threads are healthy; update STATUS."""
        interval = self.notifier.watchdog_interval()
        period = min(interval, 10.0) if interval else 10.0
        if not self.notifier.enabled:
            return
        while True:
            checks = self.threads_healthy()
            if all(checks.values()):
                if interval:
                    self.notifier.watchdog()
                self.notifier.status(
                    f"accepting mail; {self.committer.messages} received, "
                    f"{len(self.handler.open_sessions)} connection(s)"
                )
            else:
                bad = ", ".join(k for k, ok in checks.items() if not ok)
                log.error("unhealthy: %s; no longer feeding the watchdog", bad)
                self.notifier.status(f"unhealthy: {bad}")
            await asyncio.sleep(period)

    def reload(self) -> bool:
        """SIGHUP: read the configuration again and apply it, all or nothing.

        Reloaded: the TLS certificate and key (a renewal replaces the files
        in place), the SMTP AUTH users, the agent directory, the templates,
        the triage rules, the log level and format. Everything is loaded and
        compiled first; if anything fails the new configuration is refused
        and the old one stays in force. Open connections are not touched.
        Other changed keys are named in the log as needing a restart.
        """
        self.notifier.reloading()
        try:
            changed = self._reload()
            ok = True
        except Exception as exc:
            ok = False
            what = str(exc) if isinstance(exc, ConfigError) else f"{type(exc).__name__}: {exc}"
            log.error("SIGHUP: the new configuration is refused, keeping the old one: %s", what)
        else:
            log.info("SIGHUP: configuration reloaded from %s; %s", self.settings.source,
                     "; ".join(changed) if changed else "nothing changed")  # fmt: skip
        for name, hook in self.reload_hooks:
            try:
                hook()
                log.info("SIGHUP: %s reloaded", name)
            except Exception as exc:
                ok = False
                log.error("SIGHUP: reloading %s failed, keeping the old one: %s", name, exc)
        self.metrics.reloads.labels("ok" if ok else "failed").inc()
        self.notifier.ready("accepting mail (reloaded)" if ok else "reload failed, see the log")
        return ok

    def _reload(self) -> list[str]:
        old = self.settings
        fresh = self.config(old)
        # 1. Load and compile everything; nothing changes yet.
        context, users = Listener.prepare(fresh)
        templates = self.renderer.prepare(fresh.templates.directory)
        rules = reload_rules(fresh)
        merged = dataclasses.replace(
            old, agents=fresh.agents, templates=fresh.templates, triage=fresh.triage,
            log=fresh.log, smtp=dataclasses.replace(
                old.smtp, tls_cert_file=fresh.smtp.tls_cert_file,
                tls_key_file=fresh.smtp.tls_key_file, require_starttls=fresh.smtp.require_starttls,
                auth_users_file=fresh.smtp.auth_users_file, auth_required=fresh.smtp.auth_required),
        )  # fmt: skip
        # 2. Apply: the directory first (the one step that writes, and may fail).
        before = {a.email: a for a in self.applier.directory.agents if a.active}
        agents.install(self.sessions, self.applier, fresh.agents)
        after = {a.email: a for a in self.applier.directory.agents if a.active}
        old_print = self.listener.fingerprint
        old_users = self.listener.users.users if self.listener.users else {}
        self.listener.update(merged, context, users)
        new_print = self.listener.fingerprint
        self.renderer.use(templates)
        self.worker.rules = rules
        self.parser.set_rules(rules)
        self.settings = self.worker.settings = self.applier.settings = merged
        if isinstance(self.worker_loop, WorkerProcess):
            self.worker_loop.reload(merged)
        if (fresh.log.level, fresh.log.format) != (old.log.level, old.log.format):
            setup_logging(fresh.log.level, fresh.log.format)
        # 3. Say what changed.
        changed = []
        if new_print != old_print:
            changed.append(f"TLS certificate {new_print[:16] if new_print else 'none'} "
                           f"(was {old_print[:16] if old_print else 'none'})")  # fmt: skip
        new_users = users.users if users else {}
        if new_users != old_users:
            changed.append(f"SMTP users: {len(new_users)} (added "
                           f"{len(new_users.keys() - old_users.keys())}, removed "
                           f"{len(old_users.keys() - new_users.keys())}, changed "
                           f"{sum(1 for u in new_users.keys() & old_users.keys() if new_users[u] != old_users[u])})")  # fmt: skip
        if before.keys() != after.keys() or any(before[e] != after[e] for e in after):
            changed.append(f"agents: {len(after)} active (added "
                           f"{', '.join(sorted(after.keys() - before.keys())) or 'none'}, "
                           f"deactivated {', '.join(sorted(before.keys() - after.keys())) or 'none'})")  # fmt: skip
        changed.append("templates and triage rules compiled again")
        if (fresh.log.level, fresh.log.format) != (old.log.level, old.log.format):
            changed.append(f"log {fresh.log.level} {fresh.log.format}")
        restart = [key for key in _differences(old, fresh)
                   if not key.startswith(RELOADED_KEYS)]  # fmt: skip
        if restart:
            log.warning("SIGHUP: changed, but takes effect only after a restart: %s",
                        ", ".join(restart))  # fmt: skip
        return changed

    def request_stop(self) -> None:
        """Ask a daemon running in another thread to stop (thread-safe)."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)

    async def shutdown(self) -> None:
        started = time.monotonic()

        def left(cap: float) -> float:
            return max(0.1, min(cap, STOP_BUDGET_SECONDS - (time.monotonic() - started)))

        log.info("stopping: 421 to new mail; finishing what is in hand")
        self.notifier.stopping("stopping: finishing messages in hand")
        self.handler.drain()
        drain_until = started + min(self.settings.smtp.drain_seconds, STOP_BUDGET_SECONDS - 3)
        while self.handler.in_data and time.monotonic() < drain_until:
            await asyncio.sleep(0.02)
        if self.handler.in_data:
            log.warning("stopping: %d message(s) still in DATA after %.1fs; they get no answer "
                        "and their senders retry", self.handler.in_data,
                        self.settings.smtp.drain_seconds)  # fmt: skip
        if self.server is not None:
            self.server.close()
        if self.web is not None:
            await asyncio.to_thread(self.web.stop, left(3.0))
        await asyncio.to_thread(self.imap.stop, left(3.0))
        # Commit everything already received, then stop the threads after
        # their current batch.
        await asyncio.to_thread(self.committer.stop, left(3.0))
        self.scheduler.shutdown(wait=False)
        worker_done, sender_done = await asyncio.gather(
            asyncio.to_thread(self.worker_loop.stop, left(4.0)),
            asyncio.to_thread(self.sender_loop.stop, left(4.0)),
        )
        if worker_done and sender_done:
            await asyncio.to_thread(self.membership.leave)
        else:  # a batch is still running: its rows are released by the next start or a peer
            log.warning("stopping: a batch did not finish in time; leaving it to be retried")
        self.parser.close()
        if self.http is not None:
            self.http.stop()
        if self.checkpointer is not None:
            self.checkpointer.stop()
        if self.reader is not self.engine:
            self.reader.dispose()
        self.engine.dispose()
        log.info("stopped in %.1fs", time.monotonic() - started)
