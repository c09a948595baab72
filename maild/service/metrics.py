"""Observability: Prometheus metrics and a health check (the official client).

Every metric of one daemon lives in its own `Metrics.registry` (tests run
several daemons in one process). Counters and histograms are fed by the
daemon as work happens; queue depths, quarantine size and SLA state are read
from the database when Prometheus scrapes (indexed counts, see
`DatabaseCollector`), so they are right whichever instance did the work.

Other parts register what they know:

- `Metrics.mailbox_polled(mailbox)`: an IMAP poller after each successful
  poll (``maild_imap_last_successful_poll_timestamp_seconds{mailbox}``).
- `Metrics.add_collector(collector)`: anything else (a prometheus_client
  ``Collector``, or a metric created with ``registry=metrics.registry``).

`serve_http()` answers ``GET /metrics`` (text exposition format) and
``GET /healthz`` (JSON; 200 when every check passes, 503 otherwise).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import generate_latest as _generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session, sessionmaker

from maild.clock import Clock
from maild.store.models import Inbound, Instance, Outbox, Ticket
from maild.store.states import FINISHED_STATUSES, InboundStatus, OutboxStatus

log = logging.getLogger(__name__)

# A ticket is "at risk" when its SLA target falls due within this window.
SLA_WARNING_WINDOW = timedelta(minutes=30)

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)


class Metrics:
    def __init__(self, sessions: sessionmaker[Session] | None, clock: Clock) -> None:
        self.clock = clock
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.inbound_received = Counter(
            "maild_inbound_received",
            "Messages offered to SMTP/LMTP intake, by source and result "
            "(stored, duplicate, tempfail, storage_full)",
            ["source", "result"],
            registry=r,
        )
        self.inbound_processed = Counter(
            "maild_inbound_processed",
            "Inbound messages processed, by source and outcome "
            "(new_ticket, appended, ignored, quarantined, failed, deferred)",
            ["source", "outcome"],
            registry=r,
        )
        self.processing_latency = Histogram(
            "maild_processing_latency_seconds",
            "From receipt (commit) of a message to the end of its processing",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.smtp_reply_latency = Histogram(
            "maild_smtp_data_reply_seconds",
            "From the end of DATA to the reply (the commit happens in between)",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.outbox = Counter(
            "maild_outbox",
            "Outgoing mail attempts by result (sent, retried, dead)",
            ["result"],
            registry=r,
        )
        self.imap_last_poll = Gauge(
            "maild_imap_last_successful_poll_timestamp_seconds",
            "Unix time of the last successful poll of each IMAP mailbox",
            ["mailbox"],
            registry=r,
        )
        self.smtp_connections = Gauge(
            "maild_smtp_connections", "SMTP/LMTP client connections open now", registry=r
        )
        self.reloads = Counter("maild_reloads", "SIGHUP reloads, by result", ["result"], registry=r)
        for result in ("sent", "retried", "dead"):
            self.outbox.labels(result)
        if sessions is not None:
            r.register(DatabaseCollector(sessions, clock))

    def mailbox_polled(self, mailbox: str, when: datetime | None = None) -> None:
        """Record a successful poll of an IMAP mailbox (for issue 3's poller)."""
        self.imap_last_poll.labels(mailbox).set((when or self.clock.now()).timestamp())

    def add_collector(self, collector: Collector) -> None:
        self.registry.register(collector)

    def generate(self) -> bytes:
        return _generate_latest(self.registry)


class DatabaseCollector(Collector):
    """Gauges read from the database at scrape time (all cheap, indexed counts)."""

    def __init__(self, sessions: sessionmaker[Session], clock: Clock) -> None:
        self.sessions = sessions
        self.clock = clock

    def describe(self) -> list[Any]:
        return []  # collected lazily: no database query at registration

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily("maild_database_up", "1 when the database answered this scrape")
        try:
            families = list(self._collect())
        except Exception as exc:
            log.warning("metrics: database not readable: %s: %s", type(exc).__name__, exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _collect(self) -> Iterator[GaugeMetricFamily]:
        now = self.clock.now()
        with self.sessions() as session:
            inbound = dict(
                session.execute(
                    select(Inbound.status, func.count())
                    .where(
                        Inbound.status.in_(
                            [
                                InboundStatus.PENDING,
                                InboundStatus.PROCESSING,
                                InboundStatus.QUARANTINED,
                            ]
                        )
                    )
                    .group_by(Inbound.status)
                ).all()
            )
            outbox = dict(
                session.execute(
                    select(Outbox.status, func.count())
                    .where(Outbox.status.in_([OutboxStatus.PENDING, OutboxStatus.DEAD]))
                    .group_by(Outbox.status)
                ).all()
            )
            open_tickets = Ticket.status.not_in(list(FINISHED_STATUSES))
            sla: dict[tuple[str, str], int] = {}
            for target, due, met in (
                ("first_response", Ticket.first_response_due, Ticket.first_response_at),
                ("resolution", Ticket.resolution_due, Ticket.resolved_at),
            ):
                base = and_(open_tickets, due.is_not(None), met.is_(None))
                sla[(target, "breached")] = session.scalar(
                    select(func.count()).select_from(Ticket).where(base, due < now)
                )
                sla[(target, "at_risk")] = session.scalar(
                    select(func.count())
                    .select_from(Ticket)
                    .where(base, due >= now, due < now + SLA_WARNING_WINDOW)
                )
            instances = session.scalar(select(func.count()).select_from(Instance))
        queue = GaugeMetricFamily(
            "maild_queue_depth", "Rows waiting in each queue", labels=["queue"]
        )
        queue.add_metric(["inbound_pending"], inbound.get(InboundStatus.PENDING, 0))
        queue.add_metric(["inbound_processing"], inbound.get(InboundStatus.PROCESSING, 0))
        queue.add_metric(["outbox_pending"], outbox.get(OutboxStatus.PENDING, 0))
        yield queue
        quarantine = GaugeMetricFamily(
            "maild_quarantine_messages", "Inbound messages set aside in quarantine"
        )
        quarantine.add_metric([], inbound.get(InboundStatus.QUARANTINED, 0))
        yield quarantine
        dead = GaugeMetricFamily("maild_outbox_dead_messages", "Outgoing mail given up on")
        dead.add_metric([], outbox.get(OutboxStatus.DEAD, 0))
        yield dead
        warn = GaugeMetricFamily(
            "maild_sla_tickets",
            "Open tickets whose SLA target is breached, or falls due within 30 minutes (at_risk)",
            labels=["target", "state"],
        )
        for (target, state), count in sla.items():
            warn.add_metric([target, state], count or 0)
        yield warn
        inst = GaugeMetricFamily("maild_instances", "Instances registered on this database")
        inst.add_metric([], instances or 0)
        yield inst


HealthCheck = Callable[[], Mapping[str, bool]]


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            try:
                body = self.server.metrics.generate()
            except Exception as exc:  # never take the daemon down for a scrape
                log.exception("metrics: scrape failed")
                self._reply(500, f"{type(exc).__name__}\n".encode(), "text/plain")
                return
            self._reply(200, body, CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            checks = dict(self.server.health())
            ok = all(checks.values())
            body = json.dumps({"status": "ok" if ok else "fail", "checks": checks}).encode()
            self._reply(200 if ok else 503, body + b"\n", "application/json")
        else:
            self._reply(404, b"not found: try /metrics or /healthz\n", "text/plain")

    def _reply(self, code: int, body: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http: " + format, *args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], metrics: Metrics, health: HealthCheck) -> None:
        self.metrics = metrics
        self.health = health
        super().__init__(address, _Handler)


class HttpServer:
    """``/metrics`` and ``/healthz`` on a thread of their own."""

    def __init__(self, host: str, port: int, metrics: Metrics, health: HealthCheck) -> None:
        self._server = _Server((host, port), metrics, health)
        self._thread = threading.Thread(target=self._server.serve_forever, name="http", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
